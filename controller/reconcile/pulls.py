"""Pulls before starts: a replica of a hub model whose files are not all in the hub cache is not
created; its hub files (``hub_refs``: weights, draft, projector, adapters: one pull for them all)
are pulled in the background first, and the replica starts on the pass after the pull, with the
local paths (so its ``load_timeout`` counts from the end of the download).

The loop asks ``gate`` which of the decided starts may go now; for the others it starts one pull per
repo at a time (a model naming a repo that is being pulled waits for that pull to end). A pull
runs ``Puller.pull`` on a daemon thread (huggingface_hub is blocking, and a thread that outlives the
controller's stop must not hold its exit) and reports back on the loop; ``rows`` turns those slots'
status rows into ``Pulling`` with the progress (bytes done of the total, percent), measured from the
blobs on disk each pass; ``loading`` gives the same line per model for the endpoint table, which
the gateway writes into the ``: loading`` comments of the requests it holds. Events: ``pulling``
when a pull knows its size and at each quarter, ``pulled`` at the end.

A model whose files are all in the cache but that was loaded before they were (the pull ended
after the pass loaded the manifests, or the load that found them refused them: a pulled adapter,
projector or draft that does not fit the weights is a manifest error, ``controller.hub.fit``) is
held without a pull: the next load that takes it starts it, and a refused one never starts.

A failed pull is the slot's failed start: ``start_failed`` (the reconciler's backoff, its event and
its one-line reason), and the next start after the backoff pulls again, resuming what was fetched.
An unexpected error in a pull is counted and logged once (``supervise.Failures``) and backs off the
same way: no exception ends the loop or leaves a pull marked as running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from controller.errors import HubError
from controller.hub.cache import HubRef, describe, hub_refs
from controller.hub.pull import Progress, Puller, PullPlan
from controller.manifests.model import LoadedModel
from controller.reconcile.events import EventLog
from controller.reconcile.lifecycle import Slot
from controller.reconcile.states import ReplicaState
from controller.reconcile.status import ReplicaStatus
from controller.reconcile.supervise import Failures
from controller.runtime.spec import ContainerSpec

log = logging.getLogger(__name__)

TASK = "hub pull"  # the errors' task label
QUARTERS = (25, 50, 75)
# What a replica whose files are all pulled waits for: a load of the manifests that takes them
# (the next pass's, unless the manifests are invalid: a pulled file that does not fit is one error).
HELD = "pulled; starts once the manifests load (see the manifest errors, if any)"


@dataclass(slots=True)
class Pull:
    """One model's pull in flight: its hub references, the slot its events name, their plans
    once listed (those not in the cache yet)."""

    refs: tuple[tuple[str, HubRef], ...]
    slot: Slot
    plans: list[PullPlan] = field(default_factory=list)
    reported: int = 0  # the last quarter recorded as an event

    @property
    def ref(self) -> str:
        """The references in words, for events and lines."""
        return describe(self.refs)

    @property
    def repos(self) -> set[str]:
        return {ref.repo for _, ref in self.refs}


class Pulls:
    """The background pulls of one reconciler; used from the loop only (threads report through it)."""

    def __init__(
        self,
        puller: Puller | None,
        *,
        wake: Callable[[], None],
        failures: Failures,
        events: EventLog,
    ) -> None:
        self.puller = puller  # None: no pulls; hub models are left to their engines, as before
        self.wake = wake
        self.failures = failures
        self.events = events
        self.active: dict[str, Pull] = {}  # repo -> the pull that holds it
        self.failed: dict[HubRef, str] = {}  # refs of pulls that failed, until their slots back off
        # Refs of pulls that ended well since the last gate: a pass that loaded its models before
        # that end still sees them uncached, and holds their starts for the next pass.
        self.pulled: set[HubRef] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    def needs(self, model: LoadedModel) -> bool:
        """True when ``model``'s replicas wait for a pull (hub files not all in the cache)."""
        return self.puller is not None and model.pulled is None and bool(hub_refs(model))

    def gate(
        self,
        starts: Iterable[ContainerSpec],
        models: Iterable[LoadedModel],
        start_failed: Callable[[Slot, str], float],
    ) -> tuple[ContainerSpec, ...]:
        """The starts that may go now; pulls started for the others, failed pulls backed off."""
        by_name = {m.name: m for m in models}
        failed, self.failed = self.failed, {}
        pulled, self.pulled = self.pulled, set()
        ready = []
        for spec in starts:
            model = by_name.get(spec.model)
            refs = hub_refs(model) if model is not None and self.needs(model) else ()
            why = next((failed[ref] for _, ref in refs if ref in failed), None)
            if model is None or not refs:
                ready.append(spec)
            elif why is not None:
                start_failed((spec.model, spec.replica), why)
            elif all(ref in pulled for _, ref in refs) or self.cached(model):
                continue  # the next pass that loads the manifests finds it cached (see ``cached``)
            else:
                self.start(model, refs, (spec.model, spec.replica))
        return tuple(ready)

    def cached(self, model: LoadedModel) -> bool:
        """True when every hub file of ``model``, loaded as not pulled, is in the cache now (a few
        ``stat`` calls): pulled after this pass loaded the manifests, or refused by the load that
        found them (they do not fit the weights, ``controller.hub.fit``: the last good set keeps
        the model waiting). Either way its start is held and nothing is pulled again."""
        return self.puller is not None and self.puller.cached(model) is not None

    def start(self, model: LoadedModel, refs: tuple[tuple[str, HubRef], ...], slot: Slot) -> None:
        """Pull ``model``'s files unless one of its repos is being pulled already (one pull per repo)."""
        pull = Pull(refs, slot)
        if pull.repos & self.active.keys() or self.puller is None:
            return
        self.loop = asyncio.get_running_loop()
        self.active.update(dict.fromkeys(pull.repos, pull))
        root = self.puller.cache.root
        log.info("pulling %s for model %s into the hub cache %s", pull.ref, model.name, root)
        thread = threading.Thread(
            target=self.run, args=(self.puller, model, pull), name=f"pull {model.name}", daemon=True
        )
        thread.start()

    def run(self, puller: Puller, model: LoadedModel, pull: Pull) -> None:
        """The pull's thread: pull, then report to the loop (never raises)."""
        error: BaseException | None = None
        try:
            puller.pull(model, on_plan=pull.plans.append)
        except BaseException as exc:  # reported to the loop, which counts and backs off
            error = exc
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: the controller stopped
                loop.call_soon_threadsafe(self.ended, pull, error)

    def ended(self, pull: Pull, error: BaseException | None) -> None:
        """A pull's end, on the loop: its replicas start on the next pass, or back off."""
        for repo in pull.repos:
            if self.active.get(repo) is pull:
                del self.active[repo]
        subject = ", ".join(sorted(pull.repos))
        if error is None:
            self.failures.recovered(TASK, subject)
            self.pulled.update(ref for _, ref in pull.refs)
            self.events.record("pulled", pull.slot, reason=f"{pull.ref}: {self.describe(pull)}")
            self.wake()
            return
        if isinstance(error, HubError):
            why = f"pull failed: {error}"
            log.warning("hub pull failed: %s", error)
        else:
            why = f"pull failed: unexpected error: {type(error).__name__}: {error}"
            then = "the replica backs off and pulls again"
            self.failures.record(TASK, error, subject=subject, then=then)
        self.failed.update(dict.fromkeys((ref for _, ref in pull.refs), why))
        self.wake()

    def progress(self, pull: Pull) -> Progress | None:
        plans = tuple(pull.plans)  # the pull's thread appends to it
        if not plans or self.puller is None:
            return None
        return self.puller.measure(*plans)

    def describe(self, pull: Pull) -> str:
        progress = self.progress(pull)
        return progress.describe() if progress is not None else f"pulling {pull.ref}: listing the repo"

    def waiting_line(self, model: LoadedModel) -> str:
        """What ``model``'s replicas wait for, in words."""
        refs = hub_refs(model)
        pull = next((self.active[ref.repo] for _, ref in refs if ref.repo in self.active), None)
        if pull is None:
            return HELD if self.cached(model) else "pull starting"
        if pull.refs != refs:
            return f"waiting for the pull of {pull.ref} (one pull per repo)"
        return self.describe(pull)

    def rows(self, rows: list[ReplicaStatus], models: Iterable[LoadedModel]) -> list[ReplicaStatus]:
        """``rows``, those of replicas waiting for a pull as Pulling with its progress; records
        the pulls' quarter events."""
        self.milestones()
        waiting = {m.name: self.waiting_line(m) for m in models if self.needs(m)}
        return [
            replace(r, state=ReplicaState.PULLING, progress=waiting[r.model].removeprefix("pulling "))
            if r.model in waiting and r.container is None and r.state == ReplicaState.STARTING
            else r
            for r in rows
        ]

    def milestones(self) -> None:
        for pull in {id(p): p for p in self.active.values()}.values():
            progress = self.progress(pull)
            if progress is None:
                continue
            if pull.reported == 0 and progress.percent < QUARTERS[0]:
                pull.reported = -1
                self.events.record("pulling", pull.slot, reason=f"{pull.ref}: {progress.describe()}")
            for quarter in QUARTERS:
                if progress.percent >= quarter > pull.reported:
                    pull.reported = quarter
                    self.events.record("pulling", pull.slot, reason=f"{pull.ref}: {progress.describe()}")

    def loading(self, models: Iterable[LoadedModel]) -> dict[str, str]:
        """Per model waiting for a pull, the line the gateway adds to its ``: loading`` comments."""
        return {m.name: self.waiting_line(m) for m in models if self.needs(m)}

    @property
    def busy(self) -> bool:
        return bool(self.active)
