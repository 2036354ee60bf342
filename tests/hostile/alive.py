"""Hostile batches against a real stack, each followed by proof that the control plane still converges.

A batch throws what an attacker or a careless user would at one boundary (the controller's API, the
gateway's routes, slow and non-reading clients, broken manifests). After each, ``prove_alive`` kills
a replica with ``docker kill`` and waits for the reconciler to replace it and for the gateway to answer
a chat completion: a control loop that died, a gateway that starves or a table that froze all fail
there. ``Tally`` keeps the figures the issue asks for (cases tried, answers by status, 5xx, hangs) and
the gateway process's memory high-water mark (VmHWM from /proc), so the same harness serves the test
(tests/hostile/test_alive.py, small counts) and the report (bench/hostile.py, larger counts).

The gateway runs as a real ``modelctl gateway`` process following the in-process controller, so its
memory is its own and its timeouts are the ones users get.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import aiohttp
import docker

from controller.app import RunningController

REPLICA_HEADER = "x-modelctl-replica"  # the gateway names the replica whose answer it relays
HANG_S = 30.0  # an answer slower than this is a hang (the gateway's own deadlines are shorter)
CHAT = {"model": "smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}


@dataclass
class Tally:
    """What one batch (or a whole run) met: cases, statuses, 5xx answers and hangs by case."""

    cases: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    engine_errors: list[str] = field(default_factory=list)
    recoveries_s: list[float] = field(default_factory=list)

    def record(self, case: str, outcome: int | str, *, by_engine: bool = False) -> None:
        """Count one answer; a 5xx the engine itself gave (the gateway names the replica that answered,
        e.g. llama-server's 501 for embeddings it was not started for) is the engine's, not ours."""
        self.cases += 1
        self.statuses[str(outcome)] += 1
        if outcome == "hang":
            self.hangs.append(case)
        elif isinstance(outcome, int) and outcome >= 500:
            (self.engine_errors if by_engine else self.server_errors).append(f"{outcome} {case}")

    def to_json(self) -> dict[str, object]:
        return {
            "cases": self.cases,
            "statuses": dict(sorted(self.statuses.items())),
            "5xx": len(self.server_errors),
            "hangs": len(self.hangs),
            "engine_5xx": len(self.engine_errors),
            "examples_5xx": self.server_errors[:5],
            "examples_engine_5xx": self.engine_errors[:3],
            "examples_hangs": self.hangs[:5],
            "recovery_s": [round(s, 1) for s in self.recoveries_s],
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def high_water_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


@asynccontextmanager
async def gateway_process(api_url: str, **env: str) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real ``modelctl gateway`` process following ``api_url``; yields its URL and the process."""
    port = free_port()
    command = [sys.executable, "-m", "controller.cli", "gateway", "--controller-url", api_url]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        await until(lambda: answers(f"{url}/healthz"), 30, f"the gateway at {url}")
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)


async def answers(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll ``check`` until true; return the seconds it took; raise AssertionError past ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> int | str:
    """One request; its status, "hang" past HANG_S, or "cut" when the server closed the connection."""
    return (await answer(session, method, url, data=data, headers=headers))[0]


async def answer(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int | str, bool]:
    """``send``'s outcome, and whether a replica gave it (the gateway's x-modelctl-replica header)."""
    try:
        async with session.request(
            method, url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=HANG_S)
        ) as resp:
            await resp.read()
            return resp.status, REPLICA_HEADER in resp.headers
    except TimeoutError:
        return "hang", False
    except aiohttp.ClientError:
        return "cut", False


