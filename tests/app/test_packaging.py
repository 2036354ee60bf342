"""Packaging: the wheel the modelctl image installs holds every file under controller/, builds
without warnings, and the development install is an editable one of this checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import controller

REPO = Path(__file__).resolve().parents[2]


def package_files() -> set[str]:
    return {
        str(p.relative_to(REPO))
        for p in (REPO / "controller").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_the_wheel_holds_every_file_under_controller_and_builds_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("hatchling", reason="the build backend (pip install -e '.[test]')")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    done = subprocess.run(
        [*pip, "wheel", "-v", "--no-deps", "--no-build-isolation", "--wheel-dir", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    output = done.stdout + done.stderr
    for noise in ("Deprecat", "deprecat", "Please be careful"):
        assert noise not in output, output
    (wheel,) = tmp_path.glob("modelctl-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert package_files() <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "License-Expression: Apache-2.0" in metadata


def test_the_development_install_is_this_checkout() -> None:
    assert Path(controller.__file__).resolve() == REPO / "controller" / "__init__.py"
