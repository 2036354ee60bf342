"""Container labels modelctl puts on what it starts, in one place.

Labels are how the reconciler finds its containers again (after a restart too), how `modelctl down`
removes only what modelctl started, and how drift shows: the hash of the desired spec is a label.
"""

from __future__ import annotations

PREFIX = "io.modelctl"
MANAGED = f"{PREFIX}.managed"  # "true" on every container modelctl creates
INSTANCE = f"{PREFIX}.instance"  # which controller owns it (several may share an engine)
MODEL = f"{PREFIX}.model"  # the manifest's model name
REPLICA = f"{PREFIX}.replica"  # replica index within the model, "0", "1", ...
SPEC_HASH = f"{PREFIX}.spec-hash"  # hash of the desired container spec
ENGINE = f"{PREFIX}.engine"  # "llamacpp" or "vllm"
PORT = f"{PREFIX}.port"  # the port the engine listens on inside the container
HEALTH_PATH = f"{PREFIX}.health-path"  # where readiness is probed
MAX_CONCURRENCY = f"{PREFIX}.max-concurrency"  # sequences one replica serves at once

NETWORK_OWNED = f"{PREFIX}.network"  # on networks modelctl created itself


def selector(instance: str | None = None) -> dict[str, str]:
    """Label filter for managed containers: all of modelctl's, or one controller instance's."""
    labels = {MANAGED: "true"}
    if instance is not None:
        labels[INSTANCE] = instance
    return labels
