"""The gateway on a cluster: a Deployment (two replicas, a PodDisruptionBudget), a Service, and the
ConfigMap that tells its DNS table source which models exist.

There is no controller on a cluster: the gateway finds ready replicas by resolving each model's
headless Service (``controller.gateway.tables.dns``), so it needs no API token and no Docker socket.
What it cannot learn from DNS (names, aliases, adapters, vision, balancing, max_concurrency, load
timeout) is in the ConfigMap: a JSON document of the models without replicas, plus each model's
Service and port.
"""

from __future__ import annotations

import json
from typing import Any

from controller.kubernetes import names
from controller.kubernetes.engine import container_spec, metadata
from controller.kubernetes.options import RenderOptions
from controller.manifests.model import LoadedModel
from controller.weights.describe import takes_images

PORT = 8080
CONFIG_DIR = "/etc/modelctl/gateway"
MODELS_FILE = "models.json"
GATEWAY_UID = 65534  # as compose runs it: nobody, read-only root, /tmp the one writable place


def models_document(models: list[LoadedModel], options: RenderOptions) -> str:
    """The JSON the gateway's DNS source reads (``controller.gateway.tables.dns.load_models``)."""
    entries = []
    for model in models:
        manifest = model.manifest
        spec = container_spec(model, options)
        entries.append(
            {
                "name": model.name,
                "aliases": list(manifest.aliases),
                "balancing": manifest.balancing,
                "load_timeout_s": manifest.load_timeout_s,
                "max_concurrency": spec.max_concurrency,
                "service": names.object_name(model.name),
                "port": spec.port,
                # What the gateway routes and checks by (as the endpoint table carries them):
                # adapters by name in the engine's order, and whether images are taken.
                "engine": manifest.resolved_engine,
                "adapters": [adapter.name for adapter in manifest.adapters],
                "vision": takes_images(model),
                "task": model.task,
            }
        )
    return json.dumps({"models": entries}, indent=2, sort_keys=True) + "\n"


def gateway_objects(models: list[LoadedModel], options: RenderOptions) -> list[dict[str, Any]]:
    labels = names.gateway_labels(options.instance)
    return [
        config_map(models, options, labels),
        deployment(options, labels),
        service(options, labels),
        disruption_budget(options, labels),
    ]


def config_map(models: list[LoadedModel], options: RenderOptions, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(f"{names.GATEWAY}-models", options, labels),
        "data": {MODELS_FILE: models_document(models, options)},
    }


def deployment(options: RenderOptions, labels: dict[str, str]) -> dict[str, Any]:
    health = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 3}
    container = {
        "name": "gateway",
        "image": options.gateway_image,
        "args": ["gateway"],
        "env": [
            {"name": "MODELCTL_GATEWAY_TABLE", "value": "dns"},
            {"name": "MODELCTL_GATEWAY_MODELS", "value": f"{CONFIG_DIR}/{MODELS_FILE}"},
        ],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": health,
        "livenessProbe": {**health, "periodSeconds": 10, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": GATEWAY_UID,
            "runAsGroup": GATEWAY_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "models", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    spread = {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": names.gateway_selector()},
    }
    pod = {
        "automountServiceAccountToken": False,  # DNS only: no API token
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "topologySpreadConstraints": [spread],
        "containers": [container],
        "volumes": [
            {"name": "models", "configMap": {"name": f"{names.GATEWAY}-models"}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(names.GATEWAY, options, labels),
        "spec": {
            "replicas": options.gateway_replicas,
            "selector": {"matchLabels": names.gateway_selector()},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def service(options: RenderOptions, labels: dict[str, str]) -> dict[str, Any]:
    """The one endpoint clients use (ClusterIP: put an Ingress, a Gateway or a LoadBalancer before it)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(names.GATEWAY, options, labels),
        "spec": {
            "selector": names.gateway_selector(),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def disruption_budget(options: RenderOptions, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(names.GATEWAY, options, labels),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": names.gateway_selector()}},
    }
