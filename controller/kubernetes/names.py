"""Object names and labels on a cluster.

Model names may hold '.' and '_' (``qwen2.5-0.5b``), which a Service name (an RFC 1035 label) may not.
Such names are spelt with '-' and get a short hash of the real name, so two models never share an
object and a model's object names depend on its own name only (never on which other models exist).
"""

from __future__ import annotations

import hashlib
import re

from controller.runtime import labels

PART_OF = "modelctl"
MANAGED_BY = "modelctl"
GATEWAY = "modelctl-gateway"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")

# Annotations (same keys as the Docker labels of the same meaning).
SPEC_HASH = labels.SPEC_HASH
HEALTH_PATH = labels.HEALTH_PATH


def object_name(model: str) -> str:
    """An RFC 1035 label for ``model``'s objects: the name itself when it is one, else a spelling
    with '-' plus 6 hex digits of the name's hash (``qwen2.5-0.5b`` -> ``qwen2-5-0-5b-1a2b3c``)."""
    if _DNS_LABEL.match(model):
        return model
    spelt = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
    if not spelt or not spelt[0].isalpha():
        spelt = f"m-{spelt}".rstrip("-")
    digest = hashlib.sha256(model.encode()).hexdigest()[:6]
    return f"{spelt[:55].rstrip('-')}-{digest}"


def selector(model: str) -> dict[str, str]:
    """What a model's Deployment, Service and InferencePool select: stable while the model lives
    (a Deployment's selector is immutable), so no engine or version in it."""
    return {"app.kubernetes.io/component": "engine", labels.MODEL: model}


def model_labels(
    model: str, engine: str, *, instance: str, port: int, max_concurrency: int
) -> dict[str, str]:
    """The io.modelctl labels the Docker runtime puts on a replica, plus app.kubernetes.io/*."""
    return {
        "app.kubernetes.io/name": engine,
        "app.kubernetes.io/instance": object_name(model),
        "app.kubernetes.io/component": "engine",
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **labels.selector(instance),
        labels.MODEL: model,
        labels.ENGINE: engine,
        labels.PORT: str(port),
        labels.MAX_CONCURRENCY: str(max_concurrency),
    }


def gateway_selector() -> dict[str, str]:
    return {"app.kubernetes.io/name": "modelctl", "app.kubernetes.io/component": "gateway"}


def gateway_labels(instance: str) -> dict[str, str]:
    return {
        **gateway_selector(),
        "app.kubernetes.io/instance": GATEWAY,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        labels.INSTANCE: instance,
    }
