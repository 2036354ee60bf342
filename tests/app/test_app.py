"""The composition root's edge behaviour that needs no engine: Docker unavailable at start, and
manifest errors named as the user knows the folder."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from controller.app import connect_with_retry, manifest_loader
from controller.errors import InvalidManifests, ModelctlError, RuntimeUnavailable
from controller.reconcile.supervise import Failures, supervised
from controller.settings import ControllerSettings


async def test_docker_unavailable_is_retried_said_and_then_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ControllerSettings(docker_url=f"unix://{tmp_path}/no-docker.sock", docker_wait_s=1.5)
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(RuntimeUnavailable, match="Docker engine unreachable"),
    ):
        await connect_with_retry(settings)
    retries = [r for r in caplog.records if "Docker engine unavailable" in r.getMessage()]
    assert len(retries) >= 2


def test_settings_from_the_environment() -> None:
    env = {
        "MODELCTL_MANIFESTS": "/etc/m",
        "MODELCTL_MODEL_ROOTS": "/a:/b",
        "MODELCTL_API_PORT": "9000",
        "MODELCTL_DRAIN_GRACE_S": "5",
    }
    settings = ControllerSettings.from_env(env, instance="x", network=None)
    assert settings.manifests == Path("/etc/m") and settings.model_roots == (Path("/a"), Path("/b"))
    assert (settings.api_port, settings.drain_grace_s, settings.instance) == (9000, 5.0, "x")
    assert settings.network == "modelctl"
    assert settings.egress_network is None  # replicas on an ordinary bridge unless told otherwise
    assert settings.state_dir == Path.home() / ".local" / "state" / "modelctl"


def test_compose_gives_replicas_an_egress_network_and_the_controller_a_state_folder() -> None:
    env = {"MODELCTL_EGRESS_NETWORK": "modelctl-egress", "MODELCTL_STATE_DIR": "/var/lib/modelctl"}
    settings = ControllerSettings.from_env(env)
    assert (settings.egress_network, settings.state_dir) == ("modelctl-egress", Path("/var/lib/modelctl"))
    assert ControllerSettings.from_env({"MODELCTL_EGRESS_NETWORK": ""}).egress_network is None


def test_manifest_errors_name_the_folder_as_the_user_knows_it(tmp_path: Path) -> None:
    folder = tmp_path / "etc" / "modelctl" / "models"
    folder.mkdir(parents=True)
    (folder / "smollm2.yaml").write_text("model: a.gguf\nrepicas: 2\n")
    settings = ControllerSettings.from_env(
        {"MODELCTL_MANIFESTS": str(folder), "MODELCTL_MANIFESTS_SHOWN_AS": "models"},
        model_roots=(tmp_path,),
    )
    with pytest.raises(InvalidManifests) as info:
        manifest_loader(settings)()
    (error,) = info.value.errors
    assert str(error).startswith("models/smollm2.yaml:2 field 'repicas': unknown field; did you mean")
    assert str(folder) not in str(info.value)


def test_manifest_errors_keep_the_controllers_path_when_not_told_otherwise(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("model: a.gguf\nrepicas: 2\n")
    settings = ControllerSettings(manifests=tmp_path, model_roots=(tmp_path,))
    with pytest.raises(InvalidManifests, match=f"{tmp_path}/a.yaml:2"):
        manifest_loader(settings)()


def test_a_missing_manifest_folder_is_named_as_shown(tmp_path: Path) -> None:
    settings = ControllerSettings(manifests=tmp_path / "gone", manifests_shown_as="./models")
    with pytest.raises(InvalidManifests, match=r"\./models: no such file or folder"):
        manifest_loader(settings)()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"MODELCTL_SCALE_DOWN_WINDOW_S": "soon"}, "MODELCTL_SCALE_DOWN_WINDOW_S='soon': not a valid float"),
        ({"MODELCTL_API_PORT": "eighty"}, "MODELCTL_API_PORT='eighty': not a valid int"),
        ({"MODELCTL_CPU_MEMORY": "lots"}, "MODELCTL_CPU_MEMORY: 'lots' is not a size"),
    ],
)
def test_a_bad_controller_variable_is_one_error_naming_it(env: dict[str, str], words: str) -> None:
    with pytest.raises(ModelctlError, match=re.escape(words)):
        ControllerSettings.from_env(env)


def test_on_demand_variables_reach_the_settings() -> None:
    settings = ControllerSettings.from_env(
        {
            "MODELCTL_CPU_MEMORY": "2GiB",
            "MODELCTL_SCALE_UP_WINDOW_S": "2",
            "MODELCTL_SCALE_DOWN_WINDOW_S": "30",
        }
    )
    assert settings.cpu_memory == 2 * 1024**3
    assert (settings.scaling.up_window_s, settings.scaling.down_window_s) == (2.0, 30.0)


async def test_a_console_task_that_breaks_is_logged_and_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio

    runs: list[int] = []
    forever = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise KeyError("a document the parser did not expect")
        await forever.wait()

    with caplog.at_level(logging.ERROR):
        task = asyncio.create_task(supervised("console-series", flaky, failures=Failures(), first_s=0.01))
        for _ in range(100):
            if len(runs) == 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert runs == [0, 1]
    (record,) = [r for r in caplog.records if "console-series failed" in r.getMessage()]
    assert record.exc_info is not None and "starting it again" in record.getMessage()


def test_the_controllers_load_checks_the_files_beside_the_weights(tmp_path: Path) -> None:
    """The reconciler's load reads the projector's header before any replica starts (`make shapes`)."""
    root = Path(os.environ.get("MODELCTL_MODEL_ROOT", Path(__file__).parents[2] / "models-data")).absolute()
    if not (root / "tiny-vlm" / "mmproj-tiny-vlm.gguf").is_file():
        pytest.fail(f"{root} lacks tiny-vlm; run `make shapes`")
    (tmp_path / "a.yaml").write_text(
        "model: SmolLM2-135M-Instruct.Q4_1.gguf\nmmproj: tiny-vlm/mmproj-tiny-vlm.gguf\n"
    )
    settings = ControllerSettings(manifests=tmp_path, model_roots=(root,))
    with pytest.raises(InvalidManifests) as info:
        manifest_loader(settings)()
    (error,) = info.value.errors
    assert (error.field, error.line) == ("mmproj", 2) and "mismatch between text model" in error.message
