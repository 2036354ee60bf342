"""`modelctl render kubernetes`: every object valid (Kubernetes' own schemas, strict), the container
the engine modules build, secrets by reference, and the cluster's choices named in notes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.cli import main
from controller.engines import build_spec
from controller.gateway.tables.dns import parse_models
from controller.kubernetes.names import object_name

from .support import GGUF, REPO, by_kind, model_root, objects, render_dir, validate


def manifest(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "models"
    folder.mkdir(exist_ok=True)
    (folder / "m.yaml").write_text(text)
    return folder


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"namespace": "llm", "inference_pool": True},
        {"host_model_root": "/srv/models"},
    ],
    ids=["pvc", "namespace-pools", "host-path"],
)
@pytest.mark.parametrize("folder", ["examples", "models"])
def test_every_object_validates_strictly(folder: str, options: dict[str, object]) -> None:
    rendering = render_dir(REPO / folder, **options)
    kinds = {o["kind"] for o in objects(rendering)}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds
    for obj in objects(rendering):
        validate(obj)


def test_a_misspelt_field_fails_strict_validation() -> None:
    (deployment, *_) = by_kind(render_dir(REPO / "models"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(Exception, match="readinesProbe"):
        validate(deployment)


def test_inference_pool_for_vllm_models_only_and_valid_against_its_crd() -> None:
    pools = by_kind(render_dir(REPO / "examples", inference_pool=True), "InferencePool")
    names = [
        "model",
        object_name("qwen2.5-0.5b"),
        object_name("smollm2-lora-vllm"),
        object_name("tiny-vlm-vllm"),
    ]
    assert sorted(p["metadata"]["name"] for p in pools) == sorted(names)
    for pool in pools:
        validate(pool)
        assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    bad = dict(pools[0], spec={**pools[0]["spec"], "targetPort": 8000})
    with pytest.raises(AssertionError):
        validate(bad)


def test_the_container_is_the_engine_modules_own() -> None:
    rendering = render_dir(REPO / "models", model_root=model_root())
    (deployment,) = [d for d in by_kind(rendering, "Deployment") if d["metadata"]["name"] == "smollm2"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    from controller.manifests.loader import load_folder

    (model,) = load_folder(REPO / "models", model_roots=[model_root()])
    spec = build_spec(model, 0, cpus=(0, 1))
    assert container["args"] == list(spec.command)
    assert container["image"] == spec.image
    assert container["ports"][0]["containerPort"] == spec.port
    assert container["readinessProbe"]["httpGet"]["path"] == spec.health_path == "/health"
    mount = container["volumeMounts"][0]
    assert mount == {"name": "weights", "mountPath": spec.mounts[0].target, "readOnly": True, "subPath": GGUF}
    assert deployment["spec"]["replicas"] == 1  # models/smollm2.yaml: one CPU replica
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsNonRoot"] is True and context["seccompProfile"] == {"type": "RuntimeDefault"}
    # The memory estimate of the real GGUF (weights + KV cache + overhead), not just the overhead.
    requests = container["resources"]["requests"]
    assert requests["cpu"] == "2" and int(requests["memory"].removesuffix("Mi")) > 300


def test_gpu_vllm_model() -> None:
    rendering = render_dir(REPO / "examples")
    (deployment,) = [
        d for d in by_kind(rendering, "Deployment") if d["metadata"]["name"] == object_name("qwen2.5-0.5b")
    ]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert container["args"][:1] == ["Qwen/Qwen2.5-0.5B-Instruct"]
    assert "--tensor-parallel-size" in container["args"] and "--gpu-memory-utilization" in container["args"]
    assert "--enforce-eager" not in container["args"]
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 900
    shm = {v["name"]: v for v in pod["volumes"]}["shm"]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert {"name": "hub-cache", "persistentVolumeClaim": {"claimName": "modelctl-hub-cache"}} in pod[
        "volumes"
    ]
    assert by_kind(rendering, "PersistentVolumeClaim")[0]["spec"]["accessModes"] == ["ReadWriteMany"]
    # The seed: 2 GPUs, tensor parallel 2, its safetensors folder read-only from the models claim.
    (seed,) = [d for d in by_kind(rendering, "Deployment") if d["metadata"]["name"] == "model"]
    container = seed["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 2}
    assert container["args"][0] == "/models/model/to"
    assert container["volumeMounts"][0]["subPath"] == "path/to"


def test_secrets_by_reference_never_inline(tmp_path: Path) -> None:
    folder = manifest(
        tmp_path,
        "model: hf://org/repo:Q4\n"
        "env: {HF_TOKEN: '${HF_TOKEN}', AUTH: 'Bearer ${KEY}', PRICE: '$$5', X: '$$(a)'}\n",
    )
    rendering = render_dir(folder, secret="my-secrets")
    (deployment,) = [d for d in by_kind(rendering, "Deployment") if d["metadata"]["name"] == "repo"]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0] == {
        "name": "MODELCTL_SECRET_KEY",
        "valueFrom": {"secretKeyRef": {"name": "my-secrets", "key": "KEY"}},
    }
    by_name = {e["name"]: e for e in env}
    assert by_name["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "my-secrets", "key": "HF_TOKEN"}},
    }
    assert by_name["AUTH"]["value"] == "Bearer $(MODELCTL_SECRET_KEY)"
    assert by_name["PRICE"]["value"] == "$5"
    assert by_name["X"]["value"] == "$$(a)"  # Kubernetes' escape for a literal $(
    assert any("Secret my-secrets" in note for note in rendering.notes)
    validate(deployment)


def test_on_demand_models_get_one_replica_and_say_so() -> None:
    rendering = render_dir(REPO / "examples")
    (lazy,) = [d for d in by_kind(rendering, "Deployment") if d["metadata"]["name"] == "smollm2-lazy"]
    assert lazy["spec"]["replicas"] == 1
    assert any(
        n.startswith("smollm2-lazy: min_replicas 0 / max_replicas 2: rendered as replicas: 1")
        for n in rendering.notes
    )
    assert any("KEDA" in n for n in rendering.notes)


def test_the_gateway_reads_the_models_from_the_config_map() -> None:
    rendering = render_dir(REPO / "examples")
    (config,) = by_kind(rendering, "ConfigMap")
    models = parse_models(json.loads(config["data"]["models.json"]))
    qwen = {m.endpoints.name: m for m in models}["qwen2.5-0.5b"]
    assert qwen.endpoints.aliases == ("qwen",) and qwen.max_concurrency == 32 and qwen.port == 8000
    assert qwen.service == object_name("qwen2.5-0.5b")
    (gateway,) = [d for d in by_kind(rendering, "Deployment") if d["metadata"]["name"] == "modelctl-gateway"]
    pod = gateway["spec"]["template"]["spec"]
    assert gateway["spec"]["replicas"] == 2 and pod["automountServiceAccountToken"] is False
    assert {"name": "MODELCTL_GATEWAY_TABLE", "value": "dns"} in pod["containers"][0]["env"]
    services = {s["metadata"]["name"]: s for s in by_kind(rendering, "Service")}
    assert services[qwen.service]["spec"]["clusterIP"] == "None"
    assert by_kind(rendering, "PodDisruptionBudget")[0]["spec"]["minAvailable"] == 1


@pytest.mark.parametrize(
    ("model", "expected"),
    [("smollm2", "smollm2"), ("qwen2.5-0.5b", None), ("a_b", None), ("7b", None)],
)
def test_object_names_are_dns_labels_and_unique(model: str, expected: str | None) -> None:
    name = object_name(model)
    if expected:
        assert name == expected
    assert name[0].isalpha() and len(name) <= 63 and all(c.isalnum() or c == "-" for c in name)
    spelt = model.replace(".", "-").replace("_", "-")
    if spelt != model:
        assert object_name(spelt) != name  # 'a_b' and 'a-b' never share objects


def test_cli_writes_a_folder_and_names_the_notes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k8s"
    assert main(["render", "kubernetes", str(REPO / "examples"), "-o", str(out), "--namespace", "llm"]) == 0
    err = capsys.readouterr().err
    assert "note: smollm2-lazy: min_replicas 0" in err and f"kubectl apply -k {out}" in err
    assert (out / "kustomization.yaml").read_text().count("namespace: llm") == 1
    assert main(["render", "kubernetes", str(tmp_path / "missing")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
