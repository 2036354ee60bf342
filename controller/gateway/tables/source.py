"""Where the gateway's endpoint table comes from: set in-process, or followed from the controller.

The gateway holds no Docker socket; it only needs the table of ready replicas. ``StaticTable`` serves a
table someone sets (the controller in the same process, or a test). ``ControllerTable`` long-polls the
controller's ``GET /v1/endpoints?epoch=<epoch>&after=<version>&wait=<s>`` and, when the controller is
down or answers garbage, keeps serving the last good table: a control-plane outage must not take the
data plane down. A table of another epoch (the controller restarted) replaces ours whatever its
version: a restarted controller counts versions from 1 again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import aiohttp

from controller.endpoints.table import EndpointTable

log = logging.getLogger(__name__)


class TableSource(Protocol):
    """Anything that can hand the gateway the current endpoint table, without blocking."""

    def current(self) -> EndpointTable: ...


class StaticTable:
    """A table held in memory and replaced with ``set``; for in-process use and tests."""

    def __init__(self, table: EndpointTable | None = None) -> None:
        self._table = table if table is not None else EndpointTable()

    def current(self) -> EndpointTable:
        return self._table

    def set(self, table: EndpointTable) -> None:
        self._table = table


class ControllerError(Exception):
    """The controller answered, but not with a usable table (bad status or malformed document)."""


# What one poll may fail with; anything else is a bug and propagates out of ``run``.
_POLL_ERRORS = (
    aiohttp.ClientError,
    TimeoutError,
    ControllerError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
)


class ControllerTable:
    """The controller's endpoint table, followed by long-polling; the last good one while it is away.

    ``current()`` is the empty table (version 0) until the first answer; ``wait_first`` awaits it.
    ``run()`` polls until cancelled and never raises for network or format errors: it logs one warning
    per outage (not per retry) and retries with exponential backoff capped at ``backoff_max_s``.
    The ``session`` belongs to the caller, who closes it.
    """

    def __init__(
        self,
        controller_url: str,
        session: aiohttp.ClientSession,
        *,
        wait_s: float = 30.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
    ) -> None:
        self._url = controller_url.rstrip("/") + "/v1/endpoints"
        self._session = session
        self._wait_s = wait_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._table = EndpointTable()
        self._received = asyncio.Event()
        self._failures = 0

    def current(self) -> EndpointTable:
        return self._table

    @property
    def received(self) -> bool:
        """True once a table has come from the controller."""
        return self._received.is_set()

    @property
    def consecutive_failures(self) -> int:
        """Polls failed since the last good answer (0 while the controller answers)."""
        return self._failures

    async def wait_first(self, timeout_s: float) -> bool:
        """Return True once the first table has arrived, False if ``timeout_s`` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._received.wait()
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Follow the controller until cancelled; errors are logged and retried here."""
        delay = self._backoff_initial_s
        while True:
            try:
                table = await self._poll()
            except _POLL_ERRORS as exc:
                self._on_failure(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max_s)
                continue
            self._on_success(table)
            delay = self._backoff_initial_s

    async def _poll(self) -> EndpointTable:
        """One long poll; return the table the controller sent, raise on any failure."""
        params = {"wait": f"{self._wait_s:g}"}
        if self.received:
            params["after"] = str(self._table.version)
            params["epoch"] = self._table.epoch
        # The controller may hold the answer for wait_s; allow it that plus some slack.
        timeout = aiohttp.ClientTimeout(total=self._wait_s + 10.0)
        async with self._session.get(self._url, params=params, timeout=timeout) as resp:
            if resp.status == 401:  # the controller's API wants keys (MODELCTL_CONTROLLER_KEYS_FILE)
                raise ControllerError(
                    f"HTTP 401 from {self._url}: set MODELCTL_CONTROLLER_KEY to one of its keys"
                )
            if resp.status != 200:
                raise ControllerError(f"HTTP {resp.status} from {self._url}")
            data = await resp.json(content_type=None)
        if not isinstance(data, dict):
            raise ControllerError(f"{self._url} answered a JSON {type(data).__name__}, not an object")
        return EndpointTable.from_json(data)

    def _on_success(self, table: EndpointTable) -> None:
        if self._failures:
            log.info("controller at %s answers again after %d failed polls", self._url, self._failures)
            self._failures = 0
        if not self.received or not table.same_as(self._table.epoch, self._table.version):
            # Any other version replaces ours, and any other epoch: a restarted controller (a new
            # epoch) counts from 1 again, so its version may equal ours with other content.
            restarted = self.received and table.epoch != self._table.epoch
            self._table = table
            ready = sum(len(m.replicas) for m in table.models)
            log.info(
                "endpoint table version %d%s: %d models, %d ready replicas",
                table.version,
                f" of a new controller epoch {table.epoch}" if restarted else "",
                len(table.models),
                ready,
            )
        self._received.set()

    def _on_failure(self, exc: BaseException) -> None:
        if self._failures == 0:
            log.warning(
                "controller at %s unavailable (%s: %s); serving the last table (version %d) "
                "and retrying with backoff up to %gs",
                self._url,
                type(exc).__name__,
                exc,
                self._table.version,
                self._backoff_max_s,
            )
        self._failures += 1
