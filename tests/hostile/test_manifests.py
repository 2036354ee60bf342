"""Hostile manifests, generated: whatever a manifest folder holds (any text, any bytes, any nesting,
aliases, sizes, symlinks, FIFOs, folders), ``load_folder`` returns valid models or raises
``InvalidManifests`` whose every error names a file of that folder, and never anything else; the
weights headers a manifest points placement at are read the same way; and the reconciler's load
step keeps the last good set when the folder turns hostile.

Hypothesis draws the cases (deadline off: no timed assertions; pytest-timeout bounds a hang).
"""

from __future__ import annotations

import json
import os
import shutil
import string
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controller.endpoints.store import EndpointStore
from controller.errors import InvalidManifests
from controller.gpus.inventory import Inventory
from controller.manifests.flags import LLAMACPP_RESERVED, VLLM_RESERVED
from controller.manifests.loader import load_folder
from controller.manifests.model import LoadedModel
from controller.manifests.values import NAME_PATTERN
from controller.reconcile.loop import Reconciler
from controller.weights.info import EstimateError
from controller.weights.read import read_weights

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hostile-"))
    try:
        (path / "m.gguf").write_bytes(b"GGUF")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def load_or_errors(path: Path) -> list[LoadedModel] | InvalidManifests:
    """What load_folder gives: models, or its InvalidManifests (anything else fails the test)."""
    try:
        return load_folder(path, model_roots=[path], environ={"HF_TOKEN": "t"})
    except InvalidManifests as exc:
        return exc


def assert_located(result: list[LoadedModel] | InvalidManifests, path: Path) -> None:
    """Errors name a file of ``path`` (or the folder); models are within the manifest's bounds."""
    if isinstance(result, InvalidManifests):
        assert result.errors
        for error in result.errors:
            assert error.file == str(path) or Path(error.file).parent == path, error
            assert len(error.message) < 2000
        return
    for model in result:
        assert model.manifest.max_count <= 64 and len(model.manifest.aliases) <= 32
        assert all(len(name) <= 63 for name in model.manifest.names)
        assert model.weights is None or model.weights.is_relative_to(path.resolve())


# --- any text, any bytes -------------------------------------------------------------------------


@SETTINGS
@given(st.text(max_size=2000))
def test_any_text_is_models_or_located_errors(content: str) -> None:
    with folder() as path:
        (path / "a.yaml").write_text(content, encoding="utf-8", errors="surrogatepass")
        assert_located(load_or_errors(path), path)


@SETTINGS
@given(st.binary(max_size=2000))
def test_any_bytes_are_models_or_located_errors(content: bytes) -> None:
    with folder() as path:
        (path / "a.yml").write_bytes(content)
        assert_located(load_or_errors(path), path)


YAML_BITS = st.sampled_from(
    ["model: m.gguf\n", "---\n", "&a ", "*a ", "[", "]", "{", "}", ", ", ": ", "- ", "\n", "  ", "? ",
     "!!binary ", "!!python/object:os.system ", "<<: ", "'", '"', "\\0", "1.0e+400 ", ".nan ", "2001-02-30 ",
     "9" * 50, "x" * 300, "${MODELCTL_CONTROLLER_KEY}", "${HF_TOKEN}", "$", "#", "\t", "\x00", "\ufeff", "é"]
)  # fmt: skip


@SETTINGS
@given(st.lists(YAML_BITS, max_size=80))
def test_yaml_made_of_hostile_pieces_is_models_or_located_errors(pieces: list[str]) -> None:
    with folder() as path:
        (path / "a.yaml").write_text("".join(pieces), encoding="utf-8")
        assert_located(load_or_errors(path), path)


# --- manifests with hostile values -------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=100),
    st.text(alphabet=string.digits + ".eE+-smhGiBKMT", max_size=40),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
)
FIELDS = st.sampled_from(
    ["model", "name", "engine", "aliases", "replicas", "min_replicas", "max_replicas", "num_gpus",
     "max_batch_size", "context_length", "gpu_memory", "idle_timeout", "load_timeout", "target_requests",
     "priority", "image", "args", "env", "balancing", "unknown"]
)  # fmt: skip


