"""Readiness probes: a replica gets traffic only once its engine answers its health path with 200.

Both engines answer ``GET /health`` (never ``/v1/models``, which llama.cpp serves before the model is
loaded). A probe that times out, is refused or answers anything else means "not ready".
"""

from __future__ import annotations

from typing import Protocol

import aiohttp

PROBE_TIMEOUT_S = 2.0  # a loaded engine answers /health in milliseconds; longer means busy or stuck


class Prober(Protocol):
    async def ready(self, url: str) -> bool: ...

    async def fetch(self, url: str) -> str | None: ...


class HttpProber:
    """Probes over one shared aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def ready(self, url: str) -> bool:
        """True when ``url`` answers 200 within the timeout; never raises for network trouble."""
        try:
            async with self.session.get(url, timeout=self.timeout) as response:
                return response.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def fetch(self, url: str) -> str | None:
        """The body of a 200 answer from ``url``, or None (timeout, refused, other status)."""
        try:
            async with self.session.get(url, timeout=self.timeout) as response:
                return await response.text() if response.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None
