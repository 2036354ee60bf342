"""The key of the container spec hash, kept in a file of the controller's own state folder.

Why a key (``runtime.spec``): the spec hash in every container's name and labels covers env values
such as HF_TOKEN, so that a changed secret rolls the replica; unkeyed, anyone who sees a name could
test guesses of the secret offline. Why a file: a restarted controller must compute the same
hashes, or it would replace every replica it should adopt. A label or any other Docker object
would not do, since whoever lists containers reads those too; the file lives where only the
controller reads (compose: a volume of its own, mode 0600 inside a 0700 folder).

Losing the file costs one roll of every replica (the new key gives new hashes), nothing more.
"""

from __future__ import annotations

import os
import secrets
from contextlib import suppress
from pathlib import Path

from controller.errors import ModelctlError

KEY_FILE = "spec-hash.key"
KEY_BYTES = 32


def spec_key(state_dir: Path) -> bytes:
    """The key in ``state_dir``/spec-hash.key, made (random, readable by its owner only) when there
    is none. Two controllers starting at once agree on one key (the file is linked into place
    atomically). Raises ModelctlError naming the file when it cannot be read, made or parsed."""
    path = state_dir / KEY_FILE
    try:
        return read_key(path)
    except FileNotFoundError:
        pass
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_once(path, secrets.token_hex(KEY_BYTES))
        return read_key(path)
    except OSError as exc:
        raise ModelctlError(f"{path}: cannot make the spec hash key ({exc.strerror or exc})") from exc


def write_once(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` unless it exists by then: a private temporary file, linked into place."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as out:
            out.write(text + "\n")
            out.flush()
            os.fsync(out.fileno())
        with suppress(FileExistsError):  # another controller made it first: its key is the one
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_key(path: Path) -> bytes:
    """The key in ``path``. Raises FileNotFoundError when there is none, ModelctlError when it
    cannot be read or is not the 64 hex digits this module writes."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ModelctlError(f"{path}: cannot read the spec hash key ({exc.strerror or exc})") from exc
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ModelctlError(
            f"{path}: not a spec hash key ({KEY_BYTES * 2} hex digits); delete it to make a new one "
            "(every replica is then replaced once)"
        )
    return key
