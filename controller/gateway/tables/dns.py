"""The endpoint table from DNS: each model's replicas are the addresses its service name resolves to.

On Kubernetes there is no modelctl controller: a headless Service's name has one A record per *ready*
pod, so resolving it is the table of ready replicas (with no API token). The same works on a Docker
network where replicas share one network alias. DNS knows only addresses, so what else the gateway
needs per model (names, aliases, balancing, max_concurrency, load timeout, the service name and
port) comes from a JSON file (``modelctl render kubernetes`` puts it in a ConfigMap)::

    {"models": [{"name": "smollm2", "aliases": ["smollm2-135m"], "balancing": "least-outstanding",
                 "load_timeout_s": 120.0, "max_concurrency": 2, "service": "smollm2", "port": 8080,
                 "engine": "llamacpp", "adapters": ["smollm2-sea"], "vision": false}]}

``engine``, ``adapters`` and ``vision`` are optional (as in the endpoint table): without them a model
has no adapters to route to and its images are not checked for vision.

``DnsTable`` resolves every model's service every ``interval_s`` with the event loop's getaddrinfo,
one task per model. A name that does not exist (NXDOMAIN: a headless Service with no ready pod, or
an alias no container holds) means no replica; any other failure (the resolver is unreachable, a
timeout) keeps the model's last good set, logged once per distinct error. The file is read again
when it changes (a ConfigMap update), keeping the last good one if the new one is invalid.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica, known_task

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]  # (host, port) -> addresses
# getaddrinfo errors that say "this name has no address" (an answer, not a failure to get one).
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


class ModelsFileError(ValueError):
    """The models file cannot be read or is not the documented JSON."""


@dataclass(frozen=True, slots=True)
class ServiceModel:
    """A model as the DNS source knows it: its table entry (no replicas) and where to resolve it."""

    endpoints: ModelEndpoints
    service: str
    port: int
    max_concurrency: int


def parse_models(data: Any) -> tuple[ServiceModel, ...]:
    """The models of a parsed models document; raises ModelsFileError naming the problem."""
    try:
        return tuple(
            ServiceModel(
                ModelEndpoints(
                    name=str(m["name"]),
                    aliases=tuple(str(a) for a in m.get("aliases", ())),
                    balancing=str(m.get("balancing", "least-outstanding")),
                    load_timeout_s=None if m.get("load_timeout_s") is None else float(m["load_timeout_s"]),
                    engine=str(m.get("engine", "")),
                    adapters=tuple(str(a) for a in m.get("adapters") or ()),
                    vision=_vision(m.get("vision")),
                    task=known_task(m.get("task", "generate")),
                ),
                service=str(m["service"]),
                port=int(m["port"]),
                max_concurrency=int(m.get("max_concurrency", 1)),
            )
            for m in data["models"]
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelsFileError(f"not a models document ({type(exc).__name__}: {exc})") from exc


def _vision(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"vision must be true, false or null, not {value!r}")


def load_models(path: Path) -> tuple[ServiceModel, ...]:
    """Read the models file; raises ModelsFileError."""
    try:
        return parse_models(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelsFileError(f"{path}: {exc}") from exc


async def getaddrinfo(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (the event loop's getaddrinfo), sorted."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def url(address: str, port: int) -> str:
    host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    return f"http://{host}:{port}"


class DnsTable:
    """A TableSource whose replicas are the addresses of each model's service name.

    ``current()`` is the empty table (version 0) until every model has been resolved once (or
    failed to be); ``run()`` resolves until cancelled and never raises for DNS or file errors.
    """

    def __init__(
        self, models_file: Path, *, interval_s: float = 1.0, resolver: Resolver = getaddrinfo
    ) -> None:
        self._file = models_file
        self._interval_s = interval_s
        self._resolve = resolver
        self._models: tuple[ServiceModel, ...] = ()
        self._file_stamp: tuple[int, int] | None = None
        self._file_error: str | None = None
        self._loaded = False
        self._addresses: dict[str, tuple[str, ...]] = {}  # model name -> last good addresses
        self._errors: dict[str, str] = {}  # model name -> the last error logged
        self._table = EndpointTable()

    def current(self) -> EndpointTable:
        return self._table

    async def run(self) -> None:
        """Resolve every model every ``interval_s`` until cancelled."""
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                self._reload()
                wanted = {m.endpoints.name: m for m in self._models}
                for name in set(tasks) - set(wanted):
                    tasks.pop(name).cancel()
                for name, model in wanted.items():
                    if name not in tasks or tasks[name].done():
                        tasks[name] = asyncio.create_task(self._follow(model), name=f"gateway-dns-{name}")
                await asyncio.sleep(self._interval_s)
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    async def _follow(self, model: ServiceModel) -> None:
        while True:
            await self.resolve_once(model)
            await asyncio.sleep(self._interval_s)

    async def resolve_once(self, model: ServiceModel) -> None:
        """Resolve one model and publish a new table if its replicas changed."""
        name = model.endpoints.name
        try:
            # Sorted: DNS servers rotate the order of A records, which is no change of replicas.
            addresses: tuple[str, ...] = tuple(sorted(set(await self._resolve(model.service, model.port))))
        except socket.gaierror as exc:
            if exc.errno not in _NO_SUCH_NAME:
                self._failed(model, exc)
                return
            addresses = ()  # no such name: nothing ready behind it
        except (OSError, TimeoutError) as exc:
            self._failed(model, exc)
            return
        if name in self._errors:
            log.info("DNS: %s resolves again (%d addresses)", model.service, len(addresses))
            del self._errors[name]
        if self._addresses.get(name) != addresses:
            self._addresses[name] = addresses
            self._publish()

    def _failed(self, model: ServiceModel, exc: BaseException) -> None:
        name = model.endpoints.name
        text = f"{type(exc).__name__}: {exc}"
        if self._errors.get(name) != text:
            self._errors[name] = text
            kept = len(self._addresses.get(name, ()))
            log.warning(
                "DNS: cannot resolve %s (%s); keeping its last %d replicas", model.service, text, kept
            )
        if name not in self._addresses:
            self._addresses[name] = ()  # resolved once, if only to nothing: the table may start
            self._publish()

    def _reload(self) -> None:
        """Read the models file when it changed; keep the last good models if it is bad."""
        try:
            st = self._file.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None  # read it anyway: the error names the problem
        if stamp is not None and stamp == self._file_stamp:
            return
        self._file_stamp = stamp
        try:
            models = load_models(self._file)
        except ModelsFileError as exc:
            if self._file_error != str(exc):
                self._file_error = str(exc)
                kept = len(self._models)
                log.warning("models file: %s; keeping the last good models (%d)", exc, kept)
            return
        self._file_error = None
        if models != self._models or not self._loaded:
            log.info("models file %s: %d models", self._file, len(models))
            self._models, self._loaded = models, True
            names = {m.endpoints.name for m in models}
            self._addresses = {k: v for k, v in self._addresses.items() if k in names}
            self._publish()

    def _publish(self) -> None:
        if not self._loaded or any(m.endpoints.name not in self._addresses for m in self._models):
            return  # the first table waits until every model was looked up once
        entries = tuple(
            replace(
                m.endpoints,
                replicas=tuple(
                    Replica(
                        id=f"{m.endpoints.name}@{a}", url=url(a, m.port), max_concurrency=m.max_concurrency
                    )
                    for a in self._addresses[m.endpoints.name]
                ),
            )
            for m in self._models
        )
        if entries != self._table.models:
            self._table = EndpointTable(version=self._table.version + 1, models=entries)
            ready = sum(len(e.replicas) for e in entries)
            log.info(
                "endpoint table version %d from DNS: %d models, %d replicas",
                self._table.version,
                len(entries),
                ready,
            )
