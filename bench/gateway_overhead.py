"""What the gateway costs on the request path, next to nginx and a bare aiohttp proxy. Run by hand.

    python bench/gateway_overhead.py [--duration 5] [--out bench/results/gateway_overhead.json]

Upstreams (fast, local, 127.0.0.1 only): nginx answering a fixed chat.completion JSON, and
bench/sse_upstream.py streaming CHUNKS events DELAY ms apart. Each target is measured at
concurrency 1, 16, 64, 256: ``direct`` (the upstream itself), ``gateway`` (modelctl, all features on:
API key, metrics, prefix affinity, usage parsing), ``nginx`` (reverse proxy, one worker,
proxy_buffering off, upstream keepalive) and ``bare`` (bench/bare_proxy.py, the floor). Proxies are
pinned to core 0, upstreams and load to core 1 (taskset). JSON load comes from wrk; streams from
bench/stream_load.py. CPU per request is read from /proc/<pid>/stat. Needs the Debian packages nginx
and wrk. Prints tables and writes JSON; never asserts timings. ``uptime`` is recorded with the result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONCURRENCY = (1, 16, 64, 256)
TARGETS = ("direct", "gateway", "nginx", "bare")
PORTS = {
    "up_json": 18401,
    "up_sse": 18402,
    "gateway": 18410,
    "nginx_json": 18411,
    "nginx_sse": 18412,
    "bare_json": 18413,
    "bare_sse": 18414,
}
CHUNKS, DELAY_MS = 20, 50
KEY = "bench-key"
BODY = {
    "model": "json",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}],
}
ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1764120000,
    "model": "json",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello!"}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}

UPSTREAM_NGINX = """
worker_processes 1; daemon off; pid {dir}/up.pid; error_log stderr warn;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port} backlog=4096;
    location / {{ default_type application/json; return 200 '{answer}'; }} }} }}
