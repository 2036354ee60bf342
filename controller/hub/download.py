"""Downloading one hub file into the cache, so that a download cut in the middle resumes on the next try.

huggingface_hub's ``hf_hub_download`` (2.x) resumes a dropped connection only within one call: it
writes to a temporary file of a name of its own and deletes it when the call fails, so the
reconciler's next try after its backoff, a restarted controller or ``modelctl pull`` run again
would start a 10 GB file from 0. Here each blob has one partial file, ``blobs/<blob>.incomplete``
(the name huggingface_hub 1.x kept, and what ``check_room`` and the progress read), kept when a
download fails and continued with ``Range: bytes=<have>-``: a 206 appends, a server that ignores
the range (200) or refuses it (416) starts the file again from 0. The finished file must have the
listed size and, where the listing gives one, its LFS sha256 (else its git blob id); a mismatch
deletes the partial. Only then is it renamed into ``blobs/<blob>`` and linked from
``snapshots/<commit>/<path>`` (a relative link), as huggingface_hub lays out its cache.

Redirects are followed here (the Hub sends LFS files to a CDN, with signed URLs): the manifest's
token goes to the hub's own origin only, never to another host, and neither it nor a signed URL is
logged or put in an error. The partial is locked while it is written (``flock``): a second pull of
the same blob, from ``modelctl pull`` beside a running controller, fails at once with one line
instead of writing into the same file. HTTP through ``httpx2``, the client huggingface_hub 2.x
itself uses, with connect and read timeouts: a stalled connection ends the try, and the next one
resumes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin

import httpx2

from controller.errors import HubError
from controller.hub.cache import safe
from controller.hub.select import RepoFile

MiB = 1 << 20
CONNECT_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 60.0  # no byte for this long: the try ends, the next one resumes
MAX_REDIRECTS = 10
HASH_CHUNK = 4 * MiB
ERROR_TEXT_LIMIT = 200  # characters of the Hub's X-Error-Message kept in an error line
PARTIAL = ".incomplete"
BLOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Target:
    """One file to fetch: what it is, where it comes from, where it goes."""

    subject: str  # the reference in error lines: 'hf://org/repo:Q4_K_M'
    file: RepoFile
    url: str  # the file's resolve URL at the pull's commit
    blobs: Path  # models--org--repo/blobs
    snapshot: Path  # models--org--repo/snapshots/<commit>

    def failed(self, why: str) -> HubError:
        return HubError(f"{self.subject}: downloading {self.file.path} failed: {why}")


def partial_path(blobs: Path, blob: str) -> Path:
    """The one partial file of ``blob``'s download, kept across tries."""
    return blobs / f"{blob}{PARTIAL}"


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``, the port filled in: what 'the same host' means for the token."""
    parsed = httpx2.URL(url)
    return parsed.scheme, parsed.host.lower(), parsed.port or DEFAULT_PORTS.get(parsed.scheme, 0)


def reason(exc: BaseException) -> str:
    """One line for a library error: its first line, its type when it says nothing."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class Downloader:
    """Fetches files of one hub (``hub_url``) with one token; a context manager (one HTTP client,
    closed at the end). ``fetch`` raises HubError; it is blocking (the pull's worker thread)."""

    def __init__(self, hub_url: str, token: str | None) -> None:
        # The library's user agent; exported lazily (its documented path), which mypy cannot see.
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

        headers = build_hf_headers(token=token or False)  # False: never the machine's own token
        self.auth = headers.pop("authorization", None)
        self.headers = {**headers, "Accept-Encoding": "identity"}  # sizes and ranges in raw bytes
        self.token = token
        self.origin = origin(hub_url)
        timeout = httpx2.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        self.client = httpx2.Client(timeout=timeout, follow_redirects=False)

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *_: object) -> None:
        self.client.close()

    def fetch(self, target: Target) -> None:
        """``target``'s file in the cache: its blob downloaded (or resumed) unless it is there,
        then the snapshot's link to it. Raises HubError."""
        if not safe(target.file.path):
            raise HubError(f"{target.subject}: the Hub listed an unsafe file name {target.file.path!r}")
        blob = target.blobs / self._blob_name(target)
        try:
            if not blob.is_file():
                target.blobs.mkdir(parents=True, exist_ok=True)
                self._download(target, blob)
            link(target.snapshot / target.file.path, blob)
        except OSError as exc:  # the cache's disk (the download's own errors say what was kept)
            raise target.failed(reason(exc)) from exc

    def _blob_name(self, target: Target) -> str:
        """The listing's blob ID, else the file's ETag (a HEAD request), as huggingface_hub names blobs."""
        name = target.file.blob or self._etag(target)
        if not BLOB_NAME.fullmatch(name):
            raise HubError(f"{target.subject}: the Hub named {target.file.path}'s blob {name[:80]!r}")
        return name

    def _etag(self, target: Target) -> str:
        from huggingface_hub import get_hf_file_metadata

        try:
            meta = get_hf_file_metadata(target.url, token=self.token or False, timeout=READ_TIMEOUT_S)
        except Exception as exc:  # the library's many (HTTP, network): one line
            raise target.failed(f"no ETag: {reason(exc)}") from exc
        return meta.etag or ""

    def _download(self, target: Target, blob: Path) -> None:
        """Fill the partial (resumed), check it, rename it into ``blob``. Raises HubError."""
        path = partial_path(target.blobs, blob.name)
        with locked(path, target) as fh:
            if blob.is_file():  # another pull finished it while this one looked
                path.unlink(missing_ok=True)
                return
            try:
                self._fill(fh, target)
            except (httpx2.HTTPError, httpx2.InvalidURL, OSError) as exc:
                kept, size = fh.tell(), target.file.size
                raise target.failed(
                    f"{reason(exc)} ({kept / MiB:.1f} of {size / MiB:.1f} MiB kept for the next try)"
                ) from exc
            fh.flush()
            os.fsync(fh.fileno())
            check(path, target)
            os.replace(path, blob)

    def _fill(self, fh: BinaryIO, target: Target) -> None:
        """Write the file into ``fh`` from what it holds: resumed, or from 0 when the server will not
        continue it. At most two requests (a refused range, then the whole file)."""
        size, have = target.file.size, fh.seek(0, os.SEEK_END)
        if have > size:  # more than the file: not a start of it
            have = restart(fh)
        if have == size:
            return
        with self._get(target, have) as response:
            start, status = resumed_at(response, have), response.status_code
            if start is not None:
                if start == 0:
                    restart(fh)
                self._copy(response, fh, start, target)
                return
        if not have:
            raise target.failed(f"the Hub answered {status} with a range to a request for the whole file")
        restart(fh)  # a refused range (416) or another one than asked for: the whole file again
        self._fill(fh, target)

    @contextlib.contextmanager
    def _get(self, target: Target, have: int) -> Iterator[httpx2.Response]:
        """GET ``target``'s URL (from byte ``have``), following redirects; the answer's body is
        still to be read. Raises HubError for an error status."""
        headers = {**self.headers, **({"Range": f"bytes={have}-"} if have else {})}
        url = target.url
        for _hop in range(MAX_REDIRECTS + 1):
            sent = {**headers, **({"Authorization": self.auth} if self.auth and self.own(url) else {})}
            response = self.client.send(self.client.build_request("GET", url, headers=sent), stream=True)
            if not response.is_redirect:
                break
            response.close()
            url = urljoin(str(response.url), response.headers["Location"])
        else:
            raise target.failed(f"more than {MAX_REDIRECTS} redirects")
        try:
            if response.status_code not in (200, 206) and not (have and response.status_code == 416):
                raise target.failed(status_line(response))
            yield response
        finally:
            response.close()

    def own(self, url: str) -> bool:
        """Whether ``url`` is on the hub's own origin (the only one the token goes to)."""
        return origin(url) == self.origin

    def _copy(self, response: httpx2.Response, fh: BinaryIO, start: int, target: Target) -> None:
        """The body into ``fh`` from byte ``start``, chunk by chunk as it comes (what arrived
        before a cut is on disk). Raises HubError when the body runs past the listed size."""
        size = target.file.size
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) != size - start:
            raise target.failed(
                f"the Hub sends {length} bytes from byte {start}, its listing says {size} in all"
            )
        fh.seek(start)
        done = start
        for chunk in response.iter_bytes():
            done += len(chunk)
            if done > size:
                restart(fh)
                raise target.failed(
                    f"the Hub sent more than the listed {size} bytes (the next try starts again)"
                )
            fh.write(chunk)
        if done != size:
            raise target.failed(f"the Hub's answer ended at {done} of {size} bytes (kept for the next try)")


