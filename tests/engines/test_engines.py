"""Engine container specs: image, flags, read-only weights, GPUs by device ID, no host ports."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.engines import build_spec
from controller.errors import EngineError
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.runtime.docker import create_kwargs


def loaded(weights: Path | None, **doc: object) -> LoadedModel:
    return LoadedModel(ModelManifest.model_validate(doc), "m.yaml", 1, weights)


def test_llamacpp_spec_serves_the_gguf_read_only() -> None:
    model = loaded(
        Path("/srv/models/smol.gguf"),
        model="smol.gguf",
        name="smol",
        aliases=["s"],
        max_batch_size=3,
        context_length=1024,
        args=["--threads", "2"],
        env={"LLAMA_LOG": "1"},
    )
    spec = build_spec(model, 1)
    assert spec.image == "modelctl/llamacpp:server"
    assert spec.command == (
        "-m",
        "/models/smol/smol.gguf",
        "--alias",
        "smol,s",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--no-webui",
        "--parallel",
        "3",
        "--threads-http",
        "11",
        "-c",
        "3072",
        "-ngl",
        "0",
        "--jinja",
        "--reasoning-format",
        "deepseek",
        "--threads",
        "2",
    )
    (mount,) = spec.mounts
    assert (mount.source, mount.target, mount.read_only) == (
        "/srv/models/smol.gguf",
        "/models/smol/smol.gguf",
        True,
    )
    assert spec.gpus is None and spec.max_concurrency == 3 and spec.health_path == "/health"


def test_llamacpp_with_gpus_offloads_all_layers_to_its_devices() -> None:
    spec = build_spec(loaded(Path("/m/x.gguf"), model="x.gguf", num_gpus=2), 0, ("2", "3"))
    assert spec.gpus is not None and spec.gpus.device_ids == ("2", "3")
    assert spec.command[spec.command.index("-ngl") + 1] == "999"


def test_vllm_spec_mounts_the_folder_and_sets_tensor_parallel(tmp_path: Path) -> None:
    weights = tmp_path / "qwen" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"")
    model = loaded(
        weights,
        model="qwen/model.safetensors",
        name="qwen",
        aliases=["q"],
        num_gpus=2,
        max_batch_size=16,
        context_length=4096,
    )
    spec = build_spec(model, 0, ("0", "1"))
    assert spec.command == (
        "/models/qwen/qwen",
        "--served-model-name",
        "qwen",
        "q",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--max-num-seqs",
        "16",
        "--tensor-parallel-size",
        "2",
        "--max-model-len",
        "4096",
    )
    assert spec.mounts[0].source == str(weights.parent) and spec.mounts[0].read_only
    assert spec.shm_size == "2g"


@pytest.mark.parametrize(
    ("num_gpus", "args", "eager"),
    [
        (0, [], True),  # CPU: torch.compile needs a C++ compiler and minutes at every start
        (0, ["--dtype", "bfloat16"], True),
        (0, ["--enforce-eager"], False),  # already there: not repeated
        (0, ["--no-enforce-eager"], False),
        (0, ["--compilation-config", '{"mode": 0}'], False),
        (0, ['--compilation-config={"mode": 3}'], False),
        (0, ["--compilation-config.mode=3"], False),
        (0, ["-cc", '{"mode": 3}'], False),
        (0, ["-cc.mode=3"], False),
        (0, ["-O3"], False),
        (0, ["-O", "0"], False),
        (0, ["--optimization-level", "2"], False),
        (0, ["--optimization-level=2"], False),
        (0, ["--enforce-eager-ish"], True),  # not the flag
        (1, [], False),  # GPU: vLLM's default (compiled, CUDA graphs)
        (2, ["--dtype", "half"], False),
    ],
)
def test_cpu_vllm_replicas_run_eager_unless_args_choose_compilation(
    tmp_path: Path, num_gpus: int, args: list[str], eager: bool
) -> None:
    (tmp_path / "smol").mkdir()
    model = loaded(tmp_path / "smol", model="smol", engine="vllm", num_gpus=num_gpus, args=args)
    gpus = tuple(str(i) for i in range(num_gpus))
    command = build_spec(model, 0, gpus).command
    assert command.count("--enforce-eager") == (1 if eager or "--enforce-eager" in args else 0)
    assert list(command[len(command) - len(args) :]) == args  # the manifest's args come last


def test_unchecked_weights_are_never_mounted() -> None:
    with pytest.raises(EngineError, match="not checked against the model roots"):
        build_spec(loaded(None, model="x.gguf"), 0)


def test_spec_hash_changes_with_anything_that_shapes_the_container() -> None:
    base = loaded(Path("/m/x.gguf"), model="x.gguf")
    other = loaded(Path("/m/x.gguf"), model="x.gguf", max_batch_size=8)
    assert build_spec(base, 0).spec_hash() == build_spec(base, 0).spec_hash()
    assert build_spec(base, 0).spec_hash() != build_spec(other, 0).spec_hash()
    assert build_spec(base, 0).spec_hash() != build_spec(base, 0, ("0",)).spec_hash()


def test_docker_create_arguments_are_least_privilege() -> None:
    spec = build_spec(loaded(Path("/m/x.gguf"), model="x.gguf", num_gpus=1), 0, ("1",))
    kwargs = create_kwargs(spec, "default", "modelctl")
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["security_opt"] == ["no-new-privileges"]
    assert "ports" not in kwargs and "privileged" not in kwargs and "volumes" not in kwargs
    assert kwargs["network"] == "modelctl"
    assert kwargs["labels"]["io.modelctl.managed"] == "true"
    assert kwargs["labels"]["io.modelctl.spec-hash"] == spec.spec_hash()
    (request,) = kwargs["device_requests"]
    assert request["DeviceIDs"] == ["1"] and request["Capabilities"] == [["gpu"]]


@pytest.mark.parametrize(
    ("doc", "engine", "source", "env"),
    [
        (
            {"model": "hf://bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M"},
            "llamacpp",
            ("-hf", "bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M"),
            ("LLAMA_CACHE", "/cache/llama.cpp"),
        ),
        (
            {"model": "hf://Qwen/Qwen2.5-0.5B-Instruct"},
            "vllm",
            ("Qwen/Qwen2.5-0.5B-Instruct",),
            ("HF_HOME", "/cache/huggingface"),
        ),
    ],
)
def test_hub_references_download_into_the_cache_volume(
    doc: dict[str, object], engine: str, source: tuple[str, ...], env: tuple[str, str]
) -> None:
    model = loaded(None, **doc)
    spec = build_spec(model, 0)
    assert spec.engine == engine
    assert spec.command[: len(source)] == source
    assert env in spec.env
    (mount,) = spec.mounts
    assert (mount.type, mount.source, mount.target, mount.read_only) == (
        "volume",
        "modelctl-hub-cache",
        "/cache",
        False,
    )


@pytest.mark.parametrize(
    ("weights", "words"),
    [("hf://no-repo", "not a hub reference"), ("hf://a/b c", "not a hub reference")],
)
def test_malformed_hub_references_are_refused(weights: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        ModelManifest.model_validate({"model": weights})


def test_idle_checks_read_each_engine_s_own_load() -> None:
    from controller.engines import llamacpp, vllm

    busy_slots = '[{"id": 0, "is_processing": false}, {"id": 1, "is_processing": true}]'
    assert not llamacpp.is_idle(busy_slots)
    assert llamacpp.is_idle(busy_slots.replace("true", "false"))
    metrics = (
        "# HELP vllm:num_requests_running Number of requests.\n"
        'vllm:num_requests_running{engine="0",model_name="q"} 1.0\n'
        'vllm:num_requests_waiting{engine="0",model_name="q"} 0.0\n'
    )
    assert not vllm.is_idle(metrics)
    assert vllm.is_idle(metrics.replace("} 1.0", "} 0.0"))


def test_a_pinned_cpu_replica_gets_its_cores_and_one_thread_each() -> None:
    """llama-server would start a thread per host core; pinned to two, it runs two."""
    gguf = loaded(Path("/srv/models/smol.gguf"), model="smol.gguf")
    spec = build_spec(gguf, 0, cpus=(2, 3))
    assert spec.cpuset == (2, 3) and spec.command[-5:-3] == ("--threads", "2")
    assert create_kwargs(spec, "default", "net")["cpuset_cpus"] == "2,3"
    assert "cpuset_cpus" not in create_kwargs(build_spec(gguf, 0), "default", "net")
    vllm = loaded(Path("/srv/models/smol"), model="smol")
    env = dict(build_spec(vllm, 0, cpus=(0, 1, 2, 5)).env)
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0-2,5"


def test_a_manifest_that_sets_its_threads_is_left_unpinned() -> None:
    from controller.engines import sets_own_threads

    assert sets_own_threads(loaded(None, model="hf://o/r:Q4", args=["--threads", "4"]))
    assert sets_own_threads(loaded(None, model="hf://o/r:Q4", args=["-t", "4"]))
    assert sets_own_threads(loaded(None, model="hf://o/r", env={"VLLM_CPU_OMP_THREADS_BIND": "0-3"}))
    assert not sets_own_threads(loaded(None, model="hf://o/r:Q4", args=["--threads-batch", "9"]))
