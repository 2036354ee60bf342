"""The gateway's worker processes hand each other their metrics, so any one answers /metrics for all.

With ``workers`` > 1 a scrape lands on one random process. Each worker listens on a unix socket named
after its pid in a private folder the parent made (``GatewaySettings.workers_dir``, mode 0700); a
connection gets that worker's figures (``GatewayMetrics.snapshot``) as one JSON document, then EOF.
The worker that answers a scrape connects to all the others at once and merges their figures into
its own, so they are as fresh as the scrape: nothing runs on the request path or between scrapes.

A worker that does not answer within ``timeout_s`` (its loop is stuck) counts with the figures it gave
last, so the gateway's counters never go backwards; one whose socket refuses (the process is gone, a
moment before the gateway ends for it) is left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from controller.gateway.telemetry.metrics import Snapshot

log = logging.getLogger(__name__)

# A worker's loop answers in microseconds; a second means it is stuck (then: its last figures).
PEER_TIMEOUT_S = 1.0


class Peers:
    """This worker's socket in the shared folder, and its questions to the other workers' sockets."""

    def __init__(
        self,
        directory: Path,
        snapshot: Callable[[], Snapshot],
        *,
        name: str | None = None,
        timeout_s: float = PEER_TIMEOUT_S,
    ) -> None:
        self._directory = directory
        self._snapshot = snapshot
        self.name = name or str(os.getpid())  # tests run several in one process, named
        self._timeout_s = timeout_s
        self._last: dict[str, Snapshot] = {}  # each peer's latest answer, for when it is stuck

    async def serving(self, _: Any = None) -> AsyncIterator[None]:
        """Answer the other workers while the app runs (an aiohttp ``cleanup_ctx`` entry).

        Raises OSError if the socket cannot be made (the folder is gone or not writable).
        """
        path = self._directory / self.name
        server = await asyncio.start_unix_server(self._answer, path=str(path))
        try:
            yield
        finally:
            server.close()
            await server.wait_closed()
            path.unlink(missing_ok=True)

    async def snapshots(self) -> list[Snapshot]:
        """Return the other workers' figures, asked now (stuck ones: their last; gone ones: none)."""
        names = [entry.name for entry in os.scandir(self._directory) if entry.name != self.name]
        answers = await asyncio.gather(*(self._ask(name) for name in names))
        return [answer for answer in answers if answer is not None]

    async def _ask(self, name: str) -> Snapshot | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                reader, writer = await asyncio.open_unix_connection(str(self._directory / name))
                try:
                    data = await reader.read()
                finally:
                    writer.close()
            snapshot: Snapshot = json.loads(data)
        except (ConnectionRefusedError, FileNotFoundError):
            self._last.pop(name, None)
            return None
        except (OSError, TimeoutError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning(
                "gateway worker %s did not give its metrics (%s); counting its last ones", name, reason
            )
            return self._last.get(name)
        self._last[name] = snapshot
        return snapshot

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(json.dumps(self._snapshot()).encode())
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
