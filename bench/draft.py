"""Speculative decoding on llama.cpp: SmolLM2 with itself as draft vs without, same run.

Both replicas are built by modelctl's own engine code (``build_spec``: the draft flags a manifest's
``draft`` gets, `-md ... --spec-type draft-simple --spec-draft-n-max 8 --spec-draft-n-min 1`) and
started through its Docker runtime, on the same cores with as many threads, one request at a time
(only one replica is busy at any moment). Each request decodes greedily (temperature 0) exactly
``--max-tokens`` tokens (``ignore_eos``) from one of a few prompts; rounds alternate the order
(A B, B A, ...) so drift on a shared machine hits both alike.

Reported per setup: tokens/s over the wall time of the requests (what a client sees), llama-server's
own decode rate (``timings.predicted_per_second``), and for the draft the acceptance
(``timings.draft_n_accepted / draft_n``). SmolLM2 drafting for itself accepts every token, so this
measures the ceiling of what drafting gives on this CPU, not a real small-for-large pairing.

    python bench/draft.py [--rounds 3] [--max-tokens 128] [--cpus 0,1] [--json FILE]

Needs a Docker engine, the llama.cpp image and SmolLM2 (`make images model`). Prints a table and
writes bench/results/draft.json. Traffic goes only to the two local replicas; every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from controller.engines import build_spec
from controller.manifests.document import ModelManifest
from controller.manifests.model import ExtraFiles, LoadedModel
from controller.runtime.docker import DockerRuntime, connect, observe, remove_all

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "draft.json"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SETUPS = ("plain", "draft")
PROMPTS = (
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle stays upright.",
    "Describe a walk through a forest in autumn.",
    "List some things to pack for a week at the sea, with reasons.",
)
READY_TIMEOUT_S = 120


def model(model_root: Path, setup: str) -> LoadedModel:
    doc: dict[str, Any] = {
        "name": f"smol-{setup}",
        "model": GGUF,
        "max_batch_size": 1,
        "context_length": 1024,
    }
    files = ExtraFiles()
    if setup == "draft":
        doc["draft"] = GGUF
        files = ExtraFiles(draft=model_root / GGUF)
    return LoadedModel(ModelManifest.model_validate(doc), "bench", None, model_root / GGUF, files=files)


def start(runtime: DockerRuntime, loaded: LoadedModel, cpus: tuple[int, ...]) -> str:
    """Start one replica; its base URL once /health answers 200."""
    spec = build_spec(loaded, 0, cpus=cpus)
    print(f"{loaded.name}: {' '.join(spec.command)}", flush=True)
    container_id = runtime.start(spec)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        attrs = runtime.inspect(container_id)
        observed = observe(attrs, runtime.network) if attrs else None
        if observed is None or observed.state in ("exited", "dead"):
            raise SystemExit(f"{loaded.name} stopped:\n{runtime.logs(container_id)}")
        url = f"http://{observed.ip}:{spec.port}"
        try:
            if observed.ip and requests.get(f"{url}/health", timeout=2).status_code == 200:
                return url
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{loaded.name} not ready within {READY_TIMEOUT_S}s")


def generate(url: str, prompt: str, max_tokens: int) -> dict[str, float]:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "ignore_eos": True,
    }
    started = time.monotonic()
    resp = requests.post(f"{url}/v1/chat/completions", json=body, timeout=300)
    wall = time.monotonic() - started
    resp.raise_for_status()
    answer = resp.json()
    timings = answer["timings"]
    return {
        "wall_s": wall,
        "tokens": answer["usage"]["completion_tokens"],
        "decode_tok_s": timings["predicted_per_second"],
        "draft_n": timings.get("draft_n", 0),
        "draft_n_accepted": timings.get("draft_n_accepted", 0),
    }


def summary(rows: list[dict[str, float]]) -> dict[str, float | None]:
    drafted = sum(r["draft_n"] for r in rows)
    return {
        "requests": len(rows),
        "tokens": sum(r["tokens"] for r in rows),
        "tok_s_wall": sum(r["tokens"] for r in rows) / sum(r["wall_s"] for r in rows),
        "decode_tok_s_median": statistics.median(r["decode_tok_s"] for r in rows),
        "draft_n": drafted,
        "acceptance": sum(r["draft_n_accepted"] for r in rows) / drafted if drafted else None,
    }


def table(results: dict[str, dict[str, float | None]]) -> str:
    header = ("requests", "tokens", "tok/s wall", "decode tok/s", "acceptance")
    lines = [f"{'setup':6} " + " ".join(f"{h:>12}" for h in header)]
    for setup, s in results.items():
        acceptance = "-" if s["acceptance"] is None else f"{s['acceptance']:.3f}"
        lines.append(
            f"{setup:6} {s['requests']:>12.0f} {s['tokens']:>12.0f} {s['tok_s_wall']:>12.1f} "
            f"{s['decode_tok_s_median']:>12.1f} {acceptance:>12}"
        )
    base = results["plain"]["tok_s_wall"] or 1.0
    lines.append(f"draft / plain, tok/s wall: {(results['draft']['tok_s_wall'] or 0) / base:.2f}x")
    return "\n".join(lines)


def measure(urls: dict[str, str], args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    rows: dict[str, list[dict[str, float]]] = {s: [] for s in SETUPS}
    for setup in SETUPS:  # warm-up, not counted
        generate(urls[setup], PROMPTS[0], 16)
    for round_ in range(args.rounds):
        for setup in SETUPS if round_ % 2 == 0 else tuple(reversed(SETUPS)):
            for prompt in PROMPTS:
                rows[setup].append(generate(urls[setup], prompt, args.max_tokens))
            last = summary(rows[setup][-len(PROMPTS) :])
            print(f"round {round_ + 1} {setup}: {last['tok_s_wall']:.1f} tok/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--cpus", type=lambda s: tuple(int(x) for x in s.split(",")), default=(0, 1))
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    model_root = Path(os.environ.get("MODELCTL_MODEL_ROOT", REPO / "models-data")).absolute()
    instance = f"bench-{uuid.uuid4().hex[:8]}"
    client = connect()
    runtime = DockerRuntime(client, instance=instance, network=f"modelctl-{instance}")
    load_before = os.getloadavg()
    try:
        runtime.ensure_network()
        urls = {setup: start(runtime, model(model_root, setup), args.cpus) for setup in SETUPS}
        rows = measure(urls, args)
    finally:
        remove_all(client, instance)
        for network in client.networks.list(names=[f"modelctl-{instance}"]):
            network.remove()
    results = {setup: summary(r) for setup, r in rows.items()}
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cores": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg()}
    arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.json.write_text(
        json.dumps({"machine": machine, "args": arguments, "results": results, "requests": rows}, indent=2)
        + "\n"
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
