"""Why did a replica fail? Known engine and Docker messages turned into one line a user can act on.

Engines print pages of logs; the user needs the one line that matters and what to do about it.
``explain`` matches the tail of a container's output (or a Docker error) against a table of known
failures, most specific first, and falls back to the last error-looking line.

A replica the Docker engine stopped while shutting down (the engine's or the host's) did not
crash: ``stopped_by_engine`` says so instead of quoting a stray line from its log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from controller.reconcile.lifecycle import EngineCause


@dataclass(frozen=True, slots=True)
class KnownFailure:
    pattern: re.Pattern[str]
    message: str  # may use the pattern's named groups


def known(pattern: str, message: str) -> KnownFailure:
    return KnownFailure(re.compile(pattern, re.IGNORECASE | re.MULTILINE), message)


KNOWN_FAILURES = (
    known(
        r"CUDA out of memory|OutOfMemoryError|cudaMalloc failed: out of memory|"
        r"ggml_backend_cuda_buffer_type_alloc_buffer: allocating .* failed",
        "CUDA out of memory: lower context_length or max_batch_size, or set more gpu_memory / num_gpus",
    ),
    known(
        r"could not select device driver .* with capabilities: \[\[gpu\]\]",
        "this Docker engine has no NVIDIA container runtime: GPU replicas cannot start here",
    ),
    known(
        r"failed to open GGUF file '(?P<path>[^']+)' \((?P<why>[^)]+)\)",
        "weights not readable: {path} ({why})",
    ),
    known(r"invalid magic characters: .*expected 'GGUF'", "weights are not a GGUF file (bad magic)"),
    known(
        r"unknown model architecture: '(?P<arch>[^']+)'",
        "unsupported model architecture '{arch}' for this llama.cpp build",
    ),
    known(
        r"Model architectures \[(?P<arch>[^\]]+)\] are not supported",
        "unsupported model architecture {arch} for this vLLM",
    ),
    known(
        r"(?:No such file or directory|does not appear to have a file named) ?:? ?'?"
        r"(?P<path>[^'\n]*config\.json)",
        "weights folder incomplete: {path} not found (vLLM needs config.json beside the safetensors)",
    ),
    known(r"Error while deserializing header|HeaderTooLarge", "weights are not valid safetensors"),
    known(
        r"couldn't bind HTTP server socket.*port: (?P<port>\d+)|address already in use",
        "port in use: the engine could not listen (another process holds the port)",
    ),
    known(r"exec format error", "image built for another CPU architecture (exec format error)"),
    known(
        r"InvalidCxxCompiler|No working C\+\+ compiler found",
        "vLLM's torch.compile needs a C++ compiler the image lacks: add --enforce-eager to args "
        "(modelctl adds it for num_gpus: 0 unless args choose compilation)",
    ),
    known(
        r"Worker failed with error '(?P<error>[^\n]{1,200}?)'(?:, please|\s*$)", "vLLM worker failed: {error}"
    ),
    known(r"EngineCore failed to start", "vLLM engine failed to start (see `modelctl logs`)"),
)

ERROR_LINE = re.compile(r"error|failed|fatal|exception|traceback", re.IGNORECASE)
MAX_LINE = 200


def explain(output: str, *, exit_code: int | None = None) -> str:
    """One line saying why a replica failed, from its log tail or a Docker error message."""
    return known_failure(output) or fallback(output, exit_code)


def known_failure(output: str) -> str | None:
    """The one-line explanation of the first known failure in ``output``, or None.

    Also used on replicas that still run: an engine that hit a fatal error but hangs instead of
    exiting (vLLM does) is recognised from its logs without waiting for the start timeout.
    """
    for failure in KNOWN_FAILURES:
        match = failure.pattern.search(output)
        if match:
            groups = {k: (v or "").strip() for k, v in match.groupdict().items()}
            return failure.message.format(**groups)
    return None


SIGNAL_EXITS = {
    137: "killed (exit code 137, SIGKILL): stopped from outside, or the host ran out of memory",
    139: "crashed (exit code 139, SIGSEGV)",
    134: "aborted (exit code 134, SIGABRT)",
}


# Exit codes of a replica the engine stopped: llama-server exits 0 on SIGTERM (measured in its
# container: 0.2 s after `docker stop`); 143 is a SIGTERM the process leaves to its default
# action; 137 is the SIGKILL dockerd sends after the container's stop timeout (10 s).
SHUTDOWN_EXITS = frozenset({0, 143})
KILLED_BY_ENGINE_EXITS = SHUTDOWN_EXITS | {137}


def stopped_by_engine(exit_code: int | None, *, oom_killed: bool, cause: EngineCause | None) -> str | None:
    """The reason for a replica the engine stopped, or None if it may have crashed.

    ``cause`` says when it stopped (``EngineRecord.cause``): "outage" (while the engine was going
    away or away), "unwatched" (before this controller started, e.g. both went down with the
    host). A SIGKILL counts only in an outage: outside one it may be the host's OOM killer.
    """
    if oom_killed or exit_code is None:
        return None
    if cause == "outage" and exit_code in KILLED_BY_ENGINE_EXITS:
        return f"stopped by the Docker engine's shutdown (exit code {exit_code}, not a crash); started again"
    if cause == "unwatched" and exit_code in SHUTDOWN_EXITS:
        return (
            f"stopped before this controller started (exit code {exit_code}, not a crash: "
            "the Docker engine's or the host's shutdown, or a docker stop); started again"
        )
    return None


def fallback(output: str, exit_code: int | None) -> str:
    if exit_code in SIGNAL_EXITS:
        return SIGNAL_EXITS[exit_code]
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if ERROR_LINE.search(line)]
    last = (errors or lines or [""])[-1][:MAX_LINE]
    code = f"exited with code {exit_code}" if exit_code is not None else "failed"
    return f"{code}: {last}" if last else code
