"""No hand-written module list can go stale: every ``controller/...`` path that the README, the docs
or a docstring names must exist, so a move that forgets a mention fails here, not in a reader's
first hour."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATH = re.compile(r"controller/[A-Za-z0-9_/]+(?:\.py)?")
TEXTS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "controller").rglob("*.py")),
]


def named_paths(text: str) -> set[str]:
    return {match.rstrip("/") for match in PATH.findall(text)}


def exists(path: str) -> bool:
    return (REPO / path).exists()


def test_every_controller_path_a_text_names_exists() -> None:
    missing = {
        str(source.relative_to(REPO)): sorted(
            p for p in named_paths(source.read_text()) if not (REPO / p).exists()
        )
        for source in TEXTS
    }
    assert not {text: paths for text, paths in missing.items() if paths}


def test_the_check_sees_a_stale_name() -> None:
    assert named_paths("see controller/placement/weights.py and controller/gateway/") == {
        "controller/placement/weights.py",
        "controller/gateway",
    }
    assert not (REPO / "controller/placement/weights.py").exists()  # moved to controller/weights/
