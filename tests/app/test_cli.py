"""The command line: exit codes and one-line errors, run through `main` as a user would."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from controller.cli import main

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
    assert "a.yaml:2 (document 1) field 'repicas'" in err
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
