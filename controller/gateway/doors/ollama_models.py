"""Ollama's model lists from the endpoint table: ``/api/tags``, ``/api/ps``, ``/api/show``.

Pure functions over the table, whose details (format, family, size, quantisation, header keys,
chat template) the controller read from the weights' headers (``weights.describe``); the
gateway never sees weights. A LoRA adapter is listed as a model of its own with its base's details
(``parent_model``: the base). Tested by tables in tests/gateway/test_ollama.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from controller.endpoints.table import EndpointTable, ModelEndpoints, Target

# The Ollama API version this translation follows (clients gate features on it), not modelctl's.
API_VERSION = "0.12.0"
# /api/ps for a model that stays loaded (not on demand): Ollama shows a far future too.
FOREVER = "9999-12-31T23:59:59Z"


def lookup(table: EndpointTable, name: str) -> Target | None:
    """The model (or adapter) served as ``name``; Ollama clients may add the default tag
    (``smollm2:latest``)."""
    target = table.resolve(name)
    if target is None and name.endswith(":latest"):
        target = table.resolve(name.removesuffix(":latest"))
    return target


def rfc3339(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat().replace("+00:00", "Z")


def details(entry: ModelEndpoints, adapter: int | None = None) -> dict[str, Any]:
    """Ollama's ``details``; of an adapter (``adapter``: its index), its base's, the base as parent."""
    d = entry.details
    family = d.family if d is not None else ""
    return {
        "parent_model": entry.name if adapter is not None else "",
        "format": d.format if d is not None else "",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": d.parameter_size if d is not None else "",
        "quantization_level": d.quantization if d is not None else "",
    }


def digest(entry: ModelEndpoints) -> str:
    """A stable id for the model as served (name, manifest time, weights size); not a blob hash."""
    size = entry.details.size if entry.details is not None else 0
    return hashlib.sha256(f"{entry.name}\0{entry.created}\0{size}".encode()).hexdigest()


def _model(entry: ModelEndpoints, name: str, adapter: int | None = None) -> dict[str, Any]:
    size = entry.details.size if entry.details is not None else 0
    return {
        "name": name,
        "model": name,
        "size": size,
        "digest": digest(entry),
        "details": details(entry, adapter),
    }


def tags(table: EndpointTable) -> dict[str, Any]:
    """``/api/tags``: every served name and alias, then every adapter, ready or not."""
    listed: list[tuple[ModelEndpoints, str, int | None]]
    listed = [(entry, name, None) for entry in table.models for name in entry.names]
    listed += [(entry, name, k) for entry in table.models for k, name in enumerate(entry.adapters)]
    return {
        "models": [
            _model(entry, name, adapter) | {"modified_at": rfc3339(entry.created)}
            for entry, name, adapter in listed
        ]
    }


def ps(table: EndpointTable, last_active: Mapping[str, float], now: float) -> dict[str, Any]:
    """``/api/ps``: models with a ready replica. ``expires_at``: when an on-demand model with
    min_replicas 0 goes down if nothing else comes (``last_active``: unix time a request last
    started or ended here, per model); the far future for models that stay."""
    models = []
    for entry in table.models:
        if not entry.replicas:
            continue
        until = FOREVER
        if entry.unload_after_s is not None:
            until = rfc3339((last_active.get(entry.name) or now) + entry.unload_after_s)
        gpus = sorted({g for r in entry.replicas for g in r.gpus})
        size = entry.details.size if entry.details is not None else 0
        models.append(
            _model(entry, entry.name)
            | {
                "expires_at": until,
                "size_vram": size if gpus else 0,
                "context_length": entry.context_length,
                "gpus": gpus,  # modelctl's: device IDs its replicas hold (Ollama has no such field)
                "replicas": len(entry.replicas),
            }
        )
    return {"models": models}


def show(target: Target) -> dict[str, Any]:
    """``/api/show``: details, a subset of the header's keys, the chat template, parameters (an
    adapter's: its base's, the base as parent)."""
    entry = target.entry
    d = entry.details
    parameters = f"num_ctx {entry.context_length}" if entry.context_length else ""
    modelfile = f"# modelctl serves {entry.name} from its manifest ({entry.engine or 'engine unknown'})\n"
    if target.adapter is not None:
        modelfile += f"# {target.name}: a LoRA adapter of {entry.name}\n"
    return {
        "modelfile": modelfile,
        "parameters": parameters,
        "template": d.template if d is not None else "",
        "details": details(entry, target.adapter),
        "model_info": dict(d.info) if d is not None else {},
        "capabilities": capabilities(entry),
        "modified_at": rfc3339(entry.created),
    }


def capabilities(entry: ModelEndpoints) -> list[str]:
    """Ollama's ``capabilities`` from the model's task (an embedding model answers /api/embed only)
    and its vision; clients such as Open WebUI offer images and embeddings by them."""
    if entry.task == "embed":
        return ["embedding"]
    return ["completion", "vision"] if entry.vision else ["completion"]
