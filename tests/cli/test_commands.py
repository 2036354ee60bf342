"""The command line: exit codes and one-line errors, run through `main` as a user would."""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.cli import main
from controller.cli.logs import print_logs
from controller.errors import ModelctlError

REPO = Path(__file__).resolve().parents[2]
INVENTORIES = REPO / "tests" / "fixtures" / "inventories"
SEED = '{"model": "path/to/model.safetensors", "engine": "vllm", "num_gpus": 2, "max_batch_size": 16, '


def test_validate_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(REPO / "models")]) == 0
    assert main(["validate", str(REPO / "examples")]) == 0
    out = capsys.readouterr().out
    assert "ok  smollm2" in out and "ok  qwen2.5-0.5b" in out and "ok  model " in out


def test_validate_lists_every_error_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text("model: a.gguf\nrepicas: 2\n---\nmodel: b.gguf\nnum_gpus: -1\n")
    assert main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "a.yaml:2 (document 1) field 'repicas': unknown field; did you mean 'replicas'?" in err
    assert "a.yaml:5 (document 2) field 'num_gpus'" in err
    assert "2 error(s)" in err and "Traceback" not in err


def test_plan_places_the_seed_example_on_a_recorded_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "seed.json").write_text(SEED + '"gpu_memory": "60GiB"}')
    assert main(["plan", str(tmp_path), "--inventory", str(INVENTORIES / "h200x4.json"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    (assignment,) = plan["assignments"]
    assert len(assignment["devices"]) == 2 and plan["pending"] == []


def test_plan_says_why_a_replica_waits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "seed.json").write_text(SEED + '"gpu_memory": "60GiB"}')
    assert main(["plan", str(tmp_path), "--inventory", str(INVENTORIES / "h200.json")]) == 0
    out = capsys.readouterr().out
    assert "model-0" in out and "Pending" in out


def test_gpus_without_nvml_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpus", "--json"]) == 0
    inventory = json.loads(capsys.readouterr().out)
    assert inventory["gpus"] == [] and "NVML" in inventory["reason"]


def test_status_without_a_controller_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--controller-url", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("modelctl: error: cannot read status from the controller") and "Traceback" not in err
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_gateway_on_a_port_in_use_is_one_clear_error(
    capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        address = ["--host", "127.0.0.1", "--port", str(port), "--controller-url", "http://127.0.0.1:9"]
        code = main(["gateway", *address, "--workers", workers])
    err = capsys.readouterr().err
    assert code == 1
    assert f"modelctl: error: the gateway cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert "Traceback" not in err


class StatusServer:
    """A controller API that answers GET /v1/status with a fixed payload, on a free port."""

    def __init__(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def replica_row(state: str, replica: int = 0, reason: str = "") -> dict[str, Any]:
    return {
        "model": "smollm2",
        "replica": replica,
        "state": state,
        "container": f"modelctl-smollm2-{replica}-abc",
        "endpoint": "http://10.0.0.2:8080" if state == "Ready" else None,
        "restarts": 0,
        "reason": reason,
        "started_at": "",
    }


def test_status_all_ready_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    payload = {"replicas": [replica_row("Ready"), replica_row("Starting", 1)], "manifest_errors": []}
    with StatusServer(payload) as url:
        assert main(["status", "--controller-url", url]) == 0
    captured = capsys.readouterr()
    assert "smollm2" in captured.out and captured.err == ""


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        (
            {"replicas": [replica_row("Ready")], "manifest_errors": ["models/a.yaml:2 field 'x': bad"]},
            "1 manifest error(s)",
        ),
        ({"replicas": [replica_row("BackingOff", reason="exited 1")], "manifest_errors": []}, "BackingOff"),
        ({"replicas": [replica_row("Pending", reason="no GPU")], "manifest_errors": []}, "Pending"),
    ],
)
def test_status_with_manifest_errors_or_failing_replicas_exits_1(
    capsys: pytest.CaptureFixture[str], payload: dict[str, Any], said: str
) -> None:
    with StatusServer(payload) as url:
        assert main(["status", "--controller-url", url]) == 1
        assert main(["status", "--controller-url", url, "--json"]) == 1
    captured = capsys.readouterr()
    assert said in captured.err and "Traceback" not in captured.err
    assert "models/a.yaml:2" in captured.out or "manifest" not in said


@dataclass
class FakeContainer:
    id: str
    name: str
    model: str
    replica: int
    state: str = "running"
    started_at: str = "2026-12-01T10:00:00Z"


class FakeLogSource:
    def __init__(self, containers: list[FakeContainer]) -> None:
        self.containers = containers

    def list(self) -> list[FakeContainer]:
        return self.containers

    def logs(self, container_id: str, tail: int = 50) -> str:
        return f"output of {container_id}, last {tail}"


LOGS = FakeLogSource(
    [
        FakeContainer("c1", "modelctl-smollm2-1-bbb", "smollm2", 1),
        FakeContainer("c0", "modelctl-smollm2-0-aaa", "smollm2", 0),
        FakeContainer("q0", "modelctl-qwen-0-ccc", "qwen", 0),
    ]
)


def test_logs_shows_every_replica_under_a_header(capsys: pytest.CaptureFixture[str]) -> None:
    print_logs(LOGS, "smollm2", replica=None, tail=7, instance="default")
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "==> smollm2 replica 0: modelctl-smollm2-0-aaa (running) <==",
        "output of c0, last 7",
        "==> smollm2 replica 1: modelctl-smollm2-1-bbb (running) <==",
        "output of c1, last 7",
    ]


def test_logs_of_one_replica(capsys: pytest.CaptureFixture[str]) -> None:
    print_logs(LOGS, "smollm2", replica=1, tail=100, instance="default")
    out = capsys.readouterr().out
    assert "replica 1" in out and "replica 0" not in out


def test_logs_of_an_unknown_model_or_replica_names_what_exists() -> None:
    with pytest.raises(ModelctlError, match=r"^no model nosuch \(known: qwen, smollm2;"):
        print_logs(LOGS, "nosuch", replica=None, tail=10, instance="default")
    with pytest.raises(ModelctlError, match=r"^no replica 5 of smollm2 \(replicas: 0, 1\)"):
        print_logs(LOGS, "smollm2", replica=5, tail=10, instance="default")


def test_logs_help_describes_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["logs", "--help"])
    out = capsys.readouterr().out
    assert "--replica N" in out and "every replica" in out and "--tail LINES" in out


