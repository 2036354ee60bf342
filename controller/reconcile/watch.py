"""Wake-ups for the reconcile loop: a manifest file changed, or Docker reported a container event.

Neither carries state into the loop (the loop is level-based and re-reads everything); they only
make the next pass come now instead of at the end of the interval.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from controller.errors import ModelctlError
from controller.runtime.docker import DockerRuntime

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(path: Path) -> Fingerprint:
    """(name, mtime_ns, size) of the manifest files under ``path``: changes when any file does."""
    files = [path] if path.is_file() else sorted(path.glob("*")) if path.is_dir() else []
    out = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        out.append((file.name, stat.st_mtime_ns, stat.st_size))
    return tuple(out)


async def watch_manifests(path: Path, wake: Callable[[], None], *, poll_s: float = 1.0) -> None:
    """Call ``wake`` whenever the manifests under ``path`` change; runs until cancelled.

    Polling (not inotify): it works the same on bind mounts, network filesystems and `git pull`.
    """
    last = await asyncio.to_thread(fingerprint, path)
    while True:
        await asyncio.sleep(poll_s)
        current = await asyncio.to_thread(fingerprint, path)
        if current != last:
            log.info("manifests changed under %s", path)
            last = current
            wake()


async def watch_docker_events(runtime: DockerRuntime, wake: Callable[[], None]) -> None:
    """Call ``wake`` on every event of this instance's containers; runs until cancelled.

    The event stream is blocking, so it is read in a thread; cancelling closes the stream.
    When the engine goes away the stream is reopened after a pause.
    """
    loop = asyncio.get_running_loop()

    def on_event() -> None:
        loop.call_soon_threadsafe(wake)

    while True:
        stop = threading.Event()
        try:
            await asyncio.to_thread(runtime.follow_events, on_event, stop)
        except ModelctlError as exc:
            log.debug("docker events unavailable (%s); retrying", exc)
        except asyncio.CancelledError:
            stop.set()
            raise
        await asyncio.sleep(2.0)
