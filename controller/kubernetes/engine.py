"""One model on a cluster: a Deployment of identical engine pods, a headless Service that lists the
ready ones, and optionally an InferencePool (Gateway API Inference Extension) over them.

The container is the one the Docker controller would run: ``controller.engines.build_spec`` makes
the ContainerSpec (image, flags, port, health path, shm, env) and this module only translates it.
What the Docker controller decides itself is the cluster's here: GPUs are whole devices the NVIDIA
device plugin hands out (``nvidia.com/gpu``), cores and memory are scheduler requests, restarts and
rolls are the kubelet's and the Deployment controller's.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import PurePosixPath
from typing import Any

from controller.engines import build_spec, sets_own_threads
from controller.engines.common import HUB_CACHE_DIR
from controller.kubernetes import hubfiles, names
from controller.kubernetes.options import RenderOptions
from controller.manifests.envrefs import references
from controller.manifests.model import LoadedModel
from controller.placement.memory import CPU_OVERHEAD_BYTES, MiB, cpu_need
from controller.runtime.spec import ContainerSpec, Mount

# The images' own users: the official llama.cpp and vLLM images both run as root. llama-server needs
# nothing of root (it only reads its weights and serves a port: checked under podman), so it runs as
# nobody with a read-only root; vLLM writes caches under $HOME (/root/.cache/vllm), which as nobody is
# /nonexistent (checked in the image), so it keeps the image's user, with every capability dropped
# and no privilege escalation.
NON_ROOT_UID = 65534
RUNS_AS_NOBODY = {"llamacpp": True, "vllm": False}
# How long a replica may take to start: the manifest's load_timeout (2 min llama.cpp, 15 min vLLM by
# default), probed every STARTUP_PERIOD_S.
STARTUP_PERIOD_S = 10
# Once started: ready while /health answers; restarted when it has not answered for 30 s, as the
# Docker controller does.
READY_PERIOD_S = 5
LIVE_PERIOD_S = 10
LIVE_FAILURES = 3
# A GPU replica's host side: the engine process (CUDA libraries, torch, the server) beside weights
# that stream to the GPU; vLLM runs an API server and an engine core, each busy on a core.
GPU_REPLICA_CPUS = 2
# Docker's shm sizes ("2g") in Kubernetes quantities.
_DOCKER_UNITS = {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi"}


def container_spec(model: LoadedModel, options: RenderOptions) -> ContainerSpec:
    """The spec the engine module builds for one replica on a cluster: ``num_gpus`` GPUs (device
    IDs are the device plugin's, so 0..n-1 stand in), a GPU share only when the manifest gives a
    fraction, and for a llama.cpp CPU replica ``options.cpus`` threads."""
    manifest = model.manifest
    gpus = tuple(str(i) for i in range(manifest.num_gpus))
    share = manifest.gpu_memory if isinstance(manifest.gpu_memory, float) else None
    pin = not gpus and manifest.resolved_engine == "llamacpp" and not sets_own_threads(model)
    cpus = tuple(range(options.cpus)) if pin else ()
    return build_spec(model, 0, gpus, share if gpus else None, cpus=cpus)


def model_objects(
    model: LoadedModel, weights_root: PurePosixPath | None, options: RenderOptions
) -> list[dict[str, Any]]:
    """Deployment and headless Service of ``model`` (and its InferencePool when asked for and vLLM).
    ``weights_root``: the model root ``model.weights`` lies under (None for hub weights)."""
    spec = container_spec(model, options)
    objects = [deployment(model, spec, weights_root, options), service(model, spec, options)]
    if options.inference_pool and spec.engine == "vllm":
        objects.append(inference_pool(model, spec, options))
    return objects


def metadata(name: str, options: RenderOptions, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if options.namespace:
        meta["namespace"] = options.namespace
    meta["labels"] = labels
    meta.update(extra)
    return meta


def labels_of(model: LoadedModel, spec: ContainerSpec, options: RenderOptions) -> dict[str, str]:
    return names.model_labels(
        model.name,
        spec.engine,
        instance=options.instance,
        port=spec.port,
        max_concurrency=spec.max_concurrency,
    )


def deployment(
    model: LoadedModel, spec: ContainerSpec, weights_root: PurePosixPath | None, options: RenderOptions
) -> dict[str, Any]:
    """The Deployment: replicas from the manifest, a roll that never lowers serving capacity."""
    labels = labels_of(model, spec, options)
    template = pod_template(model, spec, weights_root, options, labels)
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:12]
    template["metadata"]["annotations"] = {names.SPEC_HASH: digest}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(
            names.object_name(model.name), options, labels, annotations={names.SPEC_HASH: digest}
        ),
        "spec": {
            "replicas": replica_count(model),
            "selector": {"matchLabels": names.selector(model.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": template,
        },
    }


def replica_count(model: LoadedModel) -> int:
    """``replicas`` for a fixed model; for one scaled on demand, its floor but at least one (no
    scale to zero on a cluster: notes.py says so, docs/kubernetes.md says what to use)."""
    manifest = model.manifest
    return min(max(manifest.min_count, 1), manifest.max_count)


def pod_template(
    model: LoadedModel,
    spec: ContainerSpec,
    weights_root: PurePosixPath | None,
    options: RenderOptions,
    labels: dict[str, str],
) -> dict[str, Any]:
    volumes, mounts = storage(spec, weights_root, options)
    container: dict[str, Any] = {
        "name": spec.engine,
        "image": spec.image,
        "args": list(spec.command),  # the image's entrypoint stays: llama-server, `vllm serve`
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "env": env_entries(spec.env, options.secret),
        "resources": resources(model, spec, options),
        **probes(spec, model.manifest.load_timeout_s),
        "securityContext": container_security(spec.engine),
        "volumeMounts": mounts,
    }
    if not container["env"]:
        del container["env"]
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,  # an engine never talks to the API server
        "enableServiceLinks": False,  # no <SERVICE>_PORT variables (VLLM_PORT would break vLLM)
        "securityContext": pod_security(spec.engine),
    }
    if hubfiles.has_hub_files(model):
        pod["securityContext"].setdefault("fsGroup", NON_ROOT_UID)  # the cache is writable for it
        pod["initContainers"] = [pull_container(model, options)]
    pod.update(containers=[container], volumes=volumes)
    if model.manifest.num_gpus:
        # GPU nodes are commonly tainted so that only GPU pods land there.
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"metadata": {"labels": labels}, "spec": pod}


def pull_container(model: LoadedModel, options: RenderOptions) -> dict[str, Any]:
    """The initContainer that pulls the hub files beside the weights into the hub-cache PVC and
    links them where the engine's flags name them (``hubfiles``): the modelctl image, as nobody
    with a read-only root, bounded; the token from the Secret, as the engine's env is."""
    container: dict[str, Any] = {
        "name": hubfiles.NAME,
        "image": options.gateway_image,
        "args": hubfiles.pull_args(model),
        "env": env_entries(hubfiles.pull_env(model), options.secret),
        "resources": hubfiles.RESOURCES,
        "securityContext": restricted_security(nobody=True),
        "volumeMounts": [{"name": "hub-cache", "mountPath": HUB_CACHE_DIR}],
    }
    if not container["env"]:
        del container["env"]
    return container


def env_entries(env: tuple[tuple[str, str], ...], secret: str) -> list[dict[str, Any]]:
    """The engine's environment. A manifest value that is exactly ``${NAME}`` becomes a reference to
    key NAME of the Secret ``secret``; one with references inside text gets them as Kubernetes'
    ``$(VAR)`` of helper variables taken from that Secret first. Values are never inlined."""
    helpers: dict[str, dict[str, Any]] = {}
    entries: list[dict[str, Any]] = []
    for name, value in env:
        refs = references(value)
        if re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", value):
            entries.append({"name": name, "valueFrom": secret_ref(secret, refs[0])})
            continue
        for ref in refs:
            helpers.setdefault(ref, {"name": helper(ref), "valueFrom": secret_ref(secret, ref)})
        entries.append({"name": name, "value": kube_value(value)})
    return [helpers[k] for k in sorted(helpers)] + entries


def secret_ref(secret: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": secret, "key": key}}


def helper(ref: str) -> str:
    return f"MODELCTL_SECRET_{ref}"


def kube_value(value: str) -> str:
    """A manifest value in Kubernetes' syntax: ``$$`` is a literal ``$`` (a ``$(`` escaped as
    ``$$(`` so Kubernetes does not expand it), ``${NAME}`` is ``$(MODELCTL_SECRET_NAME)``."""

    def convert(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return f"$({helper(match.group(1))})"

    out = re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}", convert, value.replace("$$(", "\0"))
    return out.replace("\0", "$$(")


def storage(
    spec: ContainerSpec, weights_root: PurePosixPath | None, options: RenderOptions
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts for the spec's mounts (weights and the files beside them read-only, hub
    cache read-write) and shm. The models claim is one volume, each file a subPath of it; with
    ``host_model_root`` each file is a hostPath volume of its own (weights, weights-1, ...)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    binds = 0
    for mount in spec.mounts:
        if mount.type == "volume":  # the hub cache: read-only unless the engine downloads into it
            volumes.append({"name": "hub-cache", "persistentVolumeClaim": {"claimName": options.cache_claim}})
            mounts.append({"name": "hub-cache", "mountPath": mount.target})
            if mount.read_only:
                mounts[-1]["readOnly"] = True
            continue
        name = "weights" if binds == 0 or not options.host_model_root else f"weights-{binds}"
        volume, volume_mount = weights_volume(mount, weights_root, options, name)
        if binds == 0 or options.host_model_root:
            volumes.append(volume)
        mounts.append(volume_mount)
        binds += 1
    if spec.shm_size:
        volumes.append(
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": quantity(spec.shm_size)}}
        )
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    return volumes, mounts


def weights_volume(
    mount: Mount, weights_root: PurePosixPath | None, options: RenderOptions, name: str = "weights"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A file under the model root (weights, a shard, a projector, a draft, an adapter): a subPath
    of the models claim, or (opt-in) the same path under ``host_model_root`` on the node, as the
    volume ``name``. Always read-only."""
    assert weights_root is not None  # host weights always come with their root
    relative = PurePosixPath(mount.source).relative_to(weights_root)
    is_file = relative.suffix.lower() in (".gguf", ".safetensors")
    volume_mount: dict[str, Any] = {"name": name, "mountPath": mount.target, "readOnly": True}
    if options.host_model_root:
        host = PurePosixPath(options.host_model_root) / relative
        kind = "File" if is_file else "Directory"
        return {"name": name, "hostPath": {"path": str(host), "type": kind}}, volume_mount
    volume_mount["subPath"] = str(relative)
    claim = {"claimName": options.models_claim, "readOnly": True}
    return {"name": name, "persistentVolumeClaim": claim}, volume_mount


def quantity(docker_size: str) -> str:
    """Docker's '2g' as Kubernetes' '2Gi' (Docker's k/m/g are powers of 1024)."""
    match = re.fullmatch(r"(\d+)([bkmg]?)", docker_size.strip().lower())
    if not match:
        raise ValueError(f"not a Docker size: {docker_size!r}")
    return f"{match.group(1)}{_DOCKER_UNITS[match.group(2)]}"


def mebibytes(n: int) -> str:
    return f"{math.ceil(n / MiB)}Mi"


def resources(model: LoadedModel, spec: ContainerSpec, options: RenderOptions) -> dict[str, Any]:
    """Requests from the memory estimate; GPUs as whole devices in limits (the device plugin's).

    A CPU replica requests what the Docker controller places it against (``cpu_need``: weights +
    KV cache + the engine's overhead) and ``options.cpus`` cores, with a CPU limit as large (its
    threads match it), and the memory limit its Docker container gets (``spec.memory_limit``: the
    estimate plus a margin; none when the weights cannot be sized, or when hub files beside them,
    pulled by the pod itself, are not here to size: the request is then a lower bound). A GPU
    replica requests host memory for the engine process only (its weights and KV cache are in GPU
    memory), no memory limit. Processes: a pod's pids limit is the kubelet's (podPidsLimit), not
    the manifest's.
    """
    manifest = model.manifest
    if manifest.num_gpus:
        memory = CPU_OVERHEAD_BYTES[manifest.resolved_engine]
        requests = {"cpu": str(GPU_REPLICA_CPUS), "memory": mebibytes(memory)}
        return {"requests": requests, "limits": {"nvidia.com/gpu": manifest.num_gpus}}
    requests = {"cpu": str(options.cpus), "memory": mebibytes(cpu_need(model))}
    limits = {"cpu": str(options.cpus)}
    if spec.memory_limit and not hubfiles.has_hub_files(model):  # else a lower bound (notes say so)
        limits["memory"] = mebibytes(spec.memory_limit)
    return {"requests": requests, "limits": limits}


def probes(spec: ContainerSpec, load_timeout_s: float) -> dict[str, Any]:
    """Startup for as long as the manifest lets a cold start take, then readiness and liveness on
    the engine's health path (never /v1/models). The port by number: podman kube play turns a
    named port into port 0 in the healthcheck it makes of the liveness probe."""
    check = {"path": spec.health_path, "port": spec.port}
    return {
        "startupProbe": {
            "httpGet": check,
            "periodSeconds": STARTUP_PERIOD_S,
            "failureThreshold": max(math.ceil(load_timeout_s / STARTUP_PERIOD_S), 1),
            "timeoutSeconds": 5,
        },
        "readinessProbe": {"httpGet": check, "periodSeconds": READY_PERIOD_S, "timeoutSeconds": 5},
        "livenessProbe": {
            "httpGet": check,
            "periodSeconds": LIVE_PERIOD_S,
            "failureThreshold": LIVE_FAILURES,
            "timeoutSeconds": 5,
        },
    }


def container_security(engine: str) -> dict[str, Any]:
    return restricted_security(nobody=RUNS_AS_NOBODY[engine])


def restricted_security(*, nobody: bool) -> dict[str, Any]:
    """No capabilities, no privilege escalation, seccomp on; ``nobody``: as nobody, read-only root."""
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if nobody:
        context.update(
            runAsNonRoot=True, runAsUser=NON_ROOT_UID, runAsGroup=NON_ROOT_UID, readOnlyRootFilesystem=True
        )
    return context


def pod_security(engine: str) -> dict[str, Any]:
    context: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if RUNS_AS_NOBODY[engine]:
        context.update(runAsNonRoot=True, fsGroup=NON_ROOT_UID)  # the hub cache is writable for it
    return context


def service(model: LoadedModel, spec: ContainerSpec, options: RenderOptions) -> dict[str, Any]:
    """Headless: its DNS name has one A record per *ready* pod, which the gateway resolves."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(names.object_name(model.name), options, labels_of(model, spec, options)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": names.selector(model.name),
            "ports": [{"name": "http", "port": spec.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def cache_claim(options: RenderOptions) -> dict[str, Any]:
    """The hub cache every replica downloads into (the modelctl-hub-cache volume on Docker):
    ReadWriteMany, since replicas on several nodes share it."""
    labels = {"app.kubernetes.io/part-of": names.PART_OF, "app.kubernetes.io/managed-by": names.MANAGED_BY}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(options.cache_claim, options, labels),
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": options.cache_size}},
        },
    }


def inference_pool(model: LoadedModel, spec: ContainerSpec, options: RenderOptions) -> dict[str, Any]:
    """An InferencePool (inference.networking.k8s.io/v1) over the model's pods, for an inference
    gateway whose endpoint picker (llm-d's EPP, a Service ``<name>-epp``) routes by KV cache and
    queue depth, reading vLLM's /metrics."""
    name = names.object_name(model.name)
    return {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": metadata(name, options, labels_of(model, spec, options)),
        "spec": {
            "selector": {"matchLabels": names.selector(model.name)},
            "targetPorts": [{"number": spec.port}],
            "endpointPickerRef": {
                "name": f"{name}-epp",
                "port": {"number": options.epp_port},
                "failureMode": "FailClose",
            },
        },
    }