"""
PROXY_NGINX = """
worker_processes 1; daemon off; pid {dir}/px.pid; error_log stderr warn;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_requests 1000000;
  upstream json_up {{ server 127.0.0.1:{up_json}; keepalive 512; }}
  upstream sse_up {{ server 127.0.0.1:{up_sse}; keepalive 512; }}
  proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off;
  server {{ listen 127.0.0.1:{json}; location / {{ proxy_pass http://json_up; }} }}
  server {{ listen 127.0.0.1:{sse}; location / {{ proxy_pass http://sse_up; }} }} }}
"""
WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""


def cores() -> tuple[str, str]:
    """(proxy core, load core); both "0" on a one-core machine."""
    return ("0", "1") if (os.cpu_count() or 1) >= 2 else ("0", "0")


def start(args: list[str], core: str, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        ["taskset", "-c", core, *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
    )


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its children (nginx: master and worker)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    ticks = 0
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text: str) -> dict[str, float]:
    """Requests/s, p50/p99 latency (ms), requests and errors from wrk's --latency output."""
    result: dict[str, float] = {"errors": 0.0}
    result["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    result["requests"] = float(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", text, re.MULTILINE)
        result[f"p{pct}_ms"] = float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")
    for pattern in (
        r"Non-2xx or 3xx responses: (\d+)",
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
    ):
        match = re.search(pattern, text)
        if match:
            result["errors"] += sum(float(g) for g in match.groups())
    return result


def run_wrk(url: str, concurrency: int, duration: float, script: Path, load_core: str) -> dict[str, float]:
    cmd = [
        "taskset",
        "-c",
        load_core,
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{duration:g}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    return parse_wrk(
        subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    )


def run_streams(url: str, concurrency: int, duration: float, load_core: str) -> dict[str, float]:
    cmd = [
        "taskset",
        "-c",
        load_core,
        sys.executable,
        str(HERE / "stream_load.py"),
        url,
        str(concurrency),
        f"{duration:g}",
        str(CHUNKS),
        KEY,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration + 120).stdout
    return json.loads(out)  # type: ignore[no-any-return]


@contextlib.contextmanager
def servers(work: Path) -> Iterator[dict[str, int]]:
    """Start upstreams and proxies; yield target -> pid to meter; stop them all on exit."""
    proxy_core, load_core = cores()
    (work / "up.conf").write_text(
        UPSTREAM_NGINX.format(dir=work, port=PORTS["up_json"], answer=json.dumps(ANSWER))
    )
    (work / "px.conf").write_text(
        PROXY_NGINX.format(
            dir=work,
            up_json=PORTS["up_json"],
            up_sse=PORTS["up_sse"],
            json=PORTS["nginx_json"],
            sse=PORTS["nginx_sse"],
        )
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    py = sys.executable
    up, sse = f"http://127.0.0.1:{PORTS['up_json']}", f"http://127.0.0.1:{PORTS['up_sse']}"
    procs = {
        "up_json": start(
            [nginx, "-e", "stderr", "-p", str(work), "-c", str(work / "up.conf")], load_core, work / "up.log"
        ),
        "up_sse": start(
            [py, str(HERE / "sse_upstream.py"), str(PORTS["up_sse"]), str(CHUNKS), str(DELAY_MS)],
            load_core,
            work / "sse.log",
        ),
        "gateway": start(
            [py, str(HERE / "serve_gateway.py"), str(PORTS["gateway"]), up, sse],
            proxy_core,
            work / "gateway.log",
        ),
        "nginx": start(
            [nginx, "-e", "stderr", "-p", str(work), "-c", str(work / "px.conf")], proxy_core, work / "px.log"
        ),
        "bare_json": start(
            [py, str(HERE / "bare_proxy.py"), str(PORTS["bare_json"]), up], proxy_core, work / "bare_json.log"
        ),
        "bare_sse": start(
            [py, str(HERE / "bare_proxy.py"), str(PORTS["bare_sse"]), sse], proxy_core, work / "bare_sse.log"
        ),
    }
    try:
        for port in PORTS.values():
            wait_port(port)
        yield {name: p.pid for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def url_of(target: str, kind: str) -> str:
    port = {
        "direct": PORTS[f"up_{kind}"],
        "gateway": PORTS["gateway"],
        "nginx": PORTS[f"nginx_{kind}"],
        "bare": PORTS[f"bare_{kind}"],
    }[target]
    return f"http://127.0.0.1:{port}/v1/chat/completions"


def meter_pid(target: str, kind: str, pids: dict[str, int]) -> int | None:
    return {"direct": None, "gateway": pids["gateway"], "nginx": pids["nginx"], "bare": pids[f"bare_{kind}"]}[
        target
    ]


def measure(duration: float, work: Path) -> dict[str, object]:
    _, load_core = cores()
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=json.dumps(BODY), key=KEY))
    results: dict[str, list[dict[str, object]]] = {"json": [], "stream": []}
    with servers(work) as pids:
        for target in TARGETS:  # warm up connections and code paths
            run_wrk(url_of(target, "json"), 16, 1, script, load_core)
        for kind in ("json", "stream"):
            for c in CONCURRENCY:
                for target in TARGETS:
                    pid = meter_pid(target, "sse" if kind == "stream" else "json", pids)
                    before = cpu_seconds(pid) if pid else 0.0
                    if kind == "json":
                        row: dict[str, object] = run_wrk(
                            url_of(target, "json"), c, duration, script, load_core
                        )
                        count = float(row["requests"])  # type: ignore[arg-type]
                    else:
                        row = run_streams(url_of(target, "sse"), c, duration, load_core)
                        count = float(row["streams"])  # type: ignore[arg-type]
                    used = cpu_seconds(pid) - before if pid else None
                    row |= {
                        "target": target,
                        "concurrency": c,
                        "cpu_ms_per_request": used * 1000 / count if used is not None and count else None,
                    }
                    results[kind].append(row)
                    print(f"  {kind:6} c={c:<3} {target:8} {row}", flush=True)
    return results


def added(rows: list[dict[str, object]], key: str) -> None:
    direct = {r["concurrency"]: r[key] for r in rows if r["target"] == "direct"}
    for r in rows:
        r[f"added_{key}"] = float(r[key]) - float(direct[r["concurrency"]])  # type: ignore[arg-type]


def fmt(value: object, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_tables(results: dict[str, list[dict[str, object]]]) -> None:
    added(results["json"], "p50_ms")
    added(results["json"], "p99_ms")
    added(results["stream"], "ttfb_p50_ms")
    print("\nJSON chat.completion (wrk, 1 thread)")
    print(
        f"{'c':>4} {'target':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} "
        f"{'cpu ms/req':>10} {'errors':>6}"
    )
    for r in results["json"]:
        print(
            f"{r['concurrency']:>4} {r['target']:8} {fmt(r['rps'], 0):>9} "
            f"{fmt(r['p50_ms']):>8} {fmt(r['p99_ms']):>8} "
            f"{fmt(r['added_p50_ms']):>8} {fmt(r['added_p99_ms']):>8} {fmt(r['cpu_ms_per_request']):>10} "
            f"{fmt(r['errors'], 0):>6}"
        )
    print(f"\nSSE streams ({CHUNKS} chunks, {DELAY_MS} ms apart)")
    print(
        f"{'c':>4} {'target':8} {'streams':>7} {'broken':>6} {'errors':>6} {'ttfb p50':>8} {'+ttfb p50':>9} "
        f"{'gap p50':>8} {'gap p99':>8} {'cpu ms/stream':>13}"
    )
    for r in results["stream"]:
        print(
            f"{r['concurrency']:>4} {r['target']:8} {r['streams']:>7} {r['broken']:>6} {r['errors']:>6} "
            f"{fmt(r['ttfb_p50_ms']):>8} {fmt(r['added_ttfb_p50_ms']):>9} {fmt(r['gap_p50_ms']):>8} "
            f"{fmt(r['gap_p99_ms']):>8} {fmt(r['cpu_ms_per_request']):>13}"
        )


def verdicts(results: dict[str, list[dict[str, object]]]) -> dict[str, bool]:
    def row(kind: str, target: str, c: int) -> dict[str, object]:
        return next(r for r in results[kind] if r["target"] == target and r["concurrency"] == c)

    gw_streams = [r for r in results["stream"] if r["target"] == "gateway"]
    return {
        "gateway added p50 <= 0.5 ms at c=1": float(row("json", "gateway", 1)["added_p50_ms"]) <= 0.5,  # type: ignore[arg-type]
        "gateway req/s >= bare at c=16": float(row("json", "gateway", 16)["rps"])
        >= float(row("json", "bare", 16)["rps"]),  # type: ignore[arg-type]
        "gateway req/s >= bare at c=64": float(row("json", "gateway", 64)["rps"])
        >= float(row("json", "bare", 64)["rps"]),  # type: ignore[arg-type]
        "streams complete and in order": all(r["broken"] == 0 and r["errors"] == 0 for r in gw_streams),
        "added TTFB p50 <= 1.5 ms at 64 streams": float(row("stream", "gateway", 64)["added_ttfb_p50_ms"])
        <= 1.5,  # type: ignore[arg-type]
        "gap p99 <= 1.5 x direct at 256 streams": float(row("stream", "gateway", 256)["gap_p99_ms"])  # type: ignore[arg-type]
        <= 1.5 * float(row("stream", "direct", 256)["gap_p99_ms"]),  # type: ignore[arg-type]
    }


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gateway_overhead.json")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install -y nginx wrk util-linux")
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        sys.exit("nginx is missing: apt-get install -y nginx")
    load_before = uptime()
    print(f"uptime before: {load_before}; proxies on core {cores()[0]}, load on core {cores()[1]}")
    with tempfile.TemporaryDirectory(prefix="modelctl-bench-") as tmp:
        results = measure(args.duration, Path(tmp))
    print_tables(results)
    checks = verdicts(results)
    print("\nTargets")
    for name, met in checks.items():
        print(f"  {'met   ' if met else 'MISSED'}  {name}")
    load_after = uptime()
    print(f"uptime after: {load_after}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "uptime_before": load_before,
        "uptime_after": load_after,
        "cpu_count": os.cpu_count(),
        "duration_s": args.duration,
        "chunks": CHUNKS,
        "delay_ms": DELAY_MS,
        "results": results,
        "targets": checks,
    }
    args.out.write_text(json.dumps(document, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
