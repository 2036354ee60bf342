"""What a starting replica is doing, read from its engine's own output: "downloading weights 42%",
"loading weights", "compiling", "warming up", ...

A replica can take minutes between its container starting and its health check passing (a hub
download, vLLM's imports and compilation, CUDA graphs), and "Starting" alone does not say whether
it is stuck. The engines say what they do in their logs; this reads the last recognised line of a
log tail (the newest phase wins, so lines are scanned from the end) and returns a short phrase,
with the percentage where the engine prints one. Unknown output gives "". Pure: the reconciler
reads the tail (``runtime.logs``) and passes it in.

The markers are lines these engines were seen printing here (tests/fixtures/logs/, recorded from
the real llama-server and vLLM 0.32 CPU containers) or, for GPU-only phases, their log calls in
vLLM's source. Neither engine prints a download percentage without a terminal, and replica
containers have none: llama-server draws its bar only on a TTY (common/download.cpp), so a
llama.cpp download shows as "initializing"; vLLM 0.32 hands huggingface_hub a disabled progress
bar, so its download shows as "loading weights" until the shards load, with their percentage.
huggingface_hub's own bar (recorded with TQDM_POSITION=-1) is recognised where it does appear.
"""

from __future__ import annotations

import re

from controller.manifests import engines

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# (pattern, phrase): the phrase may use the pattern's named groups ({pct}). Checked in order for
# each line, newest line first.
Markers = tuple[tuple[re.Pattern[str], str], ...]


def _markers(*pairs: tuple[str, str]) -> Markers:
    return tuple((re.compile(pattern), phrase) for pattern, phrase in pairs)


HF_DOWNLOAD = (
    # huggingface_hub's per-file bar (hf_hub_download), drawn on a terminal or with TQDM_POSITION=-1:
    # "(…)-Instruct/resolve/main/model.safetensors:  43%|████▎     | 115M/269M [00:03<00:04, 32.7MB/s]"
    r"\.(?:safetensors|bin|pt|pth|gguf):\s+(?P<pct>\d+)%\|",
    "downloading weights {pct}%",
)

LLAMACPP = _markers(
    (r"llama_server: (?:model loaded|listening on )", "starting the server"),
    (r"load_model: initializing, n_slots|llama threadpool init", "warming up"),
    (r"load_model: loading model ", "loading weights"),
    (r"llama_server: initializing", "initializing"),
)

SERVING = "starting the API server"

VLLM = _markers(
    (r"Application startup complete|Starting vLLM (?:API )?server on|Available routes are", SERVING),
    (r"init engine \(profile, create kv cache, warmup model\) took", SERVING),
    (r"Graph capturing finished", "warming up"),
    (r"Capturing CUDA graphs[^:]*:\s+(?P<pct>\d+)%", "capturing CUDA graphs {pct}%"),
    (r"Capturing CUDA graph", "capturing CUDA graphs"),
    (r"torch\.compile takes|Compiling a graph for|Dynamo bytecode transform time", "compiling"),
    (r"Warming up model for the compilation", "compiling"),
    (r"Loading weights took|Model loading took|KV cache", "warming up"),
    (r"Loading safetensors checkpoint shards:\s+(?P<pct>\d+)%", "loading weights {pct}%"),
    (r"Starting to load model|Initializing model took", "loading weights"),
    HF_DOWNLOAD,
    (r"Time spent downloading weights", "loading weights"),
    (r"Initializing a V1 LLM engine|non-default args:|Resolved architecture", "starting the engine"),
)

MARKERS: dict[str, Markers] = {engines.LLAMACPP: LLAMACPP, engines.VLLM: VLLM}


def progress(engine: str, log_tail: str) -> str:
    """The phase the newest recognised line of ``log_tail`` shows, e.g. "loading weights 42%";
    "" for an engine or output it does not know. Raises nothing."""
    markers = MARKERS.get(engine, ())
    for line in reversed(lines(log_tail)):
        for pattern, phrase in markers:
            match = pattern.search(line)
            if match is not None:
                return phrase.format(**match.groupdict())
    return ""


def lines(log_tail: str) -> list[str]:
    """The log's lines without terminal escapes; a progress bar's ``\\r`` updates are lines too."""
    return [line for line in re.split(r"[\r\n]+", ANSI.sub("", log_tail)) if line.strip()]