async def raw(host: str, port: int, request: bytes) -> int | str:
    """A request sent as raw bytes (paths no client library would send as written); its status."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), HANG_S)
        writer.close()
        parts = line.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else "cut"
    except TimeoutError:
        return "hang"
    except OSError:
        return "cut"


# ---- the batches ------------------------------------------------------------------------------------


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def controller_cases(rng: random.Random, count: int) -> list[tuple[str, str, bytes | None, dict[str, str]]]:
    """(method, path, body, headers) for the controller's API: the issue's reproductions, then fuzz."""
    json_h = {"Content-Type": "application/json"}
    fixed: list[tuple[str, str, bytes | None, dict[str, str]]] = [
        (
            "POST",
            "/v1/demand",
            b'{"reporter":"x","models":{"smollm2":{"last_active":1e300}}}',
            {"Content-Type": "text/plain"},
        ),
        ("POST", "/v1/demand", b'{"reporter":"x","models":{"smollm2":{"last_active":1e300}}}', json_h),
        (
            "POST",
            "/v1/demand",
            b'{"reporter":"x","models":{"smollm2":{"in_flight":1' + b"0" * 400 + b"}}}",
            json_h,
        ),
        ("POST", "/v1/demand", b'{"reporter":"x","models":{"smollm2":{"last_active":NaN}}}', json_h),
        ("POST", "/v1/demand", deep(100_000), json_h),
        ("POST", "/v1/demand", b'{"reporter":"' + b"r" * 3_000_000 + b'","models":{}}', json_h),
        (
            "POST",
            "/v1/demand",
            json.dumps(
                {"reporter": "x", "models": {f"m{i}": {"in_flight": 1} for i in range(20_000)}}
            ).encode(),
            json_h,
        ),
        ("POST", "/v1/plan", b"model: /etc/shadow\nname: x\n", {"Content-Type": "application/yaml"}),
        ("GET", "/v1/endpoints?after=1e999&wait=nan", None, {}),
        ("GET", "/v1/endpoints?after=-1&wait=inf", None, {}),
        ("GET", "/v1/events?after=-99999999999999999999999", None, {}),
        ("GET", "/v1/replicas/..%2f..%2fetc/logs?tail=999999999999", None, {}),
        ("GET", "/v1/status", None, {"Host": "evil.example"}),
        ("POST", "/v1/demand", b"{}", {**json_h, "Origin": "http://evil.example"}),
    ]
    fuzz = [("POST", rng.choice(["/v1/demand", "/v1/plan"]), junk(rng), json_h) for _ in range(count)]
    return fixed + fuzz


def junk(rng: random.Random) -> bytes:
    """A hostile JSON-ish body: wrong types, extreme numbers, odd unicode, broken syntax."""
    values: list[object] = [
        1e308,
        -1e308,
        10**30,
        -1,
        0,
        "",
        "x" * rng.randint(1, 5000),
        None,
        True,
        [],
        {},
        "\u202e\ud7ff",
        [{}] * rng.randint(1, 200),
        {"models": rng.choice([1, "a", [], None])},
    ]
    doc = {
        "reporter": rng.choice(values),
        "models": {
            rng.choice(["smollm2", "nosuch", "", "smollm2-alias"]): {
                k: rng.choice(values)
                for k in ("in_flight", "waiting", "last_active", rng.choice(["x", "cold"]))
            }
        },
        "model": rng.choice(values),
        "manifests": rng.choice(values),
    }
    text = json.dumps(doc)
    cut = rng.random()
    if cut < 0.15:
        return text[: rng.randint(0, len(text))].encode()
    if cut < 0.25:
        return text.encode() + bytes(rng.randint(0, 255) for _ in range(16))
    return text.encode()


def gateway_cases(rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    """(path, body) POSTs to the gateway's routes, every API the gateway speaks."""
    paths = [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/messages",
        "/v1/responses",
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/show",
        "/v1/rerank",
    ]
    fixed = [
        ("/v1/chat/completions", b"not json"),
        ("/v1/chat/completions", b"\xff\xfe\x00garbage"),
        ("/v1/chat/completions", deep(100_000)),
        ("/v1/chat/completions", b'{"model":"smollm2","messages":[' + b"{}," * 1_000_000 + b"{}]}"),
        ("/v1/chat/completions", b'{"model":1}'),
        ("/v1/chat/completions", b'{"model":"smollm2","messages":"x","max_tokens":1e400}'),
        ("/v1/chat/completions", b'{"model":"smollm2","stream":true,"stream_options":7,"messages":[]}'),
        (
            "/api/chat",
            b'{"model":"smollm2","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":1e999}}',
        ),
        (
            "/v1/messages",
            b'{"model":"smollm2","max_tokens":-5,"messages":[{"role":"user","content":[{"type":"x"}]}]}',
        ),
        ("/v1/responses", b'{"model":"smollm2","input":[{"type":"nonsense"}],"max_output_tokens":"a"}'),
    ]
    fuzz = []
    for _ in range(count):
        doc = {
            "model": rng.choice(["smollm2", "smollm2-alias", "nosuch", 1, None, "x" * 10_000]),
            "messages": rng.choice([[{"role": "user", "content": "Hi"}], "x", [1, 2], [{"role": 5}], None]),
            "max_tokens": rng.choice([1, 2, 0, -1, 10**20, "3", None]),
            "stream": rng.choice([True, False, "yes", None]),
        }
        fuzz.append((rng.choice(paths), json.dumps(doc).encode()))
    return fixed + fuzz


