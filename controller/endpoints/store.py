"""The controller's copy of the endpoint table, versioned, with a long poll for the gateway.

The reconciler publishes after every pass; the version only grows when the content changed, so the
gateway's long poll (``wait_newer``) wakes exactly when routing must change. Each store draws a
random epoch (one per controller start): a gateway that still holds a table of a previous run gets
the new run's table at once, whatever its version.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from controller.endpoints.table import EndpointTable, ModelEndpoints


class EndpointStore:
    """Holds the current EndpointTable; also serves as an in-process TableSource for the gateway."""

    def __init__(self, *, epoch: str | None = None) -> None:
        self.epoch = secrets.token_hex(8) if epoch is None else epoch
        self._table = EndpointTable(epoch=self.epoch)
        self._changed = asyncio.Condition()
        # False until the first reconcile pass has published: a restarted controller must not hand
        # the gateway an empty table while it is still discovering the running replicas.
        self.published = False
        self._closing = False

    def current(self) -> EndpointTable:
        return self._table

    async def publish(self, models: tuple[ModelEndpoints, ...]) -> bool:
        """Replace the table's models; returns True (and bumps the version) if they changed."""
        first, self.published = not self.published, True
        if models == self._table.models and not first:
            return False
        async with self._changed:
            self._table = EndpointTable(version=self._table.version + 1, models=models, epoch=self.epoch)
            self._changed.notify_all()
        return True

    async def wait_newer(self, after: int, timeout: float, *, epoch: str | None = None) -> EndpointTable:
        """The table once it is not the one the client holds (version ``after`` of ``epoch``; an
        epoch other than this store's, at once), or the current one after ``timeout``. ``epoch``
        None (a client that sends none): the version alone is compared."""
        held = self.epoch if epoch is None else epoch
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._closing or not self._table.same_as(held, after)),
                    timeout,
                )
        return self._table

    async def close(self) -> None:
        """Answer every waiting long poll now (shutdown must not wait out their timeouts)."""
        async with self._changed:
            self._closing = True
            self._changed.notify_all()
