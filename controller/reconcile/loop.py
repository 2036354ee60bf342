"""The reconciler: a level-based loop that makes Docker match the manifests, and publishes which
replicas are ready.

Each pass reads, decides, executes, and publishes. It reads the manifests (keeping the last good
set if they became invalid; a controller started on invalid ones changes nothing until they load,
``hold_untouched``), lists the managed containers by label, probes health, and replaces
crashed or stuck containers (with backoff, the reason read from their logs; each failed container
counted once, however many passes its removal takes). Then it decides, in one pure function over a
snapshot of all that (``decide.decide``: scaling, placement with room made by eviction, the plan),
and executes the decision: drains and removes what goes, tells the scaler what it applied,
publishes the ready replicas to the endpoint store, creates what is missing. Last it publishes its
``report.Report`` (status rows, scaling, events, what it read), which is all the API, console and
metrics read of it. It trusts what Docker reports over its memory, so a restarted controller adopts
what is running. Docker events and manifest edits only make the next pass come sooner (``wake``).

Replicas the Docker engine stopped while it shut down are not crashes: the loop notes when the
engine went away (a pass or a removal found it unreachable) and came back (a whole pass worked),
and a replica whose FinishedAt falls in that outage is started again without backoff, its reason
saying so (``failures.stopped_by_engine``).

No exception ends the loop (``run``): modelctl's own errors (Docker away, ...) are logged once per
distinct error and the next pass comes soon, as always; anything else is counted by the stage it
came from (``Stage``; ``modelctl_reconcile_errors_total``), logged once with its traceback, and the
next pass runs after a backoff that doubles from ``busy_interval_s`` to 30 s while it repeats. A
replica whose create or removal raises something unexpected is backed off alone; the others go on.
Liveness (``liveness``, ``supervise.Heartbeat``) counts completed passes; a pass that ends in one of
modelctl's own errors completed too: the loop knows what is wrong and says so, a fresh process would
know no more (and would lose the engine-outage record above). A pass awaits list, inspect, NVML,
probes (2 s each) and one create or removal per replica that changes: each is one bounded Docker
call, but a pass creating many replicas is long, so each create and removal counts as progress.
Loading a model is not awaited: a started engine is watched by ``readiness``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from controller.endpoints.demand import DemandReport
from controller.endpoints.store import EndpointStore
from controller.endpoints.table import ModelEndpoints, Replica
from controller.engines.progress import progress
from controller.errors import BackendRuntimeError, InvalidManifests, ModelctlError, RuntimeUnavailable
from controller.gpus.inventory import Inventory
from controller.gpus.nvml import read_inventory
from controller.hub.pull import Puller
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.reconcile.controls import Controls
from controller.reconcile.decide import Snapshot, decide
from controller.reconcile.desired import Slot
from controller.reconcile.drain import Drainer
from controller.reconcile.events import EventLog
from controller.reconcile.failures import explain, known_failure, stopped_by_engine
from controller.reconcile.health import Prober
from controller.reconcile.lifecycle import Lifecycle, LifecycleSettings
from controller.reconcile.ondemand import OnDemand
from controller.reconcile.pulls import Pulls
from controller.reconcile.readiness import ReadinessWatch
from controller.reconcile.report import ReportStore
from controller.reconcile.states import ReplicaState, unexpected
from controller.reconcile.status import ReplicaStatus, statuses
from controller.reconcile.supervise import Backoff, Failures, Heartbeat, Liveness, default_liveness_s
from controller.runtime.docker import DockerRuntime
from controller.runtime.observed import ObservedContainer
from controller.runtime.spec import ContainerSpec
from controller.weights.describe import describe, takes_images

log = logging.getLogger(__name__)

TASK = "reconciler"  # the loop's name in Failures (the errors' task label) and as an asyncio task


class Stage(StrEnum):
    """Where a pass is: the label of its unexpected errors, and what /healthz names."""

    IDLE = ""  # between passes
    MANIFESTS = "manifests"
    CONTAINERS = "containers"  # listing them (and their GPU processes)
    INVENTORY = "inventory"  # NVML
    DESIRE = "desire"  # the snapshot and the decision: scaling, placement, plan
    PROBE = "probe"
    REPLACE = "replace"  # crashed and stuck replicas
    PLAN = "plan"  # acting on the decision: drains, the scaler told
    PUBLISH = "publish"
    CREATE = "create"
    REMOVE = "remove"
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class Seen:
    """What a pass read at its start: the managed containers, the GPUs, our GPU processes by slot."""

    observed: list[ObservedContainer]
    inventory: Inventory
    pids: Mapping[Slot, frozenset[int]]


class Reconciler:
    """Owns the control loop; nothing else changes containers, so it needs no locks."""

    def __init__(
        self,
        *,
        runtime: DockerRuntime,
        load_models: Callable[[], list[LoadedModel]],
        store: EndpointStore,
        prober: Prober,
        drainer: Drainer,
        interval_s: float = 5.0,
        busy_interval_s: float = 0.5,
        lifecycle: LifecycleSettings | None = None,
        read_inventory: Callable[[], Inventory] = read_inventory,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_demand: OnDemand | None = None,
        failures: Failures | None = None,
        liveness_s: float | None = None,
        puller: Puller | None = None,
    ) -> None:
        self.runtime = runtime
        self.load_models = load_models
        self.store = store
        self.prober = prober
        self.drainer = drainer
        self.interval_s = interval_s  # between passes when everything is settled
        self.busy_interval_s = busy_interval_s  # while replicas start: readiness is noticed fast
        self.clock = clock  # backoff and health timing
        self.wall_clock = wall_clock  # engine outages, compared with Docker's FinishedAt
        self.lifecycle = Lifecycle(lifecycle, watched_from=wall_clock())
        self.read_inventory = read_inventory  # NVML, or a fixed inventory in tests
        self.models: list[LoadedModel] = []  # the last valid manifests
        self.loaded = False  # the manifests loaded once: until then a pass changes nothing
        self.manifest_errors: list[str] = []
        self.on_demand = on_demand or OnDemand()  # counts from the gateway's demand; eviction
        self.wake = asyncio.Event()
        self.failures = failures or Failures()  # unexpected errors, the loop's and its tasks'
        self.readiness = ReadinessWatch(prober, self.wake.set, failures=self.failures)  # starting ones
        self.events = EventLog(clock=wall_clock)  # what happened to which replica, for /v1/events
        self.pass_logs: dict[str, str] = {}  # container ID -> its log tail, read once per pass
        self.backoff = Backoff(busy_interval_s)  # while passes keep failing unexpectedly
        self.heartbeat = Heartbeat(liveness_s or default_liveness_s(interval_s), clock)
        self.reports = ReportStore(self.heartbeat)  # what readers read: published, never exposed
        self.last_error = ""  # the last ModelctlError a pass ended in, logged once
        # Hub weights pulled before their replicas start (None: left to the engines).
        self.pulls = Pulls(puller, wake=self.wake.set, failures=self.failures, events=self.events)

    @property
    def stage(self) -> str:
        """Where the pass in progress is (``Stage``); the heartbeat holds it for ``/healthz``."""
        return self.heartbeat.stage

    @stage.setter
    def stage(self, stage: Stage) -> None:
        self.heartbeat.stage = stage

    def controls(self) -> Controls:
        """The commands the API and console may give the loop (``controls.Controls``)."""
        board = self.on_demand.demand
        return Controls(
            report_demand=lambda report: self.report_demand(report),
            demand_clock=board.clock,
            demand_stale_after_s=board.stale_after_s,
            load_models=self.load_models,
            read_snapshot=self.read_snapshot,
            replicas=self.runtime,
        )

    async def run(self) -> None:
        """Reconcile until cancelled; no exception ends it (the module's docstring says how each
        is met)."""
        try:
            while True:
                delay, wakeable = await self.turn()
                if wakeable:
                    await self.sleep(delay)
                else:  # events would make a repeating error repeat as often as they come
                    await asyncio.sleep(delay)
        finally:
            await self.readiness.close()

    async def turn(self) -> tuple[float, bool]:
        """One pass and what it ended in; returns how long to wait before the next one, and
        whether an event may cut that wait short."""
        try:
            settled = await self.reconcile_once()
        except ModelctlError as exc:
            self.pass_failed(exc, repeated=str(exc) == self.last_error)
            self.last_error = str(exc)
            self.heartbeat.completed()
            self.publish()
            return self.busy_interval_s, True
        except Exception as exc:  # CancelledError is not one: cancelling still stops the loop
            delay = self.pass_broke(exc)
            self.publish()
            return delay, False
        finally:
            self.stage = Stage.IDLE
        self.last_error = ""
        self.passed()
        return self.interval_s if settled else self.busy_interval_s, True

    def passed(self) -> None:
        """A pass completed: the loop is healthy again."""
        self.heartbeat.completed()
        self.backoff.reset()
        self.failures.recovered(TASK)

    def pass_broke(self, exc: Exception) -> float:
        """An unexpected error ended a pass: counted by stage, logged once; returns the backoff."""
        delay = self.backoff.next()
        self.heartbeat.broke(exc)
        self.failures.record(TASK, exc, stage=self.stage, then=f"next pass in {delay:g}s")
        return delay

    def pass_failed(self, exc: ModelctlError, *, repeated: bool) -> None:
        """Note a failed pass: an unreachable engine starts an outage; a new error is logged."""
        if isinstance(exc, RuntimeUnavailable):
            self.lifecycle.engine.lost(self.wall_clock())
        if not repeated:
            log.warning("reconcile pass failed, retrying: %s", exc)

    def liveness(self) -> Liveness:
        """Whether passes complete (what ``reports.liveness`` answers)."""
        return self.reports.liveness()

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)
        self.wake.clear()

    async def reconcile_once(self) -> bool:
        """One pass. Returns True when every desired replica is ready and nothing is changing."""
        self.stage = Stage.MANIFESTS
        self.apply_models(await asyncio.to_thread(self.read_models))
        if not self.loaded:
            await self.hold_untouched()
            return True
        started = self.wall_clock()
        self.pass_logs = {}
        seen = await asyncio.to_thread(self.read_seen)
        listed = {c.id for c in seen.observed}  # those whose removal fails stay remembered
        self.events.forget(listed)  # drained ones that are gone say so
        self.stage = Stage.PROBE
        ready = await self.probe(seen.observed)
        self.events.ready(seen.observed, ready)
        self.readiness.watch(c for c in seen.observed if c.running and c.id not in ready)
        self.stage = Stage.REPLACE
        kept = await self.replace_failed(seen.observed, ready)
        self.stage = Stage.DESIRE
        snapshot = await self.snapshot(seen, frozenset(ready), gone=frozenset(listed - {c.id for c in kept}))
        decision = await asyncio.to_thread(decide, snapshot)
        self.stage = Stage.PLAN
        plan, desired = decision.plan, decision.desired
        self.events.deleting(
            plan.delete,
            kept=plan.remain,
            specs=desired.specs,
            ready=ready,
            models={m.name for m in self.models},
            scaling={name: m.reason for name, m in decision.scaling.items()},
        )
        for container in plan.delete:
            self.drainer.start(container, wake=self.wake.set)
        self.on_demand.applied(decision.scaling, decision.evictions)
        self.stage = Stage.PUBLISH
        loading = self.pulls.loading(self.models)
        await self.store.publish(endpoint_table(self.models, list(decision.serving), loading))
        self.stage = Stage.CREATE
        created = await self.create(self.pulls.gate(decision.starts, self.models, self.start_failed))
        self.stage = Stage.STATUS
        self.lifecycle.forget(listed)
        self.lifecycle.engine.answered(started)
        draining = self.drainer.draining_ids()
        rows = statuses(desired.pending, desired.specs, plan, ready, self.lifecycle, draining)
        rows = self.pulls.rows(await self.with_progress(rows, plan.remain), self.models)
        self.events.pending(rows)
        for problem in unexpected(self.reports.current().replicas, rows):
            log.warning("%s", problem)
        self.publish(replicas=tuple(rows), notes=decision.notes, snapshot=snapshot, completed=True)
        changing = plan.changes or created or plan.waiting or self.pulls.busy
        return not changing and len(decision.serving) == len(desired.specs)

    async def snapshot(self, seen: Seen, ready: frozenset[str], *, gone: frozenset[str]) -> Snapshot:
        """What this pass decides from: what it read, the demand sampled into the scaler (the
        scaler records this pass's load here), the host, each slot's backoff, the clock."""
        demand = self.on_demand.demand.current()
        host = await asyncio.to_thread(self.on_demand.host, self.models, seen.observed)
        return Snapshot(
            models=tuple(self.models),
            observed=tuple(seen.observed),
            inventory=seen.inventory,
            pids=seen.pids,
            host=host,
            demand=demand,
            loads=self.on_demand.loads(self.models, demand),
            ready=ready,
            draining=self.drainer.draining_ids(),
            gone=gone,
            slots=self.lifecycle.facts(),
            now=self.clock(),
            hash_key=self.runtime.hash_key,
        )

    async def read_snapshot(self) -> Snapshot:
        """A snapshot read now, recording nothing (no load sample, no stage): what ``/v1/plan``
        previews against before the first pass has published one."""
        observed = await asyncio.to_thread(self.runtime.list)
        inventory = await asyncio.to_thread(self.read_inventory)
        pids = await asyncio.to_thread(self.gpu_pids, observed) if inventory.gpus else {}
        host = await asyncio.to_thread(self.on_demand.host, self.models, observed)
        demand = self.on_demand.demand.current()
        return Snapshot(
            models=tuple(self.models),
            observed=tuple(observed),
            inventory=inventory,
            pids=pids,
            host=host,
            demand=demand,
            loads=self.on_demand.views(self.models, demand),
            draining=self.drainer.draining_ids(),
            slots=self.lifecycle.facts(),
            now=self.clock(),
            hash_key=self.runtime.hash_key,
        )

    def publish(self, *, completed: bool = False, **pass_facts: object) -> None:
        """Publish a new Report: what the loop knows now (models, errors, scaling, counters,
        events), with ``pass_facts`` (rows, notes, snapshot) of a pass that ran to its end."""
        current = self.reports.current()
        on_demand = self.on_demand
        report = replace(
            current,
            passes=current.passes + 1 if completed else current.passes,
            models=tuple(self.models),
            manifest_errors=tuple(self.manifest_errors),
            scaling=tuple(on_demand.scaling.values()),
            evictions=on_demand.evictions,
            from_zero=on_demand.from_zero,  # the report keeps read-only copies
            failures=self.failures.counts,
            events=tuple(self.events.events),
            events_last=self.events.last,
            **pass_facts,  # type: ignore[arg-type]
        )
        self.reports.publish(report)

    def report_demand(self, report: DemandReport) -> None:
        """Take a gateway's demand report; a request waiting for a model starts a pass now."""
        if self.on_demand.demand.record(report):
            self.wake.set()

    def refresh_models(self) -> None:
        """Load the manifests and publish them (blocking: reads files)."""
        self.apply_models(self.read_models())

    def read_models(self) -> list[LoadedModel] | InvalidManifests:
        """The manifests, or why they are invalid (blocking: reads files; run it in a thread)."""
        try:
            return self.load_models()
        except InvalidManifests as exc:
            return exc

    def apply_models(self, loaded: list[LoadedModel] | InvalidManifests) -> None:
        """Take loaded manifests; on errors keep serving the last good set and report them once.
        Publishes, so that readers know the models and the errors at once."""
        if isinstance(loaded, InvalidManifests):
            errors = [str(e) for e in loaded.errors]
            if errors != self.manifest_errors:
                log.error("manifests invalid, still serving the last good set:\n%s", "\n".join(errors))
            self.manifest_errors = errors
        else:
            self.models = loaded
            self.loaded = True
            if self.manifest_errors:
                log.info("manifests valid again")
            self.manifest_errors = []
        self.publish()

    async def hold_untouched(self) -> None:
        """A pass before the manifests ever loaded (a controller started on invalid ones): there
        is no last good set to keep, and an empty one would remove every replica that runs. So
        nothing is created, replaced or removed, and no endpoint table is published (the gateways
        keep the one they hold); the report says why, beside the manifest errors."""
        self.stage = Stage.CONTAINERS
        running = sum(c.running for c in await asyncio.to_thread(self.runtime.list))
        note = (
            f"the manifests have not loaded since the controller started: its {running} running "
            "replica(s) are kept as they are, and nothing changes until the manifests are valid"
        )
        self.publish(replicas=(), notes=(note,), completed=True)

    def read_seen(self) -> Seen:
        """Read what a pass starts from (blocking: Docker and NVML calls; run it in a thread)."""
        self.stage = Stage.CONTAINERS
        observed = self.runtime.list()
        self.stage = Stage.INVENTORY
        inventory = self.read_inventory()
        self.stage = Stage.CONTAINERS  # their GPU processes
        return Seen(observed, inventory, self.gpu_pids(observed) if inventory.gpus else {})

    def gpu_pids(self, observed: list[ObservedContainer]) -> dict[Slot, frozenset[int]]:
        """Host PIDs of our running GPU replicas by slot, so placement does not count the memory
        of those still wanted as foreign."""
        pids: dict[Slot, frozenset[int]] = {}
        for c in observed:
            if c.gpus and c.running:
                pids[c.slot] = pids.get(c.slot, frozenset()) | frozenset(self.runtime.host_pids(c.id))
        return pids

    async def probe(self, observed: list[ObservedContainer]) -> set[str]:
        """IDs of the running containers whose engine answers its health endpoint."""
        live = [c for c in observed if c.running and c.url]
        answers = await asyncio.gather(*(self.prober.ready(f"{c.url}{c.health_path}") for c in live))
        return {c.id for c, ok in zip(live, answers, strict=True) if ok}

    async def replace_failed(
        self, observed: list[ObservedContainer], ready: set[str]
    ) -> list[ObservedContainer]:
        """Remove crashed and stuck containers, recording why and when they may start again.

        Returns the containers that remain. Draining containers are left to their drain.
        """
        now = self.clock()
        remaining = []
        for container in observed:
            if self.drainer.draining(container.id) or container.state == "removing":
                remaining.append(container)
            elif container.state == "created":
                if container.id not in self.lifecycle.removal_failed:
                    log.info("removing %s: created but never started (an interrupted run)", container.name)
                await self.remove(container)
            elif not container.alive:
                await self.replace_exited(container, now)
            elif (reason := await self.running_problem(container, ready, now)) is not None:
                self.count_failure(container, reason, now)
                await self.remove(container, graceful=False)
            else:
                remaining.append(container)
        return remaining

    async def running_problem(self, container: ObservedContainer, ready: set[str], now: float) -> str | None:
        if not container.running:
            return None  # restarting: Docker's own restart policy is at work
        return await self.health_problem(container, container.id in ready, now)

    async def replace_exited(self, container: ObservedContainer, now: float) -> None:
        """Count an exited container's failure (once) and remove it. Removal comes first: an
        engine that refuses it is shutting down, which is then why the container stopped."""
        counted = container.id in self.lifecycle.counted
        logs = "" if counted else await self.last_logs(container)
        await self.remove(container, graceful=False)
        if counted:
            return
        cause = self.lifecycle.engine.cause(container.finished_at)
        stopped = stopped_by_engine(container.exit_code, oom_killed=container.oom_killed, cause=cause)
        if stopped is not None:
            self.count_failure(container, stopped, now, crash=False)
        else:
            self.count_failure(container, explain(logs, exit_code=container.exit_code), now)

    def count_failure(
        self, container: ObservedContainer, reason: str, now: float, *, crash: bool = True
    ) -> None:
        """Record (and log) a container's failure, unless it was counted on an earlier pass."""
        delay = self.lifecycle.container_failed(container.id, container.slot, reason, now, crash=crash)
        if delay is None:
            return
        self.events.failed(container, reason, delay, crash=crash)
        if crash:
            log.error("replica %s-%d failed: %s; restarting in %gs", *container.slot, reason, delay)
        else:
            log.warning("replica %s-%d %s", *container.slot, reason)

    async def remove(self, container: ObservedContainer, *, graceful: bool = True) -> None:
        """Remove a container. If that fails it is still listed on the next pass, which retries
        (the failure is logged once); an unreachable engine is noted as an outage."""
        try:
            await asyncio.to_thread(self.runtime.remove, container.id, graceful=graceful)
            self.failures.recovered(TASK, container.name)
        except BackendRuntimeError as exc:
            if isinstance(exc, RuntimeUnavailable):
                self.lifecycle.engine.lost(self.wall_clock())
            if self.lifecycle.first_removal_failure(container.id):
                log.warning("could not remove %s yet (retrying on later passes): %s", container.name, exc)
        except Exception as exc:  # unexpected: counted, logged once, retried like the above
            then = "retrying on later passes"
            self.failures.record(TASK, exc, stage=Stage.REMOVE, subject=container.name, then=then)
        finally:
            self.heartbeat.progressed()

    async def health_problem(self, container: ObservedContainer, ready: bool, now: float) -> str | None:
        """Why a running container must be replaced (unhealthy too long, never ready, or a fatal
        error in the logs of one that hangs instead of exiting), or None."""
        reason = self.lifecycle.observe(container.id, container.slot, ready=ready, now=now)
        if ready or self.lifecycle.ready_once(container.id):
            return reason
        fatal = known_failure(await self.last_logs(container))
        if fatal is not None:
            return fatal
        return reason

    async def last_logs(self, container: ObservedContainer) -> str:
        """The container's last output, read once per pass; empty if it vanished meanwhile (its
        reason is then unknown)."""
        if container.id not in self.pass_logs:
            try:
                self.pass_logs[container.id] = await asyncio.to_thread(self.runtime.logs, container.id)
            except BackendRuntimeError as exc:
                log.debug("no logs for %s: %s", container.name, exc)
                return ""
        return self.pass_logs[container.id]

    async def with_progress(
        self, rows: list[ReplicaStatus], kept: Sequence[ObservedContainer]
    ) -> list[ReplicaStatus]:
        """``rows``, Starting ones with what their engine's log says it is doing."""
        running = {c.name: c for c in kept if c.running}
        starting = [
            (r, running[r.container])
            for r in rows
            if r.state == ReplicaState.STARTING and r.container in running
        ]
        tails = await asyncio.gather(*(self.last_logs(c) for _, c in starting))
        phases = {r.container: progress(c.engine, tail) for (r, c), tail in zip(starting, tails, strict=True)}
        return [replace(r, progress=phases[r.container]) if r.container in phases else r for r in rows]

    async def create(self, starts: tuple[ContainerSpec, ...]) -> int:
        """Start the decided containers (their backoff has passed); one failing does not stop others."""
        started = 0
        for spec in starts:
            started += await self.start(spec)
            self.heartbeat.progressed()
        return started

    async def start(self, spec: ContainerSpec) -> bool:
        """Start one replica; False when it could not start (it backs off, logged with why).
        Raises RuntimeUnavailable: the engine is away, not the replica at fault, so the pass fails
        and is retried."""
        slot, replica = (spec.model, spec.replica), f"{spec.model}-{spec.replica}"
        try:
            await asyncio.to_thread(self.runtime.start, spec)
        except RuntimeUnavailable:
            raise
        except ModelctlError as exc:
            reason = explain(str(exc))
            delay = self.start_failed(slot, reason)
            log.error("replica %s-%d could not start: %s (%s); retrying in %gs", *slot, reason, exc, delay)
            return False
        except Exception as exc:  # a surprise from a library or from us: this replica backs off alone
            delay = self.start_failed(slot, f"unexpected error: {type(exc).__name__}: {exc}")
            then = f"retrying in {delay:g}s"
            self.failures.record(TASK, exc, stage=Stage.CREATE, subject=replica, then=then)
            return False
        self.failures.recovered(TASK, replica)
        log.info("started replica %s-%d (%s)", spec.model, spec.replica, spec.image)
        self.events.record("created", slot, container=spec.container_name(self.runtime.instance))
        return True

    def start_failed(self, slot: Slot, reason: str) -> float:
        """Back ``slot`` off after a failed start; returns the delay."""
        delay = self.lifecycle.failed(slot, reason, self.clock())
        self.events.start_failed(slot, reason, delay)
        return delay


def endpoint_table(
    models: list[LoadedModel], serving: list[ObservedContainer], loading: Mapping[str, str] | None = None
) -> tuple[ModelEndpoints, ...]:
    """Every model, with only its ready replicas, in replica order; ``loading``: what a model
    without ready replicas waits for (a hub pull's progress), by name."""
    entries = []
    for model in models:
        replicas = tuple(
            Replica(id=c.name, url=str(c.url), max_concurrency=c.max_concurrency, gpus=c.gpus)
            for c in sorted(serving, key=lambda c: (c.replica, c.name))
            if c.model == model.name
        )
        manifest = model.manifest
        entries.append(
            ModelEndpoints(
                model.name,
                tuple(manifest.aliases),
                model.created,
                replicas,
                manifest.balancing,
                load_timeout_s=manifest.load_timeout_s,
                engine=manifest.resolved_engine,
                context_length=manifest.context_length,
                unload_after_s=unload_after_s(manifest),
                details=describe(model),
                adapters=tuple(adapter.name for adapter in manifest.adapters),  # the engine's order
                vision=takes_images(model),
                loading=(loading or {}).get(model.name, ""),
                task=model.task,
            )
        )
    return tuple(entries)


def unload_after_s(manifest: ModelManifest) -> float | None:
    """Seconds idle before the controller stops the model's last replica; None: it stays loaded."""
    idle_s = manifest.idle_timeout_s
    return idle_s if manifest.on_demand and manifest.min_count == 0 and idle_s > 0 else None