RAW_PATHS = [
    "/v1/../slots/0?action=erase",
    "/v1/%2e%2e/slots/0?action=erase",
    "//v1/chat/completions",
    "/v1/chat/completions/../../props",
    "/slots",
    "/v1/load_lora_adapter",
    "/v1/chat/completions?x=" + "a" * 9000,
]


async def controller_batch(api_url: str, rng: random.Random, count: int, tally: Tally) -> None:
    async with aiohttp.ClientSession() as session:
        for method, path, body, headers in controller_cases(rng, count):
            outcome = await send(session, method, api_url + path, data=body, headers=headers)
            tally.record(f"{method} {path} {(body or b'')[:60]!r}", outcome)


async def gateway_batch(url: str, rng: random.Random, count: int, tally: Tally) -> None:
    host, port = url.removeprefix("http://").split(":")
    async with aiohttp.ClientSession() as session:
        for path, body in gateway_cases(rng, count):
            outcome, by_engine = await answer(
                session, "POST", url + path, data=body, headers={"Content-Type": "application/json"}
            )
            tally.record(f"POST {path} {body[:60]!r}", outcome, by_engine=by_engine)
    for path in RAW_PATHS:
        body = json.dumps(CHAT).encode()
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        outcome = await raw(host, int(port), request)
        tally.record(f"raw POST {path[:60]}", outcome)
        if outcome == 200:  # an engine path reached through the gateway is a failure of its own
            tally.server_errors.append(f"forwarded {path}")


async def slow_batch(url: str, tally: Tally, *, readers: int = 6, loris: int = 8, hold_s: float = 20) -> None:
    """Non-reading stream clients and slowloris connections at once; a normal request must still be served."""
    host, port = url.removeprefix("http://").split(":")
    sockets: list[socket.socket] = []
    body = json.dumps({**CHAT, "max_tokens": 400, "stream": True}).encode()
    for _ in range(readers):  # ask for a long stream, never read it
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        s.connect((host, int(port)))
        s.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        sockets.append(s)
    for _ in range(loris):  # headers one byte at a time, never finished
        s = socket.socket()
        s.connect((host, int(port)))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        sockets.append(s)
    try:
        loop_end = time.monotonic() + hold_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < loop_end:
                for s in sockets[readers:]:
                    with suppress(OSError):
                        s.send(b"X")
                await asyncio.sleep(1)
            outcome = await send(
                session,
                "POST",
                url + "/v1/chat/completions",
                data=json.dumps(CHAT).encode(),
                headers={"Content-Type": "application/json"},
            )
            tally.record("chat beside non-reading and slowloris clients", outcome)
            if outcome != 200:
                tally.server_errors.append(f"starved: {outcome}")
    finally:
        for s in sockets:
            s.close()


