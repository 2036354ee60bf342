"""Files beside the weights named as hf:// on a cluster: the pod's initContainer pulls them with
`modelctl pull --ref` into the hub-cache PVC (nobody, read-only root, bounded, the token from the
Secret), the engine's flags name their links there and the engine mounts the cache read-only; run
for real against the stand-in Hub, the initContainer's command leaves every file the engine's flags
name in place, chosen as the Docker controller would."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from controller.cli import main
from controller.hub.cache import HubCache
from controller.kubernetes.engine import NON_ROOT_UID
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from tests.hub.standin import StandInHub, beside_repos, serve, smollm2_repos

from .support import FIXTURES, GGUF, by_kind, model_root, render_dir, validate

DRAFT = "hf://stand-in/SmolLM2-135M-Instruct-GGUF:Q4_1"
LORAS = {"lora-a": "hf://test/smollm2-loras:a", "lora-b": "hf://test/smollm2-loras:b"}
CACHE = "/cache"


def folder_with(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "models"
    folder.mkdir(exist_ok=True)
    (folder / "m.yaml").write_text(text)
    return folder


def fixture_folder(tmp_path: Path) -> Path:
    return folder_with(tmp_path, (FIXTURES / "hub-files.yaml").read_text())


def pod_of(rendering: Any, name: str) -> dict[str, Any]:
    (deployment,) = [d for d in by_kind(rendering, "Deployment") if d["metadata"]["name"] == name]
    validate(deployment)  # initContainers included: strict, Kubernetes 1.37's schema
    return dict(deployment["spec"]["template"]["spec"])


def flag(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == name]


@pytest.mark.parametrize("root", [False, True], ids=["cluster-root", "local-root"])
def test_the_pod_pulls_them_in_an_init_container(tmp_path: Path, root: bool) -> None:
    options: dict[str, Any] = {"gateway_image": "registry.example/modelctl:1.2", "secret": "hub-secrets"}
    if root:
        options["model_root"] = model_root()
    rendering = render_dir(fixture_folder(tmp_path), **options)
    pod = pod_of(rendering, "smol-hub")
    (init,) = pod["initContainers"]
    assert init["name"] == "pull-hub-files" and init["image"] == "registry.example/modelctl:1.2"
    assert init["args"] == [
        "pull", "--hub-cache", CACHE, "--engine", "llamacpp", "--ref", f"draft={DRAFT}",
        *(a for name, ref in LORAS.items() for a in ("--ref", f"adapter:{name}={ref}")),
    ]  # fmt: skip
    # The token from the Secret, as the engine's; nothing else of the engine's env.
    assert init["env"] == [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub-secrets", "key": "HF_TOKEN"}}}
    ]
    security = init["securityContext"]
    assert (security["runAsNonRoot"], security["runAsUser"], security["readOnlyRootFilesystem"]) == (
        True,
        NON_ROOT_UID,
        True,
    )
    assert security["capabilities"] == {"drop": ["ALL"]} and security["allowPrivilegeEscalation"] is False
    assert set(init["resources"]["limits"]) == {"cpu", "memory"}
    assert init["volumeMounts"] == [{"name": "hub-cache", "mountPath": CACHE}]  # it writes there

    (engine,) = pod["containers"]
    args = engine["args"]
    (draft,) = flag(args, "-md")
    loras = flag(args, "--lora-scaled")
    assert draft.startswith(f"{CACHE}/modelctl/links/") and draft.endswith(".gguf")
    assert len(loras) == 2 and all(lora.startswith(f"{CACHE}/modelctl/links/") for lora in loras)
    assert len({draft, *loras}) == 3  # one link per reference
    assert {"name": "hub-cache", "mountPath": CACHE, "readOnly": True} in engine["volumeMounts"]
    assert "not-pulled" not in " ".join(args)
    claims = [v for v in pod["volumes"] if v["name"] == "hub-cache"]
    assert claims == [{"name": "hub-cache", "persistentVolumeClaim": {"claimName": "modelctl-hub-cache"}}]
    (claim,) = by_kind(rendering, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "modelctl-hub-cache"
    # The files are not here to size: the request is a lower bound, so no memory limit, and a note.
    assert "memory" not in engine["resources"]["limits"]
    assert any(
        note.startswith("smol-hub: draft, adapter:lora-a, adapter:lora-b: hf:// files, pulled by the pod's "
                        "initContainer (pull-hub-files, image registry.example/modelctl:1.2)")
        and "the memory request does not count them" in note
        for note in rendering.notes
    )  # fmt: skip


async def test_the_init_container_s_command_leaves_what_the_engine_s_flags_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered initContainer's args, run here against the stand-in Hub with the cache at a
    temporary folder: every /cache path the engine's flags name is the file the Docker controller
    would pull for the same manifest."""
    models = model_root()
    standin = StandInHub(smollm2_repos(models) | beside_repos(models))
    runner, url = await serve(standin)
    try:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("HF_TOKEN", "hf_token_from_the_secret")
        pod = pod_of(render_dir(fixture_folder(tmp_path), model_root=models), "smol-hub")
        cache = tmp_path / "cache"
        args = [str(cache) if arg == CACHE else arg for arg in pod["initContainers"][0]["args"]]
        assert await asyncio.to_thread(main, args) == 0
    finally:
        await runner.cleanup()
    assert set(standin.authorizations) == {"Bearer hf_token_from_the_secret"}
    engine_args = pod["containers"][0]["args"]

    def here(path: str) -> Path:
        return cache / Path(path.removesuffix(":0")).relative_to(CACHE)

    (draft,) = flag(engine_args, "-md")
    assert here(draft).read_bytes() == (models / GGUF).read_bytes()
    lora_a, lora_b = flag(engine_args, "--lora-scaled")
    assert here(lora_a).read_bytes() == (models / "smollm2-lora-a.gguf").read_bytes()
    assert here(lora_b).read_bytes() == (models / "smollm2-lora-b.gguf").read_bytes()
    # The Docker controller, given the same manifest, finds them cached: the same files.
    manifest = ModelManifest.model_validate(
        {
            "name": "smol-hub",
            "model": GGUF,
            "draft": DRAFT,
            "adapters": [{"name": n, "path": p} for n, p in LORAS.items()],
        }
    )
    pulled = HubCache(cache).lookup_model(LoadedModel(manifest, "m.yaml", None, None))
    assert pulled is not None
    assert (cache / str(pulled.of("draft"))).resolve() == here(draft).resolve()
    assert (cache / str(pulled.of("adapter:lora-b"))).resolve() == here(lora_b).resolve()


