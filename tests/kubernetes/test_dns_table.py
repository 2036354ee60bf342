"""The gateway's DNS table source with a stand-in resolver: ready replicas are a name's addresses,
NXDOMAIN is none, any other failure keeps the last good set (logged once per distinct error)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path

import pytest

from controller.gateway.serving.server import table_source
from controller.gateway.settings import GatewaySettings, SettingsError
from controller.gateway.tables.dns import DnsTable, load_models

MODELS = {
    "models": [
        {
            "name": "smollm2",
            "aliases": ["s"],
            "balancing": "round-robin",
            "load_timeout_s": 60,
            "max_concurrency": 2,
            "service": "smollm2-svc",
            "port": 8080,
        },
    ]
}


class Resolver:
    """Answers from a dict: a list of addresses, or an exception to raise."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str] | BaseException] = {}

    async def __call__(self, host: str, port: int) -> list[str]:
        answer = self.answers[host]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def models_file(tmp_path: Path, doc: object = MODELS) -> Path:
    path = tmp_path / "models.json"
    path.write_text(json.dumps(doc))
    return path


async def test_replicas_are_the_addresses_and_failures_keep_the_last_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    resolver = Resolver()
    table = DnsTable(models_file(tmp_path), interval_s=0.01, resolver=resolver)
    (model,) = load_models(models_file(tmp_path))
    table._reload()
    assert table.current().version == 0  # nothing resolved yet
    resolver.answers["smollm2-svc"] = ["10.0.0.2", "10.0.0.1"]
    await table.resolve_once(model)
    entry = table.current().lookup("s")
    assert entry is not None and entry.balancing == "round-robin" and entry.load_timeout_s == 60
    assert [r.url for r in entry.replicas] == ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
    assert entry.replicas[0].max_concurrency == 2
    version = table.current().version
    await table.resolve_once(model)
    assert table.current().version == version  # nothing changed: the same table object
    resolver.answers["smollm2-svc"] = socket.gaierror(
        socket.EAI_AGAIN, "Temporary failure in name resolution"
    )
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            await table.resolve_once(model)
    assert len(table.current().models[0].replicas) == 2  # the last good set
    assert len([r for r in caplog.records if "cannot resolve" in r.getMessage()]) == 1
    resolver.answers["smollm2-svc"] = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    await table.resolve_once(model)
    assert table.current().models[0].replicas == ()  # no such name: nothing ready


async def test_run_follows_changes_and_the_models_file(tmp_path: Path) -> None:
    resolver = Resolver()
    resolver.answers["smollm2-svc"] = ["10.0.0.1"]
    path = models_file(tmp_path)
    table = DnsTable(path, interval_s=0.01, resolver=resolver)
    task = asyncio.create_task(table.run())
    try:
        await wait(lambda: table.current().version > 0)
        resolver.answers["smollm2-svc"] = ["10.0.0.1", "10.0.0.3"]
        await wait(lambda: len(table.current().models[0].replicas) == 2)
        doc = {"models": [dict(MODELS["models"][0], name="other", service="other-svc")]}
        resolver.answers["other-svc"] = ["10.0.1.1"]
        path.write_text(json.dumps(doc, indent=1))
        await wait(lambda: [m.name for m in table.current().models] == ["other"])
        path.write_text("{not json")  # a bad update keeps the last good models
        await asyncio.sleep(0.05)
        assert [m.name for m in table.current().models] == ["other"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def wait(check, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def test_the_setting_chooses_the_source(tmp_path: Path) -> None:
    env = {"MODELCTL_GATEWAY_TABLE": "dns", "MODELCTL_GATEWAY_MODELS": str(models_file(tmp_path))}
    settings = GatewaySettings.from_env(env)
    source, sink, words = table_source(settings, session=None)  # type: ignore[arg-type]
    assert isinstance(source, DnsTable) and sink is None and "DNS" in words
    with pytest.raises(SettingsError, match="MODELCTL_GATEWAY_MODELS"):
        GatewaySettings.from_env({"MODELCTL_GATEWAY_TABLE": "dns"})
    with pytest.raises(SettingsError, match="'controller' or 'dns'"):
        GatewaySettings.from_env({"MODELCTL_GATEWAY_TABLE": "consul"})


def test_the_models_file_may_name_engine_adapters_and_vision(tmp_path: Path) -> None:
    (plain,) = load_models(models_file(tmp_path))
    assert (plain.endpoints.engine, plain.endpoints.adapters, plain.endpoints.vision) == ("", (), None)
    extra = {"engine": "llamacpp", "adapters": ["smollm2-a", "smollm2-b"], "vision": False}
    (model,) = load_models(models_file(tmp_path, {"models": [MODELS["models"][0] | extra]}))
    assert (model.endpoints.engine, model.endpoints.adapters, model.endpoints.vision) == (
        "llamacpp",
        ("smollm2-a", "smollm2-b"),
        False,
    )
    with pytest.raises(ValueError, match="vision"):
        load_models(models_file(tmp_path, {"models": [MODELS["models"][0] | {"vision": "yes"}]}))
