"""GatewaySettings: defaults, from_env with overrides, and bad values rejected with their name."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.gateway import GatewaySettings, SettingsError


def test_defaults() -> None:
    settings = GatewaySettings()
    assert (settings.host, settings.port, settings.workers, settings.api_keys) == ("0.0.0.0", 8080, 1, ())
    assert (settings.queue_per_slot, settings.queue_timeout_s, settings.cold_start_wait_s) == (4, 30.0, 30.0)
    assert (settings.demand_interval_s, settings.loading_comment_interval_s) == (1.0, 5.0)


def test_from_env_then_overrides() -> None:
    env = {
        "MODELCTL_GATEWAY_HOST": "127.0.0.1",
        "MODELCTL_GATEWAY_PORT": "9000",
        "MODELCTL_CONTROLLER_URL": "http://controller:8081",
        "MODELCTL_GATEWAY_WORKERS": "4",
        "MODELCTL_GATEWAY_QUEUE_PER_SLOT": "2",
        "MODELCTL_GATEWAY_QUEUE_TIMEOUT_S": "12.5",
        "MODELCTL_GATEWAY_COLD_START_WAIT_S": "60",
        "MODELCTL_GATEWAY_CONNECT_TIMEOUT_S": "1.5",
        "MODELCTL_GATEWAY_FIRST_BYTE_TIMEOUT_S": "120",
        "MODELCTL_GATEWAY_READ_TIMEOUT_S": "45",
        "MODELCTL_GATEWAY_MAX_TRIES": "2",
        "MODELCTL_GATEWAY_MAX_BODY_BYTES": "1048576",
        "MODELCTL_GATEWAY_DEMAND_INTERVAL_S": "0.5",
        "MODELCTL_GATEWAY_LOADING_COMMENT_INTERVAL_S": "2",
        "UNRELATED": "x",
    }
    settings = GatewaySettings.from_env(env, port=8088, host=None)
    assert (settings.host, settings.port, settings.controller_url) == (
        "127.0.0.1",
        8088,
        "http://controller:8081",
    )
    assert (settings.workers, settings.queue_per_slot) == (4, 2)
    assert (settings.queue_timeout_s, settings.cold_start_wait_s) == (12.5, 60.0)
    timeouts = (settings.connect_timeout_s, settings.first_byte_timeout_s, settings.read_timeout_s)
    assert timeouts == (1.5, 120.0, 45.0)
    assert (settings.max_tries, settings.max_body_bytes) == (2, 1024 * 1024)
    assert (settings.demand_interval_s, settings.loading_comment_interval_s) == (0.5, 2.0)
    assert GatewaySettings.from_env({}) == GatewaySettings()


@pytest.mark.parametrize(
    ("env", "names"),
    [
        pytest.param({"MODELCTL_GATEWAY_PORT": "eighty"}, "MODELCTL_GATEWAY_PORT", id="port"),
        pytest.param({"MODELCTL_GATEWAY_WORKERS": "0"}, "workers", id="no workers"),
        pytest.param({"MODELCTL_GATEWAY_QUEUE_TIMEOUT_S": "-1"}, "queue_timeout_s", id="negative wait"),
        pytest.param({"MODELCTL_GATEWAY_READ_TIMEOUT_S": "0"}, "read_timeout_s", id="zero read timeout"),
        pytest.param({"MODELCTL_GATEWAY_CONNECT_TIMEOUT_S": "inf"}, "connect_timeout_s", id="endless"),
        pytest.param({"MODELCTL_GATEWAY_FIRST_BYTE_TIMEOUT_S": "soon"}, "FIRST_BYTE", id="not a number"),
        pytest.param({"MODELCTL_GATEWAY_MAX_TRIES": "0"}, "max_tries", id="no tries"),
        pytest.param({"MODELCTL_GATEWAY_DEMAND_INTERVAL_S": "0"}, "demand_interval_s", id="demand at 0"),
        pytest.param({"MODELCTL_GATEWAY_DEMAND_INTERVAL_S": "-1"}, "demand_interval_s", id="demand < 0"),
        pytest.param(
            {"MODELCTL_GATEWAY_LOADING_COMMENT_INTERVAL_S": "0"},
            "loading_comment_interval_s",
            id="comments at 0",
        ),
        pytest.param(
            {"MODELCTL_GATEWAY_LOADING_COMMENT_INTERVAL_S": "-5"},
            "loading_comment_interval_s",
            id="comments < 0",
        ),
        pytest.param(
            {"MODELCTL_API_KEYS_FILE": "/nonexistent/keys"}, "MODELCTL_API_KEYS_FILE", id="keys file"
        ),
    ],
)
def test_bad_values_are_rejected_by_name(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        GatewaySettings.from_env(env)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"affinity_load_factor": 0.5}, id="load factor"),
        pytest.param({"api_keys": ("sk 1",)}, id="key with space"),
        pytest.param({"api_keys": ("",)}, id="empty key"),
        pytest.param({"table_poll_s": 0}, id="poll"),
    ],
)
def test_bad_settings_are_rejected(options: dict[str, object]) -> None:
    with pytest.raises(SettingsError):
        GatewaySettings(**options)  # type: ignore[arg-type]


def test_an_unreadable_keys_file_names_the_file_not_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_bytes(b"sk-\xff\n")
    with pytest.raises(SettingsError, match=str(path)):
        GatewaySettings.from_env({"MODELCTL_API_KEYS_FILE": str(path)})
