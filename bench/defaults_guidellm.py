"""Defaults are the product: does the example stack serve one user as well as one bare llama-server?

`make up` serves models/smollm2.yaml through the compose stack. On a CPU host a single user must get
at least what ONE llama-server of the same model on all cores gives, at every concurrency from 1
to 8: with two one-core replicas (the old example) one stream got half the machine (guidellm 0.8.1:
0.87 vs 1.53 req/s, TTFT p50 690 vs 371 ms at concurrency 1).

This runs guidellm 0.8.1, unchanged, against two targets in the same run:

- ``stack``: `docker compose up` of compose.yaml with the checkout's models/ (its own project,
  ports, networks and controller instance), through the gateway, as a user gets it;
- ``one``: one llama-server container of the same image and weights with llama-server's own
  defaults (every core of the host, its default slots and context), published on loopback.

Concurrency points (1, 2, 4, 8 streams; 128 prompt tokens, 32 out, synthetic text) run one at a time
for ``--seconds`` each, with fresh prompts per point (the same for both targets), the two targets
interleaved (the order alternates per point and round) so that drift and the other engineers' load
hit both alike; the target not measured sits idle. The load average before each point is recorded
beside it.

    .cache/guidellm-venv/bin/pip install guidellm==0.8.1      # its own venv, once
    python3 bench/defaults_guidellm.py [--seconds 25] [--rounds 1] [--streams 1,2,4,8]

Offline (ENVIRONMENT.md): HF_HUB_OFFLINE=1 and the tokenizer of the SmolLM2 safetensors folder
(`make model`); GUIDELLM__MAX_WORKER_PROCESSES=2. Needs the stack's images (`make stack-images`) and
weights. Prints a table and writes bench/results/defaults_guidellm.json (with every point's raw
guidellm numbers). Stdlib only; Docker through its CLI. Everything it starts is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "defaults_guidellm.json"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMACPP_IMAGE = "modelctl/llamacpp:server"
MODEL = "smollm2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sh(*args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def answers(base: str, timeout: float = 300) -> float:
    """Seconds until ``base`` answers a chat completion (the replicas start after `up` returns)."""
    started = time.monotonic()
    body = json.dumps({"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
    while time.monotonic() - started < timeout:
        request = urllib.request.Request(
            f"{base}/v1/chat/completions", body.encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                if reply.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise SystemExit(f"{base} gave no chat completion within {timeout:.0f}s")


class Stack:
    """The compose stack of the checkout (compose.yaml + models/), under its own names."""

    def __init__(self, model_root: str, suffix: str) -> None:
        self.port = free_port()
        self.instance = f"bench-{suffix}"
        self.manifests = tempfile.mkdtemp(prefix="defaults-bench-")
        shutil.copytree(REPO / "models", self.manifests, dirs_exist_ok=True)
        self.env = {
            **os.environ,
            "MODELCTL_MANIFESTS": self.manifests,
            "MODELCTL_MODEL_ROOT": model_root,
            "MODELCTL_NETWORK": f"modelctl-bench-{suffix}",
            "MODELCTL_CONTROL_NETWORK": f"modelctl-bench-{suffix}-control",
            "MODELCTL_EGRESS_NETWORK": f"modelctl-bench-{suffix}-egress",
            "MODELCTL_INSTANCE": self.instance,
            "MODELCTL_PORT": str(self.port),
            "MODELCTL_API_PORT": str(free_port()),
        }
        project = f"modelctl-bench-{suffix}"
        self.compose = ["docker", "compose", "-f", str(REPO / "compose.yaml"), "-p", project]
        self.url = f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        sh(*self.compose, "up", "-d", env=self.env)

    def replicas(self) -> list[dict[str, Any]]:
        """The replicas the controller started: name, cpuset and llama-server's arguments."""
        ids = sh("docker", "ps", "-q", "--filter", f"label=io.modelctl.instance={self.instance}").split()
        if not ids:
            return []
        found = json.loads(sh("docker", "inspect", *ids))
        return [
            {
                "name": c["Name"].lstrip("/"),
                "cpuset": c["HostConfig"].get("CpusetCpus", ""),
                "args": c["Config"].get("Cmd") or [],
            }
            for c in found
        ]

    def down(self) -> None:
        sh(*self.compose, "down", "-v", "-t", "5", env=self.env, check=False)
        shutil.rmtree(self.manifests, ignore_errors=True)


class One:
    """One llama-server container of the same image and weights, llama-server's own defaults."""

    def __init__(self, model_root: str, suffix: str) -> None:
        self.port = free_port()
        self.name = f"modelctl-bench-{suffix}-one"
        self.model_root = model_root
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = ["-m", f"/models/{GGUF}", "--host", "0.0.0.0", "--port", "8080", "--alias", MODEL]

    def up(self) -> None:
        sh(
            "docker", "run", "-d", "--name", self.name, "-p", f"127.0.0.1:{self.port}:8080",
            "-v", f"{self.model_root}:/models:ro", LLAMACPP_IMAGE, *self.args,
        )  # fmt: skip

    def down(self) -> None:
        sh("docker", "rm", "-f", self.name, check=False)


