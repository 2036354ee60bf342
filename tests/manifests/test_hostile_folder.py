"""A manifest folder as hostile input: every way of reading it going wrong is one located
ManifestError inside InvalidManifests, and every number and name from it is bounded."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.errors import InvalidManifests, ManifestError
from controller.manifests import reading
from controller.manifests.loader import load_folder

Make = Callable[[Path], object]


def text(content: str) -> Make:
    return lambda p: p.write_text(content, encoding="utf-8")


def raw(content: bytes) -> Make:
    return lambda p: p.write_bytes(content)


def bomb(levels: int, width: int) -> str:
    lines = ["l0: &l0 [" + ",".join(["x"] * width) + "]"]
    for n in range(1, levels):
        lines.append(f"l{n}: &l{n} [" + ",".join([f"*l{n - 1}"] * width) + "]")
    return "model: m.gguf\n" + "\n".join(lines) + "\n"


HOSTILE: list[tuple[str, Make, str, int | None]] = [
    # (what, how a.yaml is made, words of the error, its line)
    ("a 300-character model path", text("model: " + "x" * 300 + ".gguf\n"), "File name too long", 1),
    ("deep nesting", text("model: m.gguf\nargs: " + "[" * 5000 + "]" * 5000 + "\n"), "nested deeper", 2),
    ("billion laughs", text(bomb(9, 10)), "expands to more than 10000 nodes", None),
    ("a recursive alias", text("model: m.gguf\nargs: &a [*a]\n"), "refers to a node that contains it", 2),
    ("UTF-16", raw("model: m.gguf\n".encode("utf-16")), "not UTF-8", 1),
    ("Latin-1 on line 2", raw(b"model: m.gguf\nname: caf\xe9\n"), "not UTF-8", 2),
    ("a NUL byte", raw(b"model: m.gguf\nname: a\x00\n"), "U+0000 is not allowed", 2),
    ("a NUL escape", text('model: "m\\0.gguf"\n'), "control character", 1),
    ("a FIFO", lambda p: os.mkfifo(p), "not a regular file", None),
    ("a folder named *.yaml", lambda p: p.mkdir(), "not a regular file", None),
    ("a symlink loop", lambda p: p.symlink_to(p), "Too many levels of symbolic links", None),
    ("a dangling symlink", lambda p: p.symlink_to(p.parent / "gone"), "no such file", None),
    ("the null device", lambda p: p.symlink_to("/dev/null"), "not a regular file", None),
    ("over 1 MiB", text("model: m.gguf\n#" + "x" * (1 << 20)), "larger than 1024 KiB", None),
    ("an int of 5000 digits", text("model: m.gguf\nreplicas: " + "9" * 5000 + "\n"), "4300 digits", None),
    ("a date that is none", text("model: m.gguf\nname: 2001-02-30\n"), "day is out of range", None),
    ("too many documents", text("---\nmodel: m.gguf\n" * 1100), "more documents than the 1024", 2050),
    ("an unhashable key", text("model: m.gguf\n? [a]\n: b\n"), "invalid YAML", None),
    (
        "a path escaping with ..",
        text("model: ../../../../etc/passwd\nengine: vllm\n"),
        "outside the model roots",
        1,
    ),
]


@pytest.mark.parametrize(("what", "make", "words", "line"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_file_is_one_located_error(
    tmp_path: Path, what: str, make: Make, words: str, line: int | None
) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "ok.yaml").write_text("model: m.gguf\nname: fine\n")
    make(tmp_path / "a.yaml")
    with pytest.raises(InvalidManifests) as caught:
        load_folder(tmp_path, model_roots=[tmp_path])
    (error,) = caught.value.errors
    assert error.file == str(tmp_path / "a.yaml")
    assert words in error.message
    if line is not None:
        assert error.line == line


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.gguf").write_bytes(b"GGUF")
    (root / "m.gguf").symlink_to(outside / "secret.gguf")
    (root / "a.yaml").write_text(f"model: m.gguf\n---\nmodel: {root}/../outside/secret.gguf\n")
    with pytest.raises(InvalidManifests) as caught:
        load_folder(root, model_roots=[root])
    assert [e.document for e in caught.value.errors] == [1, 2]
    assert all("outside the model roots" in e.message for e in caught.value.errors)


def test_hidden_entries_are_not_manifests(tmp_path: Path) -> None:
    (tmp_path / ".#a.yaml").symlink_to("user@host.1234")  # an editor's lock file, dangling
    (tmp_path / "._a.yaml").write_bytes(b"\x00\x05\x16\x07")  # macOS metadata
    (tmp_path / "a.yaml").write_text("model: m.gguf\n")
    assert [m.name for m in load_folder(tmp_path)] == ["m"]


def test_an_unlistable_path_is_one_error_on_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidManifests) as caught:
        load_folder(tmp_path / "file" / "sub")  # ENOTDIR
    (error,) = caught.value.errors
    assert error.file == str(tmp_path / "file" / "sub")


def test_too_many_files_is_one_error_on_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "MAX_FILES", 3)
    for n in range(4):
        (tmp_path / f"{n}.yaml").write_text(f"model: m{n}.gguf\n")
    with pytest.raises(InvalidManifests) as caught:
        load_folder(tmp_path)
    assert [(e.file, e.message) for e in caught.value.errors] == [
        (str(tmp_path), "holds 4 manifest files; at most 3 are read")
    ]


def test_the_bytes_of_one_load_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "MAX_TOTAL_BYTES", 40)
    for n in range(3):
        (tmp_path / f"{n}.yaml").write_text(f"model: m{n}.gguf\n")  # 15 bytes each
    with pytest.raises(InvalidManifests) as caught:
        load_folder(tmp_path)
    (error,) = caught.value.errors
    assert error.file == str(tmp_path / "2.yaml") and "more than" in error.message


def test_a_small_alias_use_still_loads(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "x-args: &args [--jinja, --temp, '0.2']\n---\nmodel: a.gguf\nargs: *args\n"
    )
    with pytest.raises(InvalidManifests) as caught:  # anchors do not reach across documents
        load_folder(tmp_path)
    assert "undefined alias" in caught.value.errors[0].message
    (tmp_path / "a.yaml").write_text("model: a.gguf\nargs: &args [--jinja]\nenv: {}\n")
    assert load_folder(tmp_path)[0].manifest.args == ["--jinja"]


BOUNDS = [
    ("context_length: 100000000000", "context_length", "less than or equal to 16777216"),
    ("replicas: 1" + "0" * 400, "replicas", "less than or equal to 64"),
    ("num_gpus: 1000", "num_gpus", "less than or equal to 64"),
    ("max_batch_size: 1000000", "max_batch_size", "less than or equal to 4096"),
    ("gpu_memory: 1.0e+400", "gpu_memory.float", "finite number"),
    ("gpu_memory: .nan", "gpu_memory.float", "finite number"),
    ("gpu_memory: " + "9" * 400 + "GB", "gpu_memory", "is not a size"),
    ("gpu_memory: 99999999999TiB", "gpu_memory", "more memory than any machine"),
    ("idle_timeout: .inf", "idle_timeout.float", "finite number"),
    ("idle_timeout: 99999999999999999999999h", "idle_timeout", "at most 30 days"),
    ("load_timeout: 1" + "0" * 100, "load_timeout", "at most 30 days"),
    ("name: " + "a" * 64, "name", "1-63 lower-case"),
    ("aliases: [" + ",".join(f"a{n}" for n in range(33)) + "]", "aliases", "at most 32 items"),
    ("args: [" + ",".join(["x"] * 257) + "]", "args", "at most 256 items"),
    ("args: ['" + "x" * 20000 + "']", "args.0", "at most 16384 characters"),
    ("env: {A: '" + "x" * 40000 + "'}", "env.A", "at most 32768 characters"),
    ('image: "a\\tb"', "image", "control character"),
    ("image: " + "a" * 600, "image", "at most 512 characters"),
    ('args: ["a\\0b"]', "args.0", "NUL"),
    ("model: " + "a/" * 2100 + "m.gguf", "model", "at most 4096 characters"),
]


@pytest.mark.parametrize(("line", "field", "words"), BOUNDS, ids=[b[1] + ":" + b[2] for b in BOUNDS])
def test_numbers_and_strings_from_a_manifest_are_bounded(
    tmp_path: Path, line: str, field: str, words: str
) -> None:
    model = "" if line.startswith("model:") else "model: m.gguf\n"
    (tmp_path / "a.yaml").write_text(model + line + "\n")
    with pytest.raises(InvalidManifests) as caught:
        load_folder(tmp_path)
    found = {e.field: e for e in caught.value.errors}
    assert field in found, [str(e) for e in caught.value.errors]
    assert words in found[field].message
    assert len(str(found[field])) < 400  # a huge value is not echoed back


def test_errors_never_carry_a_traceback_type(tmp_path: Path) -> None:
    """Every error of a load is a ManifestError (the loop reports them; nothing else escapes)."""
    (tmp_path / "a.yaml").write_text("model: " + "x" * 300 + ".gguf\n")
    os.mkfifo(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("[" * 100)
    with pytest.raises(InvalidManifests) as caught:
        load_folder(tmp_path, model_roots=[tmp_path])
    assert [Path(e.file).name for e in caught.value.errors] == ["a.yaml", "b.yaml", "c.yaml"]
    assert all(type(e) is ManifestError for e in caught.value.errors)
