"""No hand-written module list can go stale: every ``controller/...`` path and every document
(``*.md``) that the README, the docs or a docstring names must exist, so a move that forgets a
mention fails here, not in a reader's first hour."""

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


DOCUMENT = re.compile(r"(?<![A-Za-z0-9_./-])((?:docs/)?[A-Za-z0-9_-]+\.md)\b")


def test_every_document_a_docstring_names_is_in_the_repository() -> None:
    """A docstring's ``docs/x.md`` (or a top-level ``X.md``) is a file of this repository: not a
    design document that lives elsewhere."""
    missing = {
        str(source.relative_to(REPO)): sorted(
            name for name in set(DOCUMENT.findall(source.read_text())) if not (REPO / name).is_file()
        )
        for source in sorted((REPO / "controller").rglob("*.py"))
    }
    assert not {module: names for module, names in missing.items() if names}


def test_the_document_check_sees_a_missing_one() -> None:
    assert set(DOCUMENT.findall("as DESIGN.md says, and docs/hub.md")) == {"DESIGN.md", "docs/hub.md"}