def guidellm(
    binary: str, target: str, streams: int, seconds: int, tokenizer: str, out: Path, seed: int
) -> dict[str, Any]:
    """One guidellm run at ``streams`` concurrent streams; its JSON report. ``seed`` picks the
    synthetic prompts: a new one per point, so no server answers a prompt it has cached (with one
    seed for all, llama-server's prompt cache made later points' TTFT ~15 ms)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GUIDELLM__MAX_WORKER_PROCESSES": "2"}
    backend = {"kind": "openai_http", "target": target, "model": MODEL}
    done = subprocess.run(
        [
            binary, "run",
            "--backend", json.dumps(backend),
            "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
            "--data", "kind=synthetic_text,prompt_tokens=128,output_tokens=32",
            "--seed", f"kind=static,value={seed}",
            "--profile", json.dumps({"kind": "concurrent", "streams": [streams]}),
            "--constraint", f"kind=max_duration,seconds={seconds}",
            "--output", f"kind=json,path={out}",
            "--disable-progress",
        ],
        env=env, capture_output=True, text=True, timeout=seconds + 300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"guidellm against {target} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return dict(json.loads(out.read_text()))


def pick(node: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def summary(report: dict[str, Any]) -> dict[str, float | None]:
    """req/s, TTFT p50 and ITL p50 (ms) of a one-benchmark guidellm report."""
    (bench,) = report["benchmarks"]
    metrics = bench["metrics"]

    def stat(name: str, field: str) -> float | None:
        value = pick(metrics, name, "successful", field)
        if value is None:
            value = pick(metrics, name, "successful", "percentiles", field)
        return None if value is None else float(value)

    done = pick(metrics, "request_totals", "successful")
    errors = pick(metrics, "request_totals", "errored")
    return {
        "req_per_s": stat("requests_per_second", "mean"),
        "ttft_p50_ms": stat("time_to_first_token_ms", "median"),
        "itl_p50_ms": stat("inter_token_latency_ms", "median"),
        "tokens_per_s": stat("output_tokens_per_second", "mean"),
        "requests": None if done is None else float(done),
        "errors": None if errors is None else float(errors),
    }


def table(points: list[dict[str, Any]]) -> str:
    rows = ["streams  target  req/s  TTFT p50 ms  ITL p50 ms  load1", "-" * 56]
    for p in sorted(points, key=lambda p: (p["streams"], p["target"], p["round"])):
        s = p["summary"]

        def f(v: float | None, spec: str) -> str:
            return "-" if v is None else format(v, spec)

        rows.append(
            f"{p['streams']:>7}  {p['target']:<6}  {f(s['req_per_s'], '5.2f')}  "
            f"{f(s['ttft_p50_ms'], '11.0f')}  {f(s['itl_p50_ms'], '10.1f')}  {p['load1']:.2f}"
        )
    return "\n".join(rows)


def ratios(points: list[dict[str, Any]], streams: list[int]) -> dict[str, dict[str, float | None]]:
    """stack / one per concurrency, medians over the rounds: req/s (higher is better) and TTFT p50
    (lower is better)."""
    out: dict[str, dict[str, float | None]] = {}
    for n in streams:

        def ratio(key: str, n: int = n) -> float | None:
            def mean(target: str) -> float:
                values = [p["summary"][key] for p in points if p["streams"] == n and p["target"] == target]
                return float(statistics.median([v for v in values if v is not None] or [0.0]))

            below = mean("one")
            return round(mean("stack") / below, 3) if below > 0 else None

        out[str(n)] = {"req_per_s": ratio("req_per_s"), "ttft_p50": ratio("ttft_p50_ms")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=25, help="per concurrency point and target")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--streams", default="1,2,4,8")
    parser.add_argument("--guidellm", default=str(REPO / ".cache" / "guidellm-venv" / "bin" / "guidellm"))
    root = os.environ.get("MODELCTL_MODEL_ROOT", str(REPO / "models-data"))
    parser.add_argument("--model-root", default=root)
    parser.add_argument("--tokenizer", default=None, help="default: MODEL_ROOT/smollm2-safetensors")
    args = parser.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    if not 1 <= args.seconds <= 600 or not 1 <= args.rounds <= 10 or not all(1 <= s <= 64 for s in streams):
        raise SystemExit("--seconds 1-600, --rounds 1-10, --streams each 1-64")
    tokenizer = args.tokenizer or str(Path(args.model_root) / "smollm2-safetensors")
    for needed in (args.guidellm, str(Path(args.model_root) / GGUF), tokenizer):
        if not Path(needed).exists():
            raise SystemExit(f"missing {needed} (see this script's docstring)")

    suffix = uuid.uuid4().hex[:6]
    stack, one = Stack(args.model_root, suffix), One(args.model_root, suffix)
    points: list[dict[str, Any]] = []
    try:
        stack.up()
        one.up()
        waited = {"stack": answers(stack.url), "one": answers(one.url)}
        replicas = stack.replicas()
        print(f"stack replicas: {replicas}\nready after {waited}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                for i, n in enumerate(streams):
                    order = [("stack", stack.url), ("one", one.url)]
                    if (i + r) % 2:
                        order.reverse()
                    for target, url in order:
                        load1 = os.getloadavg()[0]
                        out = Path(tmp) / "out.json"
                        seed = 1000 * (r + 1) + n  # the same prompts for both targets at a point
                        report = guidellm(args.guidellm, url, n, args.seconds, tokenizer, out, seed)
                        point = {"round": r, "streams": n, "target": target, "load1": round(load1, 2)}
                        point["summary"] = summary(report)
                        points.append(point)
                        print(json.dumps(point), flush=True)
    finally:
        one.down()
        stack.down()
    result = {
        "what": "guidellm 0.8.1, concurrent streams, 128 prompt / 32 output tokens, synthetic text",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cores": os.cpu_count(),
        "seconds_per_point": args.seconds,
        "rounds": args.rounds,
        "targets": {
            "stack": {"how": "compose.yaml + models/ through the gateway", "replicas": replicas},
            "one": {"how": "one llama-server container, llama-server's defaults", "args": one.args},
        },
        "points": points,
        "stack_over_one": ratios(points, streams),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(table(points))
    print("stack / one:", json.dumps(result["stack_over_one"]))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