@contextlib.contextmanager
def locked(path: Path, target: Target) -> Iterator[BinaryIO]:
    """The partial file at ``path`` (made when missing), opened for writing and locked against
    another pull of the same blob. Raises HubError when another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    with os.fdopen(fd, "r+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HubError(
                f"{target.subject}: {target.file.path} is being downloaded by another pull "
                f"(its partial file {path.name} is locked)"
            ) from None
        yield fh


def resumed_at(response: httpx2.Response, have: int) -> int | None:
    """Where the answer's body starts: 0 (a 200: the whole file), ``have`` (a 206 that continues
    the partial), or None (a 416, or a 206 from another byte: the range is refused)."""
    if response.status_code == 200:
        return 0
    if response.status_code == 206:
        found = re.fullmatch(r"bytes (\d+)-\d+/(?:\d+|\*)", response.headers.get("Content-Range", "").strip())
        return have if found is not None and int(found.group(1)) == have else None
    return None


def restart(fh: BinaryIO) -> int:
    """Empty the partial file: its download starts again from 0."""
    fh.seek(0)
    fh.truncate()
    return 0


def status_line(response: httpx2.Response) -> str:
    """'HTTP 401 from huggingface.co: <the Hub's X-Error-Message>': the host, never the URL (a
    CDN's URL is signed)."""
    said = " ".join(response.headers.get("X-Error-Message", "").split())[:ERROR_TEXT_LIMIT]
    return f"HTTP {response.status_code} from {response.url.host}" + (f": {said}" if said else "")


