"""The spec hash in container names and labels: keyed, so it tells nothing of env secrets to whoever
sees it, stable for one key (adoption after a restart), and still moved by a changed secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from controller.engines import build_spec
from controller.errors import ModelctlError
from controller.gpus.inventory import Inventory
from controller.manifests.loader import load_folder
from controller.manifests.model import LoadedModel
from controller.reconcile.desired import desired_state
from controller.runtime.speckey import KEY_FILE, spec_key

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def model(tmp_path: Path, secret: str, env_line: str = "HF_TOKEN: ${HF_TOKEN}") -> LoadedModel:
    (tmp_path / "m.yaml").write_text(f"name: m\nmodel: m.gguf\nenv:\n  {env_line}\n")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    (loaded,) = load_folder(tmp_path, model_roots=[tmp_path], environ={"HF_TOKEN": secret})
    return loaded


def unkeyed_guess(spec_fields: dict[str, object]) -> set[str]:
    """What someone without the key could compute from a guessed spec: plain digests of its JSON."""
    encoded = json.dumps(spec_fields, sort_keys=True, separators=(",", ":")).encode()
    return {
        hashlib.sha256(encoded).hexdigest()[:12],
        hmac.new(b"", encoded, hashlib.sha256).hexdigest()[:12],
    }


def test_a_right_guess_of_the_secret_does_not_reproduce_the_visible_hash(tmp_path: Path) -> None:
    spec = replace(build_spec(model(tmp_path, "hf_right"), 0), hash_key=KEY)
    guessed = asdict(replace(spec, hash_key=b""))
    del guessed["hash_key"]
    assert spec.spec_hash() not in unkeyed_guess(guessed)  # everything right but the key
    assert spec.labels("default")["io.modelctl.spec-hash"] == spec.spec_hash()
    assert spec.container_name("default").endswith(spec.spec_hash()[:8])


def test_the_visible_hash_is_not_a_function_of_the_secret_alone(tmp_path: Path) -> None:
    spec = build_spec(model(tmp_path, "hf_same"), 0)
    mine, theirs = replace(spec, hash_key=KEY), replace(spec, hash_key=OTHER_KEY)
    assert mine.spec_hash() != theirs.spec_hash()
    assert mine.spec_hash() == replace(spec, hash_key=KEY).spec_hash()  # one key: stable (adoption)


def test_a_changed_secret_still_rolls_the_replica(tmp_path: Path) -> None:
    old = replace(build_spec(model(tmp_path, "hf_one"), 0), hash_key=KEY)
    new = replace(build_spec(model(tmp_path, "hf_two"), 0), hash_key=KEY)
    assert old.spec_hash() != new.spec_hash()


def test_a_literal_value_never_hashes_like_the_reference_it_equals(tmp_path: Path) -> None:
    """The plan preview compares hashes: a posted manifest spelling out a guess must not 'keep'."""
    referred = replace(build_spec(model(tmp_path, "hf_right"), 0), hash_key=KEY)
    literal = replace(build_spec(model(tmp_path, "hf_right", env_line="HF_TOKEN: hf_right"), 0), hash_key=KEY)
    assert referred.env == literal.env  # the same container env...
    assert referred.spec_hash() != literal.spec_hash()  # ...not the same hash


def test_desired_state_keys_every_spec_it_returns(tmp_path: Path) -> None:
    desired = desired_state([model(tmp_path, "hf_x")], Inventory(gpus=()), hash_key=KEY)
    (spec,) = desired.specs
    assert spec.hash_key == KEY
    assert spec.spec_hash() != replace(spec, hash_key=b"").spec_hash()


def test_the_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = spec_key(state)
    assert len(key) == 32 and spec_key(state) == key  # a restarted controller reads the same key
    assert stat.S_IMODE((state / KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert sorted(p.name for p in state.iterdir()) == [KEY_FILE]  # no temporary file left
    assert spec_key(tmp_path / "elsewhere") != key


def test_a_broken_key_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("not hex\n")
    with pytest.raises(ModelctlError, match=rf"{KEY_FILE}: not a spec hash key .*delete it"):
        spec_key(tmp_path)


def test_a_state_folder_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the folder should be")
    with pytest.raises(ModelctlError, match=r"state/spec-hash.key: cannot read the spec hash key \(Not a"):
        spec_key(tmp_path / "state")