def test_vllm_adapters_and_draft_are_snapshot_folders_and_the_pod_gets_a_group_for_the_cache(
    tmp_path: Path,
) -> None:
    folder = folder_with(
        tmp_path,
        "name: qwen\nmodel: qwen-folder\nengine: vllm\ndraft: hf://org/qwen-draft\n"
        "adapters: [{name: sql, path: 'hf://org/sql-lora'}]\n"
        "env: {HF_TOKEN: '${HF_TOKEN}', HF_ENDPOINT: 'http://mirror.example', VLLM_LOGGING_LEVEL: INFO}\n",
    )
    pod = pod_of(render_dir(folder), "qwen")
    (init,) = pod["initContainers"]
    assert init["args"][3:] == [
        "--engine",
        "vllm",
        "--ref",
        "draft=hf://org/qwen-draft",
        "--ref",
        "adapter:sql=hf://org/sql-lora",
    ]
    assert [e["name"] for e in init["env"]] == ["HF_ENDPOINT", "HF_TOKEN"]  # the puller's only
    assert pod["securityContext"]["fsGroup"] == NON_ROOT_UID  # vLLM runs as root; the puller does not
    args = pod["containers"][0]["args"]
    (module,) = flag(args, "--lora-modules")
    assert module.startswith(f"sql={CACHE}/modelctl/links/") and not module.endswith(".gguf")
    (config,) = flag(args, "--speculative-config")
    assert f'"model":"{CACHE}/modelctl/links/' in config


def test_hub_weights_stay_the_engine_s_download_beside_pulled_files(tmp_path: Path) -> None:
    folder = folder_with(
        tmp_path, f"name: smol\nmodel: {DRAFT}\ndraft: {DRAFT}\n---\nname: plain\nmodel: {DRAFT}\n"
    )
    rendering = render_dir(folder)
    assert "initContainers" not in pod_of(rendering, "plain")  # hub weights alone: the engine's own
    pod = pod_of(rendering, "smol")
    (engine,) = pod["containers"]
    assert flag(engine["args"], "-hf") == [DRAFT.removeprefix("hf://")]  # llama.cpp downloads its weights
    (draft,) = flag(engine["args"], "-md")
    assert draft.startswith(f"{CACHE}/modelctl/links/")
    assert engine["volumeMounts"] == [{"name": "hub-cache", "mountPath": CACHE}]  # writable: it downloads
    assert [v["name"] for v in pod["volumes"]] == ["hub-cache"]
    assert [c["name"] for c in pod["initContainers"]] == ["pull-hub-files"]
    assert "env" not in pod["initContainers"][0]  # no token in the manifest: a public repo


def test_the_cli_renders_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    shutil.copy(FIXTURES / "hub-files.yaml", tmp_path / "m.yaml")
    assert main(["render", "kubernetes", str(tmp_path / "m.yaml"), "-o", str(out)]) == 0
    assert "note: smol-hub: draft, adapter:lora-a, adapter:lora-b: hf:// files" in capsys.readouterr().err
    assert (out / "persistentvolumeclaim-modelctl-hub-cache.yaml").is_file()
