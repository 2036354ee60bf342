"""Reading a manifest folder as hostile input: which entries are manifest files, their bytes, and
their YAML documents, each step bounded, every failure one ``ManifestError`` naming the file.

The folder is usually a git checkout anyone with push access edits, and the controller reads it
on every pass: whatever it holds must never end the reconcile loop, hang it or fill its memory.
So entries are opened without blocking and only regular files are read (a FIFO, a socket, a
device or a folder named ``*.yaml`` is an error, never a hang); a file is read up to
``MAX_FILE_BYTES`` and must be UTF-8; a folder holds at most ``MAX_FILES`` manifest files; YAML
nesting is bounded (``MAX_DEPTH``: the composer recurses) and so are the nodes a document expands
to through aliases (``MAX_NODES``: a "billion laughs" file of a few hundred bytes is refused while
it is composed, before anything walks the expansion). Hidden entries (``.#a.yaml``, an editor's
lock, ``._a.yaml``, macOS metadata) are not manifests and are skipped.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError

from controller.errors import ManifestError

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# A manifest is a few hundred bytes and under a hundred nodes. Pure-Python YAML reads about 1 MiB a
# second, and the loop reads the folder on every pass: these bound a hostile folder's cost per pass
# to a few seconds of one thread.
MAX_FILE_BYTES = 1 << 20  # 1 MiB
MAX_TOTAL_BYTES = 4 << 20  # all files of one load together
MAX_FILES = 1024
MAX_DOCUMENTS = 1024  # in one load, all files together
MAX_DEPTH = 32  # nesting of mappings and sequences (a manifest needs 3)
MAX_NODES = 10_000  # nodes one document expands to, aliases counted at their full size


@dataclass(slots=True)
class Budget:
    """What one load may still read: bytes and documents over all its files."""

    bytes: int = field(default_factory=lambda: MAX_TOTAL_BYTES)
    documents: int = field(default_factory=lambda: MAX_DOCUMENTS)


class Unreadable(Exception):
    """A file that cannot be read as manifest text; ``line`` where known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def manifest_files(path: Path, errors: list[ManifestError]) -> list[Path]:
    """The manifest files at ``path``: itself if not a folder, else its non-hidden *.yaml / *.yml /
    *.json entries, sorted. Problems (no such path, unreadable folder, too many files) go to
    ``errors``; entries are checked when they are read."""
    try:
        if not stat.S_ISDIR(path.stat().st_mode):
            return [path]
        names = sorted(
            entry.name
            for entry in os.scandir(path)
            if not entry.name.startswith(".") and entry.name.endswith(MANIFEST_SUFFIXES)
        )
    except OSError as exc:
        errors.append(ManifestError(os_problem(exc), file=str(path)))
        return []
    if len(names) > MAX_FILES:
        errors.append(
            ManifestError(f"holds {len(names)} manifest files; at most {MAX_FILES} are read", file=str(path))
        )
        return []
    return [path / name for name in names]


def os_problem(exc: OSError) -> str:
    """An OSError in a manifest author's words (no traceback, no errno numbers)."""
    if isinstance(exc, FileNotFoundError):
        return "no such file or folder"
    return f"cannot read: {exc.strerror or type(exc).__name__}"


def read_text(file: Path, budget: Budget) -> str:
    """The file's text: a regular file of at most MAX_FILE_BYTES (and what is left of the load's
    ``budget``), UTF-8. Raises Unreadable.

    Opened with O_NONBLOCK, so a FIFO (or a device) that replaced a file after the folder was
    listed cannot block the loop; it is refused by its type before any byte is read."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise Unreadable(os_problem(exc)) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise Unreadable("not a regular file (a folder, FIFO, socket or device): not a manifest")
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise Unreadable(os_problem(exc)) from exc
    if len(data) > MAX_FILE_BYTES:
        raise Unreadable(f"larger than {MAX_FILE_BYTES // 1024} KiB: not a manifest")
    if len(data) > budget.bytes:
        raise Unreadable(f"the files before it and this one hold more than {MAX_TOTAL_BYTES >> 20} MiB")
    budget.bytes -= len(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problem = f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        raise Unreadable(problem, line) from exc


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the composer bounded in depth and in expanded size."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0
        self.total = 0  # nodes the document being composed expands to so far
        self.sizes: dict[int, int] = {}  # id(node) -> nodes it expands to; node kept alive by the tree

    def compose_document(self) -> Any:
        self.total = 0
        self.sizes = {}  # anchors do not reach across documents; ids of freed nodes get reused
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]  # PyYAML's stubs leave it bare
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self.sizes:
                raise ComposerError(None, None, "an alias refers to a node that contains it", mark)
            self.grow(self.sizes[id(node)], mark)
            return node
        self.grow(1, mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            composed = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        self.sizes[id(composed)] = self.size(composed)
        return composed

    def grow(self, nodes: int, mark: Any) -> None:
        self.total += nodes
        if self.total > MAX_NODES:
            raise ComposerError(
                None, None, f"expands to more than {MAX_NODES} nodes (aliases counted in full)", mark
            )

    def size(self, node: yaml.Node | None) -> int:
        """The nodes ``node`` expands to; its children were composed (or aliased) before it."""
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        return 1 + sum(self.sizes[id(child)] for child in children)


def parse_documents(text: str, max_documents: int = MAX_DOCUMENTS) -> Iterator[tuple[yaml.Node, Any]]:
    """Yield (node, data) for each non-empty document; nodes keep line numbers for errors.

    Raises Unreadable for text that is no valid, bounded YAML (with its line where known), or that
    holds more than ``max_documents``."""
    loader = None
    try:
        loader = BoundedLoader(text)  # checks every character first: ReaderError
        while loader.check_node():
            node = loader.get_node()
            if node is not None and not is_empty(node):
                max_documents -= 1
                if max_documents < 0:
                    line = node.start_mark.line + 1
                    raise Unreadable(f"more documents than the {MAX_DOCUMENTS} one load reads", line)
                yield node, loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise Unreadable(f"invalid YAML: {exc.problem or exc.context}", line) from exc
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise Unreadable(f"invalid YAML: character U+{exc.character:04X} is not allowed", line) from exc
    except yaml.YAMLError as exc:
        raise Unreadable(f"invalid YAML: {exc}") from exc
    except (ValueError, OverflowError, TypeError, RecursionError) as exc:
        # PyYAML's constructors: a timestamp that is no date (2001-02-30), an int of more digits than
        # Python converts, ...
        raise Unreadable(f"invalid YAML value: {str(exc).split(';')[0][:200]}") from exc
    finally:
        if loader is not None:
            loader.dispose()


def is_empty(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")
