"""A starting replica's progress, read from real engine logs (tests/fixtures/logs/, recorded from the
llama-server and vLLM containers here): each row cuts a log where the engine had printed a given
line, keeps the last 50 lines (what the reconciler reads) and names the phase it shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.engines.progress import progress

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "logs"
TAIL = 50  # the reconciler's tail


def cut(name: str, through: str | None, *, nth: int = 1) -> str:
    """The log ``name`` up to and including the ``nth`` line containing ``through`` (None: all of
    it), as its last TAIL lines."""
    text = (LOGS / name).read_text(encoding="utf-8")
    if through is not None:
        at = -1
        for _ in range(nth):
            at = text.index(through, at + 1)
        end = text.find("\n", at)
        text = text[: end + 1 if end >= 0 else len(text)]
    return "\n".join(text.splitlines()[-TAIL:])


@pytest.mark.parametrize(
    ("log", "through", "phase"),
    [
        ("llamacpp-start.log", "warning: consult docs/build.md", ""),  # nothing of its own yet
        ("llamacpp-start.log", "llama_server: initializing ...", "initializing"),
        ("llamacpp-start.log", "security: no API key", "initializing"),
        ("llamacpp-start.log", "load_model: loading model", "loading weights"),
        ("llamacpp-start.log", "llama threadpool init", "warming up"),
        ("llamacpp-start.log", "load_model: initializing, n_slots", "warming up"),
        ("llamacpp-start.log", "llama_server: model loaded", "starting the server"),
        ("llamacpp-start.log", None, "starting the server"),
        # A download by URL prints nothing off a terminal: the replica is "initializing" meanwhile.
        ("llamacpp-model-url.log", "security: no API key", "initializing"),
        ("llamacpp-model-url.log", "load_model: loading model", "loading weights"),
    ],
)
def test_llamacpp_phases(log: str, through: str | None, phase: str) -> None:
    assert progress("llamacpp", cut(log, through)) == phase


@pytest.mark.parametrize(
    ("log", "through", "phase"),
    [
        ("vllm-start-eager.log", "Triton not available", ""),  # Python imports, nothing said yet
        ("vllm-start-eager.log", "non-default args:", "starting the engine"),
        ("vllm-start-eager.log", "Initializing a V1 LLM engine", "starting the engine"),
        ("vllm-start-eager.log", "Starting to load model", "loading weights"),
        ("vllm-start-eager.log", "Initializing model took", "loading weights"),
        ("vllm-start-eager.log", "Loading safetensors checkpoint shards:   0%", "loading weights 0%"),
        ("vllm-start-eager.log", "Loading safetensors checkpoint shards: 100%", "loading weights 100%"),
        ("vllm-start-eager.log", "Loading weights took", "warming up"),
        ("vllm-start-eager.log", "CPU KV cache size", "warming up"),
        ("vllm-start-eager.log", "init engine (profile, create kv cache", "starting the API server"),
        ("vllm-start-eager.log", "00:46:55 [compilation.py", "starting the API server"),  # says nothing
        ("vllm-start-eager.log", "Starting vLLM server on", "starting the API server"),
        ("vllm-start-eager.log", "Application startup complete", "starting the API server"),
        ("vllm-compile.log", "Warming up model for the compilation", "compiling"),
        ("vllm-compile.log", "Using LBHNC KV cache layout", "warming up"),
        # huggingface_hub's bar, where it is drawn (TQDM_POSITION=-1): its \r updates are lines too.
        ("hf-download-tqdm.log", "model.safetensors:  43%", "downloading weights 43%"),
        ("hf-download-tqdm.log", "model.safetensors:   0%", "downloading weights 0%"),
    ],
)
def test_vllm_phases(log: str, through: str | None, phase: str) -> None:
    assert progress("vllm", cut(log, through)) == phase


@pytest.mark.parametrize(
    ("line", "phase"),
    [
        # GPU-only phases, as vLLM 0.32's log calls write them (vllm/compilation/backends.py,
        # vllm/v1/worker/gpu_model_runner.py); no GPU here to record them on.
        ("[backends.py:1167] Dynamo bytecode transform time: 5.21 s", "compiling"),
        ("[backends.py:399] Compiling a graph for compile range (1, 8192) takes 9.80 s", "compiling"),
        ("Capturing CUDA graphs (decode, FULL):  45%|████▌     | 30/67", "capturing CUDA graphs 45%"),
        ("[gpu_model_runner.py:6582] Graph capturing finished in 12 secs, took 0.52 GiB", "warming up"),
        ("[gpu_model_runner.py:5150] Model loading took 0.25 GiB memory and 1.2 seconds", "warming up"),
    ],
)  # fmt: skip
def test_vllm_gpu_phases_from_its_log_calls(line: str, phase: str) -> None:
    before = "(APIServer pid=1) INFO 12-02 00:59:00 [model.py:733] Resolved architecture: X"
    assert progress("vllm", f"{before}\n(EngineCore pid=1) INFO 12-02 01:00:00 {line}\n") == phase


def test_a_phase_is_the_newest_recognised_line() -> None:
    eager = (LOGS / "vllm-start-eager.log").read_text(encoding="utf-8")
    assert progress("vllm", eager) == "starting the API server"
    # The same lines read by the other engine's markers say nothing.
    assert progress("llamacpp", cut("vllm-start-eager.log", "Loading weights took")) == ""


@pytest.mark.parametrize("engine", ["sglang", ""])
def test_an_unknown_engine_or_an_empty_log_is_unknown(engine: str) -> None:
    assert progress(engine, (LOGS / "llamacpp-start.log").read_text(encoding="utf-8")) == ""
    assert progress("llamacpp", "") == "" and progress("vllm", "\r\n\n") == ""
