"""Files beside the weights named as hub references (``draft``, ``mmproj``, ``adapters[].path`` as
``hf://``) on a cluster.

On Docker the controller pulls them into the hub cache before a replica starts and names their
place there (``snapshots/<commit>/...``). A rendering cannot know the commit, and no controller
runs on a cluster, so each replica's pod gets an initContainer: the modelctl image running
``modelctl pull --ref ROLE=hf://... --engine ENGINE --hub-cache /cache``, which pulls them into the
hub-cache PVC with the controller's own puller (the same files chosen, resumed, size- and
sha-checked) and links each at ``/cache/<HubRef.link>``, a place its reference alone names. The
engine's flags name those links (``linked``: the model as if pulled there) and the engine mounts
the cache read-only (read-write only where it downloads hub weights itself). The initContainer
runs as nobody with a read-only root, every capability dropped, bounded; its Hub token is the
manifest's ``HF_TOKEN`` env, from the same Secret the engine's is (never in args or logs).
"""

from __future__ import annotations

from dataclasses import replace

from controller.engines.common import HUB_CACHE_DIR, HUB_CACHE_VOLUME
from controller.engines.files import hub_fields
from controller.hub.cache import WEIGHTS, hub_refs
from controller.hub.pull import TOKEN_VARS
from controller.manifests.model import LoadedModel, PulledFiles

NAME = "pull-hub-files"
# What the puller reads from its environment: the token, and a mirror (HF_ENDPOINT) where the
# manifest names one for its engine.
PULL_ENV = (*TOKEN_VARS, "HF_ENDPOINT")
# A pull streams to disk in chunks: Python, huggingface_hub's listing and one file's hashing.
RESOURCES = {
    "requests": {"cpu": "250m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}


def has_hub_files(model: LoadedModel) -> bool:
    return bool(hub_fields(model))


def linked(model: LoadedModel) -> LoadedModel:
    """``model`` as the engine code sees a pulled one, its hub files beside the weights at their
    links in the cache (hub weights stay the engine's own download: ``path`` is empty). A model
    without such files is returned as it is."""
    beside = tuple((role, ref.link) for role, ref in hub_refs(model) if role != WEIGHTS)
    if not beside:
        return model
    return replace(model, pulled=PulledFiles(HUB_CACHE_VOLUME, True, "", beside=beside))


def pull_args(model: LoadedModel) -> list[str]:
    """``modelctl pull --ref ROLE=REF ...`` for the model's hub files beside the weights, in the
    manifest's order."""
    args = ["pull", "--hub-cache", HUB_CACHE_DIR, "--engine", model.manifest.resolved_engine]
    for role, value in hub_fields(model):
        args += ["--ref", f"{role}={value}"]
    return args


def pull_env(model: LoadedModel) -> tuple[tuple[str, str], ...]:
    """The manifest's env entries the puller reads, by name (as written: references are the
    Secret's)."""
    return tuple(sorted((name, value) for name, value in model.manifest.env.items() if name in PULL_ENV))
