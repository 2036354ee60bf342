"""${NAME} references in manifest env values: syntax, filling from the environment, no leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.engines import build_spec
from controller.errors import InvalidManifests, ModelctlError
from controller.manifests.envrefs import EnvAllow, expand, references
from controller.manifests.loader import load_folder
from controller.settings import ControllerSettings

SECRET = "hf_s3cr3t-value"


@pytest.mark.parametrize(
    ("value", "names", "filled"),
    [
        ("plain", [], "plain"),
        ("${HF_TOKEN}", ["HF_TOKEN"], SECRET),
        ("Bearer ${HF_TOKEN}!", ["HF_TOKEN"], f"Bearer {SECRET}!"),
        ("${A}-${_B2}", ["A", "_B2"], "a-b"),
        ("cost: $$5, ref $${HF_TOKEN}", [], "cost: $5, ref ${HF_TOKEN}"),
        ("", [], ""),
    ],
)
def test_references_and_filling(value: str, names: list[str], filled: str) -> None:
    assert references(value) == names
    assert expand(value, {"HF_TOKEN": SECRET, "A": "a", "_B2": "b"}) == filled


@pytest.mark.parametrize("value", ["$HF_TOKEN", "${HF_TOKEN", "${1X}", "price $", "${}"])
def test_a_dollar_that_is_no_reference_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"write \$\$ for a literal \$"):
        references(value)


def test_a_missing_variable_is_named_once() -> None:
    with pytest.raises(ValueError, match=r"refers to \$\{NOPE\}, not set") as caught:
        expand("${NOPE}:${NOPE}:${SET}", {"SET": SECRET})
    assert SECRET not in str(caught.value)


def write(tmp_path: Path, env_yaml: str) -> Path:
    (tmp_path / "m.yaml").write_text(f"name: m\nmodel: m.gguf\nenv:\n{env_yaml}")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    return tmp_path


def test_the_loader_fills_references_into_the_container_env(tmp_path: Path) -> None:
    folder = write(tmp_path, "  HF_TOKEN: ${HF_TOKEN}\n  MODE: fast\n")
    (model,) = load_folder(folder, model_roots=[folder], environ={"HF_TOKEN": SECRET})
    assert model.manifest.env["HF_TOKEN"] == "${HF_TOKEN}"  # the manifest keeps what git has
    spec = build_spec(model, 0)
    assert ("HF_TOKEN", SECRET) in spec.env and ("MODE", "fast") in spec.env
    for text in (repr(model), repr(spec), str(spec)):
        assert SECRET not in text


def test_a_variable_not_set_is_an_error_on_the_field(tmp_path: Path) -> None:
    folder = write(tmp_path, "  MODE: fast\n  HF_TOKEN: ${HF_TOKEN}\n")
    with pytest.raises(InvalidManifests) as caught:
        load_folder(folder, environ={})
    (error,) = caught.value.errors
    assert (error.field, error.line, error.document) == ("env.HF_TOKEN", 5, None)
    assert "${HF_TOKEN}, not set in the controller's environment" in error.message


def test_a_malformed_reference_is_a_manifest_error(tmp_path: Path) -> None:
    folder = write(tmp_path, "  HF_TOKEN: $HF_TOKEN\n")
    with pytest.raises(InvalidManifests) as caught:
        load_folder(folder, environ={"HF_TOKEN": SECRET})
    (error,) = caught.value.errors
    assert error.field == "env.HF_TOKEN" and "starts no ${NAME} reference" in error.message


def test_a_changed_secret_changes_the_spec_hash(tmp_path: Path) -> None:
    folder = write(tmp_path, "  HF_TOKEN: ${HF_TOKEN}\n")
    (old,) = load_folder(folder, model_roots=[folder], environ={"HF_TOKEN": "one"})
    (new,) = load_folder(folder, model_roots=[folder], environ={"HF_TOKEN": "two"})
    assert build_spec(old, 0).spec_hash() != build_spec(new, 0).spec_hash()  # a rolling update


# --- which variables a manifest may name, and which keys it may set ------------------------------


def test_only_allowed_variables_may_be_named(tmp_path: Path) -> None:
    folder = write(tmp_path, "  A: ${HF_TOKEN}\n  B: ${AWS_SECRET_ACCESS_KEY}\n  C: x-${PATH}\n")
    environ = {"HF_TOKEN": SECRET, "AWS_SECRET_ACCESS_KEY": SECRET, "PATH": "/bin"}
    with pytest.raises(InvalidManifests) as caught:
        load_folder(folder, environ=environ, env_allow=EnvAllow())
    found = [(e.field, e.line) for e in caught.value.errors]
    assert found == [("env.B", 5), ("env.C", 6)]
    assert "${AWS_SECRET_ACCESS_KEY}, which manifests may not use" in caught.value.errors[0].message
    assert "MODELCTL_MANIFEST_ENV_ALLOW" in caught.value.errors[0].message
    assert SECRET not in str(caught.value)


def test_the_setting_allows_names_and_prefixes(tmp_path: Path) -> None:
    folder = write(tmp_path, "  A: ${OPENAI_API_KEY}\n  B: ${ORG_ONE}-${ORG_TWO}\n")
    environ = {"OPENAI_API_KEY": "k", "ORG_ONE": "1", "ORG_TWO": "2"}
    allow = EnvAllow.parse(" OPENAI_API_KEY , ORG_* ")
    (model,) = load_folder(folder, environ=environ, env_allow=allow)
    assert dict(model.env) == {"A": "k", "B": "1-2"}


def test_the_default_allow_list_comes_from_the_controllers_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write(tmp_path, "  A: ${MY_KEY}\n")
    with pytest.raises(InvalidManifests, match=r"\$\{MY_KEY\}, which manifests may not use"):
        load_folder(folder, environ={"MY_KEY": "k"})
    monkeypatch.setenv("MODELCTL_MANIFEST_ENV_ALLOW", "MY_KEY")
    assert dict(load_folder(folder, environ={"MY_KEY": "k"})[0].env) == {"A": "k"}


@pytest.mark.parametrize("name", ["MODELCTL_CONTROLLER_KEY", "MODELCTL_GATEWAY_KEY", "MODELCTL_X"])
def test_modelctl_variables_are_never_named_whatever_the_setting(tmp_path: Path, name: str) -> None:
    folder = write(tmp_path, f"  A: Bearer ${{{name}}}\n")
    allow = EnvAllow(names=frozenset({name}), prefixes=("MODEL", ""))  # as if someone allowed it
    with pytest.raises(InvalidManifests) as caught:
        load_folder(folder, environ={name: SECRET}, env_allow=allow)
    (error,) = caught.value.errors
    assert error.field == "env.A" and f"${{{name}}}" in error.message and "never" in error.message
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("value", ["MODELCTL_*", "MODELCTL_CONTROLLER_KEY", "1BAD", "A-B", "*"])
def test_a_setting_that_would_allow_modelctl_or_is_no_name_stops_the_start(value: str) -> None:
    with pytest.raises(ValueError, match="MODELCTL_MANIFEST_ENV_ALLOW"):
        EnvAllow.parse(value)
    with pytest.raises(ModelctlError, match="MODELCTL_MANIFEST_ENV_ALLOW"):
        ControllerSettings.from_env({"MODELCTL_MANIFEST_ENV_ALLOW": value})


def test_the_setting_is_read_with_the_others() -> None:
    settings = ControllerSettings.from_env({"MODELCTL_MANIFEST_ENV_ALLOW": "A, B_*"})
    assert settings.manifest_env_allow == ("A", "B_*")


@pytest.mark.parametrize(
    "key",
    [
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "NVIDIA_MIG_CONFIG_DEVICES",
        "CUDA_VISIBLE_DEVICES",
        "LD_PRELOAD",
        "LD_AUDIT",
        "VLLM_API_KEY",
        "LLAMA_API_KEY",
        "LLAMA_ARG_PORT",
        "LLAMA_ARG_HOST",
        "LLAMA_ARG_MODEL",
        "LLAMA_ARG_N_PARALLEL",
    ],
)
def test_keys_placement_or_the_gateway_own_are_refused_naming_the_key(tmp_path: Path, key: str) -> None:
    folder = write(tmp_path, f"  MODE: fast\n  {key}: x\n")
    with pytest.raises(InvalidManifests) as caught:
        load_folder(folder, environ={})
    (error,) = caught.value.errors
    assert error.field == f"env.{key}.[key]" and error.line == 5
    assert error.message.startswith(f"{key} may not be set by a manifest")


@pytest.mark.parametrize(
    "key", ["LD_LIBRARY_PATH", "CUDA_DEVICE_ORDER", "VLLM_CPU_OMP_THREADS_BIND", "OMP_NUM_THREADS"]
)
def test_other_keys_pass(tmp_path: Path, key: str) -> None:
    folder = write(tmp_path, f"  {key}: x\n")
    assert dict(load_folder(folder, environ={})[0].env) == {key: "x"}
