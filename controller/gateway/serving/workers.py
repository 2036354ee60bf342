"""Several gateway processes on one port (SO_REUSEPORT), for hosts where one core is not enough.

One Python process proxies on one core. With ``workers`` = N the parent serves as worker 0 and spawns
N-1 children that bind the same port with SO_REUSEPORT; the kernel spreads new connections over them.
Each process follows the controller itself and keeps its own balancer, queues and metrics, so
``max_concurrency`` is enforced per process (N processes may send a replica up to N x its batch size).
A scrape of /metrics lands on one process, which asks the others for their figures over unix sockets
in a private temporary folder (``peers.py``) and answers for the whole gateway, as fresh as the
scrape. A child that dies ends the gateway (GatewayWorkersFailed), so the supervisor (compose, systemd)
restarts it whole rather than serving with fewer workers unnoticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from controller.errors import GatewayWorkersFailed
from controller.gateway.serving.process import loop_factory
from controller.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

Serve = Callable[..., Coroutine[Any, Any, None]]

# How long a child gets to stop after SIGTERM before SIGKILL; how often the parent looks at them.
_STOP_GRACE_S = 5.0
_WATCH_S = 0.5


async def run_workers(settings: GatewaySettings, serve: Serve) -> None:
    """Serve with ``settings.workers`` processes until cancelled.

    Raises GatewayWorkersFailed if one dies, or if there is no writable temporary folder (TMPDIR,
    /tmp) for the workers' metrics sockets.
    """
    try:
        folder = tempfile.TemporaryDirectory(prefix="modelctl-gateway-")  # mode 0700: ours alone
    except OSError as exc:
        raise GatewayWorkersFailed(
            f"gateway workers need a writable temporary folder for their metrics sockets: {exc} "
            "(set TMPDIR, or mount a tmpfs on /tmp)"
        ) from exc
    with folder:
        await _run_workers(replace(settings, workers_dir=Path(folder.name)), serve)


async def _run_workers(settings: GatewaySettings, serve: Serve) -> None:
    context = multiprocessing.get_context("spawn")  # no fork of a running event loop
    children = [
        context.Process(target=_child_main, args=(settings, serve), name=f"modelctl-gateway-{i}", daemon=True)
        for i in range(1, settings.workers)
    ]
    for child in children:
        child.start()
    parent = asyncio.create_task(serve(settings, reuse_port=True))
    try:
        while not parent.done():
            dead = [c for c in children if not c.is_alive()]
            if dead:
                raise GatewayWorkersFailed(
                    f"gateway worker {dead[0].name} exited with status {dead[0].exitcode}; the gateway "
                    "stops so that its supervisor restarts it whole"
                )
            await asyncio.wait([parent], timeout=_WATCH_S)
        await parent  # it only ends by raising (the port could not be bound)
    finally:
        parent.cancel()
        await asyncio.wait([parent])
        await asyncio.to_thread(_stop, children)


def _stop(children: Sequence[BaseProcess]) -> None:
    for child in children:
        if child.is_alive():
            child.terminate()
    for child in children:
        child.join(_STOP_GRACE_S)
        if child.is_alive():
            log.warning("gateway worker %s ignored SIGTERM; killing it", child.name)
            child.kill()
            child.join(_STOP_GRACE_S)


def _child_main(settings: GatewaySettings, serve: Serve) -> None:
    """A worker process: serve until SIGTERM or SIGINT (the parent's Ctrl-C reaches it too).

    ``serve`` reaches the child pickled by its qualified name, so this module never imports it."""
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_child(replace(settings, workers=1), serve))


async def _child(settings: GatewaySettings, serve: Serve) -> None:
    task = asyncio.create_task(serve(settings, reuse_port=True, announce=False))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