@SETTINGS
@given(st.dictionaries(FIELDS, VALUES, max_size=8), st.booleans())
def test_manifests_with_hostile_values_are_models_or_located_errors(
    doc: dict[str, Any], as_json: bool
) -> None:
    doc.setdefault("model", "m.gguf")
    with folder() as path:
        if as_json:
            (path / "a.json").write_text(json.dumps(doc), encoding="utf-8")
        else:
            (path / "a.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        assert_located(load_or_errors(path), path)


@SETTINGS
@given(st.text(max_size=300), st.lists(st.text(max_size=80), max_size=40))
def test_names_and_aliases_are_valid_or_refused(name: str, aliases: list[str]) -> None:
    with folder() as path:
        doc = {"model": "m.gguf", "name": name, "aliases": aliases}
        (path / "a.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        result = load_or_errors(path)
        assert_located(result, path)
        if not isinstance(result, InvalidManifests):
            import re

            assert all(re.fullmatch(NAME_PATTERN, n) for n in result[0].manifest.names)


# --- nesting, aliases and sizes -------------------------------------------------------------------


@SETTINGS
@given(st.integers(min_value=0, max_value=3000), st.sampled_from(["[", "{a: ", "- "]))
def test_any_nesting_is_bounded(depth: int, opener: str) -> None:
    closer = {"[": "]", "{a: ": "}", "- ": ""}[opener]
    body = "".join(
        f"{'  ' * n if opener == '- ' else ''}{opener}" + ("\n" if opener == "- " else "")
        for n in range(depth)
    )
    with folder() as path:
        (path / "a.yaml").write_text(f"model: m.gguf\nx: {body}1{closer * depth}\n", encoding="utf-8")
        result = load_or_errors(path)
        assert_located(result, path)
        assert isinstance(result, InvalidManifests)  # 'x' is unknown, or the nesting too deep


@SETTINGS
@given(st.integers(min_value=1, max_value=12), st.integers(min_value=1, max_value=12))
def test_alias_expansion_is_bounded(levels: int, width: int) -> None:
    lines = ["model: m.gguf", "args: &l0 [" + ",".join(["x"] * width) + "]"]
    lines += [f"x{n}: &l{n} [" + ",".join([f"*l{n - 1}"] * width) + "]" for n in range(1, levels)]
    with folder() as path:
        (path / "a.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = load_or_errors(path)
        assert_located(result, path)
        if width**levels > 10_000:
            assert isinstance(result, InvalidManifests)
            assert any("expands to more than" in e.message for e in result.errors)


# --- what the folder holds ----------------------------------------------------------------------

ENTRIES = st.sampled_from(["file", "folder", "fifo", "loop", "dangling", "outside", "dev", "hidden", "long"])


def make_entry(path: Path, index: int, kind: str, outside: Path) -> None:
    entry = path / f"e{index}.yaml"
    if kind == "file":
        entry.write_text(f"model: m.gguf\nname: m{index}\n")
    elif kind == "folder":
        entry.mkdir()
    elif kind == "fifo":
        os.mkfifo(entry)
    elif kind == "loop":
        entry.symlink_to(entry)
    elif kind == "dangling":
        entry.symlink_to(path / "gone")
    elif kind == "outside":
        entry.write_text(f"model: {outside}\nname: o{index}\n")
    elif kind == "dev":
        entry.symlink_to("/dev/zero")
    elif kind == "hidden":
        (path / f".e{index}.yaml").symlink_to(path / "gone")
    else:
        entry.write_text(f"model: {'d/' * 1000}{'x' * 300}.gguf\nname: l{index}\n")


@SETTINGS
@given(st.lists(ENTRIES, max_size=8))
def test_any_mix_of_entries_is_models_or_located_errors(kinds: list[str]) -> None:
    with folder() as path, tempfile.TemporaryDirectory() as elsewhere:
        outside = Path(elsewhere) / "secret.gguf"
        outside.write_bytes(b"GGUF")
        for index, kind in enumerate(kinds):
            make_entry(path, index, kind, outside)
        result = load_or_errors(path)
        assert_located(result, path)
        bad = {"folder", "fifo", "loop", "dangling", "outside", "dev", "long"}
        assert isinstance(result, InvalidManifests) == bool(bad & set(kinds))


# --- reserved flags, spelled any way the engine accepts ----------------------------------------


def spellings(flag: str, engine: str) -> st.SearchStrategy[str]:
    """Ways ``engine`` reads ``flag``: '_' for '-' in long names, '=value', and for vLLM prefixes
    and short flags with an attached value."""
    if not flag.startswith("--"):
        forms = [st.just(flag), st.just(f"{flag}=1")]
        if engine == "vllm":
            forms.append(st.integers(0, 99).map(lambda n: f"{flag}{n}"))
        return st.one_of(forms)
    body = flag[2:]

    def spelled(marks: list[bool], cut: int, value: bool) -> str:
        chars = [("_" if m and c == "-" else c) for c, m in zip(body, marks, strict=False)]
        name = "--" + "".join(chars)[: cut if engine == "vllm" else None]
        return name + ("=1" if value else "")

    return st.builds(
        spelled,
        st.lists(st.booleans(), min_size=len(body), max_size=len(body)),
        st.integers(min_value=len(body) // 2 + 1, max_value=len(body)),
        st.booleans(),
    )


def reserved_spelling(engine: str) -> st.SearchStrategy[str]:
    table = VLLM_RESERVED if engine == "vllm" else LLAMACPP_RESERVED
    return st.sampled_from([f for names in table for f in names]).flatmap(lambda f: spellings(f, engine))


@SETTINGS
@given(st.sampled_from(["vllm", "llamacpp"]).flatmap(lambda e: st.tuples(st.just(e), reserved_spelling(e))))
def test_a_reserved_flag_spelled_any_accepted_way_is_refused(case: tuple[str, str]) -> None:
    engine, arg = case
    weights = "m.gguf" if engine == "llamacpp" else "m.safetensors"
    with folder() as path:
        (path / "a.yaml").write_text(
            yaml.safe_dump({"model": weights, "engine": engine, "args": ["--x", arg]})
        )
        result = load_or_errors(path)
        assert isinstance(result, InvalidManifests), arg
        (error,) = result.errors
        assert error.field == "args" and f"args[1] '{arg}' may not set --" in error.message


# --- weights headers ------------------------------------------------------------------------------

U32, U64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
HUGE = st.one_of(st.integers(0, 64), st.sampled_from([2**31, 2**32 - 1, 2**40, 2**63, 2**64 - 1]))


@st.composite
def gguf_headers(draw: st.DrawFn) -> bytes:
    """GGUF headers with hostile counts, lengths, types and nesting, maybe truncated."""
    parts = [b"GGUF", struct.pack("<I", draw(st.sampled_from([2, 3, 3, 1, 99])))]
    parts.append(struct.pack("<QQ", draw(HUGE), draw(HUGE)))
    for _ in range(draw(st.integers(0, 6))):
        key = draw(st.sampled_from([b"general.alignment", b"llama.block_count", b"x"]))
        parts.append(struct.pack("<Q", draw(st.sampled_from([len(key), 2**40, 2**64 - 1]))) + key)
        kind = draw(st.integers(0, 13))
        parts.append(struct.pack("<I", kind))
        if kind == 9:
            parts.append(struct.pack("<IQ", draw(st.integers(0, 13)), draw(HUGE)))
        parts.append(draw(st.binary(max_size=64)))
    for _ in range(draw(st.integers(0, 3))):
        parts.append(struct.pack("<Q", 1) + b"t" + struct.pack("<I", draw(HUGE) % 2**32))
        parts.append(draw(st.binary(max_size=80)))
    data = b"".join(parts)
    return data[: draw(st.integers(4, len(data)))]


# Found by this test (2026-12-07): a tensor of an unknown ggml type, whose error named no file.
UNKNOWN_TYPE = (
    b"GGUF\x02\x00\x00\x00\x01" + b"\x00" * 15 + b"\x11" + b"\x00" * 7 + b"general.alignment"
    + b"\x00" * 5 + b"\x11" + b"\x00" * 7 + b"gen"
)  # fmt: skip


@SETTINGS
@given(gguf_headers())
@example(UNKNOWN_TYPE)
def test_a_hostile_gguf_header_is_an_estimate_error_or_a_size(header: bytes) -> None:
    with folder() as path:
        (path / "w.gguf").write_bytes(header)
        try:
            info = read_weights(path / "w.gguf")
        except EstimateError as exc:
            assert str(path / "w.gguf") in str(exc)
        else:
            assert info.weight_bytes >= 0


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
)


@SETTINGS
@given(
    st.one_of(HUGE, st.just(-1)),
    st.one_of(
        st.dictionaries(st.text(max_size=8), JSONISH, max_size=4).map(json.dumps),
        st.just("[" * 100_000),
        st.text(max_size=50),
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "num_hidden_layers",
                "num_attention_heads",
                "hidden_size",
                "head_dim",
                "num_key_value_heads",
                "max_position_embeddings",
                "text_config",
            ]
        ),
        JSONISH,
        max_size=7,
    ),
)
def test_a_hostile_safetensors_header_or_config_is_an_estimate_error_or_a_size(
    length: int, header: str, config: dict[str, Any]
) -> None:
    body = header.encode()
    length = len(body) if length < 0 else length
    with folder() as path:
        (path / "w.safetensors").write_bytes(struct.pack("<Q", length) + body)
        (path / "config.json").write_text(json.dumps(config))
        try:
            info = read_weights(path / "w.safetensors")
        except EstimateError:
            return
        assert info.weight_bytes >= 0
        arch = info.architecture
        if arch is not None:
            assert all(type(v) is int and v >= 1 for v in (arch.layers, arch.kv_heads, arch.key_length))
            assert arch.context_length is None or type(arch.context_length) is int


def test_a_header_claiming_a_huge_string_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "w.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**62) + b"k")
    with pytest.raises(EstimateError, match="longer than"):
        read_weights(path)
    path.write_bytes(
        b"GGUF"
        + struct.pack("<IQQ", 3, 0, 1)
        + struct.pack("<Q", 1)
        + b"k"
        + struct.pack("<IIQ", 9, 4, 2**40)
    )
    with pytest.raises(EstimateError, match="items in one array"):
        read_weights(path)
    (tmp_path / "w.safetensors").write_bytes(struct.pack("<Q", 2**63) + b"{}")
    with pytest.raises(EstimateError, match="a header of"):
        read_weights(tmp_path / "w.safetensors")


# --- the reconciler keeps the last good set -------------------------------------------------------


class NoRuntime:
    def list(self) -> list[object]:
        return []


def test_the_loop_keeps_the_last_good_set_whatever_the_folder_turns_into(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    manifest = tmp_path / "a.yaml"
    manifest.write_text("model: m.gguf\nname: good\n")
    r = Reconciler(
        runtime=NoRuntime(),  # type: ignore[arg-type]
        load_models=partial(load_folder, tmp_path, model_roots=[tmp_path]),
        store=EndpointStore(),
        prober=None,  # type: ignore[arg-type]
        drainer=None,  # type: ignore[arg-type]
        read_inventory=Inventory,
    )
    r.refresh_models()
    good = r.models
    assert [m.name for m in good] == ["good"] and r.manifest_errors == []
    deep = "model: m.gguf\nargs: " + "[" * 2000 + "]" * 2000 + "\n"  # RecursionError in PyYAML
    laughs = "".join(f"l{n}: &l{n} [" + ",".join([f"*l{n - 1}" if n else "x"] * 10) + "]\n" for n in range(9))
    hostile = [
        lambda: manifest.write_text("model: " + "x" * 300 + ".gguf\n"),  # ENAMETOOLONG
        lambda: manifest.write_text(deep),
        lambda: manifest.write_text("model: m.gguf\n" + laughs),
        lambda: manifest.write_bytes(b"model: caf\xe9.gguf\n"),
        lambda: (manifest.unlink(), os.mkfifo(manifest)),
        lambda: (manifest.unlink(), manifest.mkdir()),
        lambda: (manifest.rmdir(), manifest.symlink_to(manifest)),
    ]
    for make in hostile:
        make()
        r.refresh_models()
        assert r.models is good
        assert len(r.manifest_errors) == 1 and r.manifest_errors[0].startswith(str(manifest))
    manifest.unlink()
    manifest.write_text("model: m.gguf\nname: better\n")
    r.refresh_models()
    assert [m.name for m in r.models] == ["better"] and r.manifest_errors == []
