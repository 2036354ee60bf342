"""A controller started on invalid manifests has no last good set to keep: it must not take the
empty set for the wanted state and remove every replica that runs. It changes nothing, publishes
no endpoint table (the gateways keep theirs), and says why; once the manifests load, it adopts
what runs as any restarted controller does."""

from __future__ import annotations

from controller.errors import InvalidManifests, ManifestError
from controller.manifests.model import LoadedModel
from controller.reconcile.loop import Reconciler
from tests.reconcile.test_events import Stack, model, stack


def restarted(s: Stack) -> Stack:
    """A new controller over the same Docker engine (runtime and probes), manifests as ``s.models``."""
    fresh = stack(s.models)
    fresh.runtime, fresh.prober = s.runtime, s.prober
    old = fresh.reconciler
    fresh.reconciler = Reconciler(
        runtime=s.runtime,  # type: ignore[arg-type]
        load_models=lambda: load(fresh),
        store=old.store,
        prober=s.prober,
        drainer=type(old.drainer)(s.runtime, s.prober.fetch, settle_s=0, poll_s=0),  # type: ignore[arg-type]
        lifecycle=old.lifecycle.settings,
        read_inventory=old.read_inventory,
        clock=old.clock,
        wall_clock=old.wall_clock,
    )
    return fresh


def load(s: Stack) -> list[LoadedModel]:
    if not s.models:
        raise InvalidManifests([ManifestError("bad field", file="m.yaml", document=1, field="replicas")])
    return list(s.models)


async def test_a_controller_started_on_invalid_manifests_removes_nothing() -> None:
    s = stack([model("smol", replicas=2)])
    await s.passes(2)
    for container in s.runtime.containers:
        s.prober.mark(container)
    await s.passes(1)
    running = sorted(c.id for c in s.runtime.containers)
    assert len(running) == 2

    fresh = restarted(s)
    fresh.models = []  # the manifests were broken while the controller was down
    await fresh.passes(3)
    assert sorted(c.id for c in fresh.runtime.containers) == running  # nothing removed or added
    report = fresh.reconciler.reports.current()
    assert report.manifest_errors and "bad field" in report.manifest_errors[0]
    assert report.passes == 3  # the loop is alive: liveness holds
    assert report.notes == (
        "the manifests have not loaded since the controller started: its 2 running replica(s) are "
        "kept as they are, and nothing changes until the manifests are valid",
    )
    assert fresh.reconciler.store.current().version == 0  # no table: the gateways keep theirs
    assert fresh.kinds() == []

    fresh.models = [model("smol", replicas=2)]  # fixed: the running replicas are adopted
    await fresh.passes(2)
    assert sorted(c.id for c in fresh.runtime.containers) == running
    assert fresh.reconciler.store.current().version >= 1
    assert [r.state for r in fresh.reconciler.reports.current().replicas] == ["Ready", "Ready"]