MANIFEST_CASES: dict[str, bytes] = {
    "nested.yaml": b"a: " + b"[" * 50_000 + b"]" * 50_000 + b"\n",
    "bomb.yaml": b"a: &a [x,x,x,x,x,x,x,x,x]\n"
    + b"".join(
        b"%c: &%c [*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c]\n" % ((98 + i,) * 2 + (97 + i,) * 9) for i in range(9)
    ),
    "latin1.yaml": "name: caf\u00e9\nmodel: x.gguf\n".encode("latin-1"),
    "longpath.yaml": b"name: longpath\nmodel: " + b"a/" * 200 + b"m.gguf\n",
    "nul.yaml": b"name: nul\x00\nmodel: x.gguf\n",
    "env.yaml": b'name: envy\nmodel: x.gguf\nenv: {K: "${MODELCTL_CONTROLLER_KEY}"}\n',
}


async def manifest_batch(rc: RunningController, folder: Path, tally: Tally) -> None:
    """Each broken manifest beside the good one: reported, while the good set keeps serving."""
    for name, text in MANIFEST_CASES.items():
        path = folder / name
        path.write_bytes(text)
        try:

            async def reported(name: str) -> bool:
                return any(name in e for e in rc.reconciler.manifest_errors)

            try:
                await until(partial(reported, name), 20, f"{name} reported")
                tally.record(f"manifest {name}", 200)
            except AssertionError:
                tally.record(f"manifest {name}", "hang")
        finally:
            path.unlink()


async def prove_alive(
    rc: RunningController, client: docker.DockerClient, instance: str, url: str, tally: Tally
) -> None:
    """Kill a replica; the reconciler must replace it and the gateway answer a chat after it."""
    from controller.runtime import labels

    running = client.containers.list(filters={"label": f"{labels.INSTANCE}={instance}"})
    assert running, "no replica running to kill"
    victim = running[0]
    killed = time.monotonic()
    victim.kill()

    async def replaced() -> bool:
        entry = rc.store.current().lookup("smollm2")
        names = {r.id for r in entry.replicas} if entry else set()
        fresh = {c.id for c in client.containers.list(filters={"label": f"{labels.INSTANCE}={instance}"})}
        return bool(names) and bool(fresh) and victim.id not in fresh

    await until(replaced, 90, f"{victim.name} replaced after docker kill")

    async def chat() -> bool:
        async with aiohttp.ClientSession() as session:
            return (
                await send(
                    session,
                    "POST",
                    url + "/v1/chat/completions",
                    data=json.dumps(CHAT).encode(),
                    headers={"Content-Type": "application/json"},
                )
                == 200
            )

    await until(chat, 60, "a chat completion after the replacement")
    tally.recoveries_s.append(time.monotonic() - killed)


async def run_suite(
    rc: RunningController, client: docker.DockerClient, instance: str, folder: Path, cases: int, seed: int
) -> dict[str, object]:
    """Every batch against ``rc`` (its manifests in ``folder``) and a gateway process following it,
    each followed by ``prove_alive``; the figures by batch, and the gateway's memory high-water."""
    rng = random.Random(seed)
    report: dict[str, object] = {"cases_per_batch": cases, "seed": seed}
    async with gateway_process(rc.api_url, MODELCTL_GATEWAY_WRITE_TIMEOUT_S="5") as (url, proc):
        batches: dict[str, Callable[[Tally], Awaitable[None]]] = {
            "controller api": partial(controller_batch, rc.api_url, rng, cases),
            "gateway routes": partial(gateway_batch, url, rng, cases),
            "slow clients": partial(slow_batch, url),
            "manifests": partial(manifest_batch, rc, folder),
        }
        for name, batch in batches.items():
            tally = Tally()
            await batch(tally)
            await prove_alive(rc, client, instance, url, tally)
            report[name] = tally.to_json()
        report["gateway_high_water_mib"] = round(high_water_mib(proc.pid), 1)
    return report
