"""`modelctl down`: remove every container modelctl started (of one instance, or all), and the
networks left unused; nothing else."""

from __future__ import annotations

import argparse
import os


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    down = sub.add_parser("down", help="remove every container modelctl started")
    down.add_argument("--instance", help="only this controller instance's containers")
    down.set_defaults(func=cmd_down)


def cmd_down(args: argparse.Namespace) -> int:
    from controller.runtime.docker import connect, remove_all, remove_unused_networks

    client = connect(os.environ.get("DOCKER_HOST"))
    removed = remove_all(client, args.instance)
    for name in removed:
        print(f"removed {name}")
    print(f"{len(removed)} container(s) removed")
    for name in remove_unused_networks(client):
        print(f"removed network {name}")
    return 0
