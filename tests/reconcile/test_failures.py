"""Failure reasons: real engine output (captured from llama-server 11434) -> one actionable line."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.reconcile.failures import explain

LOGS = Path(__file__).parent / "engine_logs"


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        (
            "llamacpp-weights-missing.log",
            "weights not readable: /models/smollm2/missing.gguf (No such file or directory)",
        ),
        ("llamacpp-not-gguf.log", "weights are not a GGUF file (bad magic)"),
        ("llamacpp-unknown-arch.log", "unsupported model architecture 'mamba9' for this llama.cpp build"),
        (
            "llamacpp-port-in-use.log",
            "port in use: the engine could not listen (another process holds the port)",
        ),
    ],
)
def test_real_llamacpp_failures_are_explained(log: str, reason: str) -> None:
    assert explain((LOGS / log).read_text(), exit_code=1) == reason


def test_a_real_vllm_without_a_compiler_names_the_fix() -> None:
    # The last 50 lines (what the controller reads) of the vLLM 0.32.0 CPU stand-in started without
    # --enforce-eager: the engine fails, then hangs, so there is no exit code.
    log = (LOGS / "vllm-no-compiler.log").read_text()
    assert explain(log) == (
        "vLLM's torch.compile needs a C++ compiler the image lacks: add --enforce-eager to args "
        "(modelctl adds it for num_gpus: 0 unless args choose compilation)"
    )


@pytest.mark.parametrize(
    ("output", "starts"),
    [
        # Wording of upstream PyTorch / vLLM / Docker messages (not produced on this CPU machine).
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "CUDA out of memory"),
        (
            'Error response from daemon: could not select device driver "" with capabilities: [[gpu]]',
            "this Docker engine has no NVIDIA container runtime",
        ),
        (
            "ValueError: Model architectures ['FooForCausalLM'] are not supported for now.",
            "unsupported model architecture 'FooForCausalLM' for this vLLM",
        ),
        (
            "safetensors_rust.SafetensorError: Error while deserializing header: HeaderTooLarge",
            "weights are not valid",
        ),
    ],
)
def test_known_messages(output: str, starts: str) -> None:
    assert explain(output).startswith(starts)


def test_unknown_failures_fall_back_to_the_last_error_line() -> None:
    output = "loading\nRuntimeError: something odd happened\nshutting down\n"
    assert explain(output, exit_code=3) == "exited with code 3: RuntimeError: something odd happened"
    assert explain("", exit_code=1) == "exited with code 1"
    assert explain("W slot: n_past was set\n", exit_code=137).startswith("killed (exit code 137, SIGKILL)")


def test_a_hung_vllm_is_recognised_from_its_logs() -> None:
    from controller.reconcile.failures import known_failure

    log = (
        "(EngineCore pid=80) ERROR ... RuntimeError: Worker failed with error 'ValueError: No "
        "available memory for the cache blocks.', please check the stack trace above for the root "
        "cause\nEngineCore failed to start.\n"
    )
    assert known_failure(log) == "vLLM worker failed: ValueError: No available memory for the cache blocks."
    assert known_failure("INFO loading weights\nINFO ready soon\n") is None


def test_a_vllm_without_a_compiler_names_the_fix() -> None:
    from controller.reconcile.failures import known_failure

    log = (
        "(EngineCore pid=80) ERROR ... RuntimeError: Worker failed with error 'InvalidCxxCompiler: "
        "No working C++ compiler found in torch._inductor.config.cpp.cxx: (None, 'g++')', please "
        "check the stack trace above for the root cause\nEngineCore failed to start.\n"
    )
    reason = known_failure(log)
    assert reason is not None and reason.startswith("vLLM's torch.compile needs a C++ compiler")
    assert "add --enforce-eager to args" in reason