def test_help_speaks_to_users_and_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    description = out.split("\n\n")[1]
    assert description.startswith("Run LLM inference servers") and "composition root" not in out
    for command in ("serve", "controller", "gateway", "validate", "gpus", "plan", "status", "logs", "down"):
        assert command in out


MODEL_ROOT = Path(os.environ.get("MODELCTL_MODEL_ROOT", REPO / "models-data")).absolute()


def test_plan_shows_the_memory_of_each_replica_by_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SmolLM2 drafting for itself on a GPU, and with two GGUF adapters on the CPU (`make shapes`)."""
    if not (MODEL_ROOT / "smollm2-lora-b.gguf").is_file():
        pytest.fail(f"{MODEL_ROOT} lacks the LoRA adapters; run `make shapes`")
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    (tmp_path / "m.yaml").write_text(
        f"name: drafted\nmodel: {gguf}\ndraft: {gguf}\nnum_gpus: 1\nmax_batch_size: 2\ncontext_length: 2048\n"
        f"---\nname: tuned\nmodel: {gguf}\nmax_batch_size: 2\ncontext_length: 2048\nadapters:\n"
        "  - {name: tuned-a, path: smollm2-lora-a.gguf}\n  - {name: tuned-b, path: smollm2-lora-b.gguf}\n"
    )
    plan = [
        "plan",
        str(tmp_path),
        "--inventory",
        str(INVENTORIES / "h200.json"),
        "--model-root",
        str(MODEL_ROOT),
    ]
    assert main(plan) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("Memory of one replica, estimated from its files:")
    rows = [line.split() for line in lines[start + 1 : start + 4]]
    assert rows[0] == [
        "MODEL",
        "WEIGHTS",
        "KV",
        "CACHE",
        "DRAFT",
        "ADAPTERS",
        "OVERHEAD",
        "TOTAL",
    ]  # no projector
    # drafted: weights + KV + draft (its weights and KV) + the GPU overhead; tuned: on the CPU
    assert rows[1] == [
        "drafted",
        "92.1",
        "MiB",
        "90.0",
        "MiB",
        "182.1",
        "MiB",
        "0",
        "B",
        "512.0",
        "MiB",
        "876.2",
        "MiB",
    ]
    assert rows[2] == [
        "tuned",
        "92.1",
        "MiB",
        "90.0",
        "MiB",
        "0",
        "B",
        "9.3",
        "MiB",
        "256.0",
        "MiB",
        "447.4",
        "MiB",
    ]
    assert main([*plan, "--json"]) == 0
    estimates = json.loads(capsys.readouterr().out)["estimates"]
    drafted, tuned = estimates["drafted"], estimates["tuned"]
    assert (
        drafted["total"]
        == 918_768_128
        == sum(drafted[k] for k in ("weights", "kv_cache", "draft", "overhead"))
    )
    assert tuned["adapters"] == 2 * 4_884_480 and tuned["projector"] == tuned["draft"] == 0


def test_validate_with_roots_refuses_an_adapter_for_another_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m.yaml").write_text(
        "model: tiny-vlm/tiny-vlm.gguf\nadapters: [{name: a, path: smollm2-lora-a.gguf}]\n"
    )
    assert main(["validate", str(tmp_path), "--model-root", str(MODEL_ROOT)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'm.yaml'}:2 field 'adapters.0.path': " in err and "maybe wrong base model?" in err
