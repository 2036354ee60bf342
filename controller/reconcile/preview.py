"""The plan preview: what would start, stop, roll, move or stay Pending if a set of manifests were
applied now, against what the controller runs (``modelctl plan PATH --diff``, ``/v1/plan``).

It decides nothing of its own: ``rows`` reads a ``decide.Decision`` back per replica slot as
terraform-style rows, the decision made by the very ``decide`` the reconcile pass runs, on the last
pass's snapshot with the new manifests swapped in (``api.plan``). So every case is a row in a
table test, and a preview never changes the scaler.

With the gateway's demand, room is made as a pass makes it: an idle on-demand model stopped for a
wanted one is a delete row saying for whom, and the wanted model's replica a create once its victims
have left. A crashed replica waiting out its restart backoff is a create that says so, with its
last failure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from controller.endpoints.demand import ModelDemand
from controller.gpus.inventory import Inventory
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.placement.host import Host
from controller.reconcile.decide import Decision, Snapshot, decide
from controller.reconcile.lifecycle import SlotFacts
from controller.reconcile.ondemand import WAITING_FOR_LEAVERS
from controller.reconcile.scaling import Load
from controller.runtime.observed import ObservedContainer
from controller.runtime.spec import ContainerSpec

Slot = tuple[str, int]

SYMBOLS = {"create": "+", "roll": "~", "move": "~", "update": "~", "delete": "-", "pending": "!", "keep": " "}
# Counts show as create and delete rows of their own, not as a change of every replica.
COUNT_FIELDS = frozenset({"replicas", "min_replicas", "max_replicas"})


@dataclass(frozen=True, slots=True)
class Row:
    """One replica slot: what would happen to it, and why in a few words."""

    action: str  # create, roll, move, update, delete, pending, keep
    model: str
    replica: int
    detail: str = ""

    @property
    def name(self) -> str:
        return f"{self.model}-{self.replica}"

    @property
    def line(self) -> str:
        """``+ create a-1``, ``~ roll a-0 (context_length 512 -> 1024)``, ``! pending b-0: reason``."""
        head = f"{SYMBOLS[self.action]} {self.action} {self.name}"
        if not self.detail:
            return head
        return f"{head}: {self.detail}" if self.action == "pending" else f"{head} ({self.detail})"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name, "line": self.line}


@dataclass(frozen=True, slots=True)
class Preview:
    """The rows, sorted by model and replica; ``errors`` are manifest errors (then no rows)."""

    rows: tuple[Row, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        return any(r.action != "keep" for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        """The ``/v1/plan`` answer of docs/console.md."""
        return {
            "changes": self.changes,
            "errors": list(self.errors),
            "rows": [r.to_json() for r in self.rows],
        }


def preview(
    new_models: Sequence[LoadedModel],
    current_models: Sequence[LoadedModel],
    observed: Sequence[ObservedContainer],
    inventory: Inventory,
    *,
    managed_pids: Mapping[Slot, frozenset[int]] | None = None,
    counts: Mapping[str, int] | None = None,
    host: Host | None = None,
    demand: Mapping[str, ModelDemand] | None = None,
    backing_off: Mapping[Slot, str] | None = None,
    hash_key: bytes = b"",
) -> Preview:
    """What applying ``new_models`` would do to ``observed``, from loose inputs (tests, scripts):
    ``counts`` each model's count as the scaler holds it (absent: it starts from what runs);
    ``demand`` the gateway's (None: no eviction); ``backing_off`` crashed slots with their last
    failure. The controller itself previews a ``Snapshot`` (``rows(snapshot, decide(snapshot))``)."""
    snapshot = Snapshot(
        models=tuple(new_models),
        current=tuple(current_models),
        observed=tuple(observed),
        inventory=inventory,
        pids=managed_pids or {},
        host=host,
        demand=demand,
        loads={name: Load(count=count) for name, count in (counts or {}).items()},
        slots={slot: SlotFacts(failures=1, reason=why) for slot, why in (backing_off or {}).items()},
        hash_key=hash_key,
    )
    return rows(snapshot, decide(snapshot))


def rows(snapshot: Snapshot, decision: Decision) -> Preview:
    """``decision`` (made from ``snapshot``) read back per slot: one row per desired, pending or
    leaving replica, against the manifests that run now (``snapshot.running_models``)."""
    desired, plan = decision.desired, decision.plan
    alive: dict[Slot, list[ObservedContainer]] = {}
    for container in snapshot.kept:
        if container.alive:
            alive.setdefault(container.slot, []).append(container)
    context = Context(
        new={m.name: m.manifest for m in snapshot.models},
        current={m.name: m.manifest for m in snapshot.running_models},
        counts=decision.counts,
        specs={(s.model, s.replica): s for s in desired.specs},
        pending={(p.model, p.replica): p.reason for p in desired.pending},
        starts=frozenset((s.model, s.replica) for s in (*plan.create, *plan.waiting)),
        evicted={e.model: e.for_model for e in decision.evictions},
        backing_off=decision.backing_off(snapshot.slots),
    )
    slots = {*context.specs, *context.pending, *(c.slot for c in plan.delete if c.alive)}
    return Preview(tuple(slot_row(slot, alive.get(slot, []), context) for slot in sorted(slots)))


@dataclass(frozen=True, slots=True)
class Context:
    """What the rows are read from: both sets of manifests, the counts, and the desired state and
    plan by slot (``starts``: slots the plan creates a container in, now or after a roll)."""

    new: Mapping[str, ModelManifest]
    current: Mapping[str, ModelManifest]
    counts: Mapping[str, int]
    specs: Mapping[Slot, ContainerSpec]
    pending: Mapping[Slot, str]
    starts: frozenset[Slot]
    evicted: Mapping[str, str] = field(default_factory=dict)  # model stopped -> the model it makes room for
    backing_off: Mapping[Slot, str] = field(default_factory=dict)  # crashed, waiting: its last failure


def slot_row(slot: Slot, alive: list[ObservedContainer], context: Context) -> Row:
    """The row of one slot: pending, delete (nothing desired), create, roll or move, or keep."""
    model, replica = slot
    spec = context.specs.get(slot)
    if slot in context.pending:
        reason = context.pending[slot]
        victims = sorted(v for v, needy in context.evicted.items() if needy == model)
        if victims and reason.endswith(WAITING_FOR_LEAVERS) and not alive:
            return Row("create", model, replica, f"once {', '.join(victims)} has stopped to make room")
        stops = "; its running replica would stop" if alive else ""
        return Row("pending", model, replica, reason + stops)
    if spec is None:
        return Row("delete", model, replica, why_deleted(model, context))
    outdated = [c for c in alive if c.spec_hash != spec.spec_hash()]
    if slot in context.starts and not outdated:
        where = devices(spec.gpus.device_ids if spec.gpus else ())
        if slot in context.backing_off:
            after = f"after its restart backoff; it crashed: {context.backing_off[slot]}"
            return Row("create", model, replica, f"{where}, {after}" if where else after)
        return Row("create", model, replica, where)
    if outdated:  # to be rolled, or mid-roll (the new one starting beside it)
        return changed(spec, outdated[0], context)
    changes = manifest_changes(context.current.get(model), context.new[model])
    if changes:
        return Row("update", model, replica, f"{changes}; no restart")
    return Row("keep", model, replica)


def changed(spec: ContainerSpec, running: ObservedContainer, context: Context) -> Row:
    """A slot whose container runs another spec: a roll naming the manifest fields that changed,
    or a move when only its GPUs (or cores) differ, or a roll naming the spec's hashes."""
    changes = manifest_changes(context.current.get(spec.model), context.new[spec.model])
    if changes:
        return Row("roll", spec.model, spec.replica, changes)
    new_gpus = spec.gpus.device_ids if spec.gpus else ()
    if running.gpus != new_gpus and running.gpus and new_gpus:
        return Row("move", spec.model, spec.replica, f"{devices(running.gpus)} -> {devices(new_gpus)}")
    if running.cpus != spec.cpuset and not running.gpus:
        return Row("move", spec.model, spec.replica, f"{cores(running.cpus)} -> {cores(spec.cpuset)}")
    detail = f"container spec {running.spec_hash} -> {spec.spec_hash()}: image, flags, mounts or env"
    return Row("roll", spec.model, spec.replica, detail)