def digest(path: Path, blob: str) -> tuple[str, str] | None:
    """(what, hex digest of ``path``) to compare with ``blob``: the sha256 for an LFS blob ID (64
    hex digits), git's blob sha1 for a git one (40); None for a name that is neither."""
    if re.fullmatch(r"[0-9a-f]{64}", blob):
        sha, what = hashlib.sha256(), "sha256"
    elif re.fullmatch(r"[0-9a-f]{40}", blob):
        sha, what = hashlib.sha1(f"blob {path.stat().st_size}\0".encode()), "git blob id"
    else:
        return None
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            sha.update(chunk)
    return what, sha.hexdigest()


def check(path: Path, target: Target) -> None:
    """The finished partial is the listed file (size, digest), else it is deleted. Raises HubError."""
    size, blob = path.stat().st_size, path.name.removesuffix(PARTIAL)
    if size != target.file.size:
        raise target.failed(f"{size} bytes on disk, the listing says {target.file.size}")
    found = digest(path, blob)
    if found is not None and found[1] != blob:
        path.unlink(missing_ok=True)
        raise HubError(
            f"{target.subject}: {target.file.path} is not the file the Hub listed: {found[0]} "
            f"{found[1][:12]}… where {blob[:12]}… was listed (the download is deleted)"
        )


def link(path: Path, blob: Path) -> None:
    """``path`` (in a snapshot) as a relative link to ``blob``, replacing what was there at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.link")
    temporary.unlink(missing_ok=True)
    os.symlink(os.path.relpath(blob, path.parent), temporary)
    os.replace(temporary, path)