def why_deleted(model: str, context: Context) -> str:
    if model in context.evicted:
        return f"idle, stopped to make room for {context.evicted[model]}"
    if model not in context.new:
        return "not in the manifests"
    return f"{context.counts.get(model, context.new[model].min_count)} replica(s) wanted"


def manifest_changes(old: ModelManifest | None, new: ModelManifest) -> str:
    """``field old -> new`` for each field that differs (env: names only, never values); ""
    when equal or when the old manifest is not known."""
    if old is None:
        return ""
    before, after = old.model_dump(), new.model_dump()
    parts = []
    for name in ModelManifest.model_fields:
        if name in COUNT_FIELDS or before[name] == after[name]:
            continue
        if name == "env":
            parts.extend(env_changes(before[name], after[name]))
        else:
            parts.append(f"{name} {shown(before[name])} -> {shown(after[name])}")
    return ", ".join(parts)


def env_changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Which variables were added, removed or changed: values may be secrets, so never shown."""
    changes = []
    for name in sorted({*before, *after}):
        if name not in before:
            changes.append(f"env {name} added")
        elif name not in after:
            changes.append(f"env {name} removed")
        elif before[name] != after[name]:
            changes.append(f"env {name} changed")
    return changes


def shown(value: Any) -> str:
    if value is None:
        return "default"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def devices(ids: Sequence[str]) -> str:
    if not ids:
        return ""
    return f"GPU {ids[0]}" if len(ids) == 1 else f"GPUs {','.join(ids)}"


def cores(ids: Sequence[int]) -> str:
    return f"cores {','.join(str(i) for i in ids)}" if ids else "any core"


def summary(actions: Sequence[str]) -> str:
    """``Plan: 1 to create, 1 to roll, 0 to delete, 1 pending.`` (moves and updates when any) for
    the rows' actions."""
    count = {a: sum(1 for action in actions if action == a) for a in SYMBOLS}
    if sum(count.values()) == count["keep"]:
        return "No changes: what runs matches these manifests."
    parts = [f"{count['create']} to create", f"{count['roll']} to roll"]
    parts += [f"{count[a]} to {a}" for a in ("move", "update") if count[a]]
    parts += [f"{count['delete']} to delete", f"{count['pending']} pending"]
    return f"Plan: {', '.join(parts)}."
