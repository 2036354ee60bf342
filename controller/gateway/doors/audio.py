"""OpenAI's audio APIs (``/v1/audio/transcriptions``, ``/v1/audio/translations``): multipart bodies
routed by their ``model`` form field down the same pipeline as every JSON request (admission,
balancing, keys, metrics labelled with the model).

An upload is up to ``max_audio_bytes`` (25 MiB, OpenAI's own limit), and streamed to the replica,
not held: the door reads the head of the body until the ``model`` field is in (``read_head``),
the pipeline chooses the replica from it, and the proxy sends that head and then the rest of the
body as the client sends it (``forward.upload``), as fast as the replica reads it. The gateway
holds a bounded buffer per upload, never the file, and the replica starts receiving while the
client still sends. The bytes go as received with the client's Content-Type (its boundary):
nothing is re-encoded. A body that came whole with its head (a small one) is forwarded as any.

Bounds: a Content-Length past the limit is a 413 before anything is read or forwarded; a chunked
body that passes it on the way is cut (the replica's request aborted) and the client gets a 413 in
OpenAI's shape; ``body_timeout_s`` of waiting for the client in all (408). A client that leaves
mid-upload aborts the replica's request, and its admission slot is given back.

Retries: a replica that cannot be reached (connect refused, timed out) is skipped for another, as
for every request, since no byte of the body went to it. Once bytes went, the body cannot be sent
again (its rest was read once, from the client): a connection lost then is a 502 in OpenAI's shape,
and a replica's own 502/503 answer reaches the client as it is.

The ``model`` field is found by reading the part headers of the form from the start, at most
``FIELD_SCAN_BYTES`` into it and never into the file: clients (openai's, curl ``-F``) send small
fields first, and a form whose file comes before ``model`` is refused (400) rather than searched.
The scan goes on from where it stopped as the head arrives (``FormHead``): a form trickled in costs
no more than one sent at once.
"""

from __future__ import annotations

import enum
import functools
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.helpers import parse_mimetype

from controller.endpoints.table import EndpointTable, Target
from controller.gateway import errors
from controller.gateway.doors.pipeline import Door, Prepared
from controller.gateway.doors.tasks import AUDIO_PATHS
from controller.gateway.errors import Refusal
from controller.gateway.forward.upload import BodyReader, StreamedBody, stream_length

if TYPE_CHECKING:
    from controller.gateway.doors.pipeline import Reader
    from controller.gateway.forward.proxy import Proxy
    from controller.gateway.settings import GatewaySettings

__all__ = ["AUDIO_PATHS", "AudioDoor", "FormHead", "form_fields", "read_head"]

# How far into the form the fields before the file are looked for (bytes).
FIELD_SCAN_BYTES = 64 * 1024
MAX_MODEL_CHARS = 256
MAX_BOUNDARY_CHARS = 70  # RFC 2046
_NAME = re.compile(r';\s*name="([^"]*)"', re.IGNORECASE)
_FILENAME = re.compile(r";\s*filename\*?=", re.IGNORECASE)
_DISPOSITION = re.compile(r"^content-disposition:(.*)$", re.IGNORECASE | re.MULTILINE)


class AudioDoor(Door):
    """A multipart audio upload: its model from the form's head, its body streamed as received."""

    def check(self, request: web.Request) -> None:
        boundary(request)  # a form with a boundary, before its body is read

    def body_limit(self, settings: GatewaySettings) -> int:
        return settings.max_audio_bytes

    def reader(self, proxy: Proxy, settings: GatewaySettings) -> Reader:
        return functools.partial(read_head, timeout_s=settings.body_timeout_s)

    def parse_request(self, request: web.Request, body: bytes) -> tuple[str, dict[str, Any]]:
        fields = form_fields(body, boundary(request))
        model = fields.get("model", "").strip()
        if not model:
            raise errors.bad_request("You must provide a model parameter.")
        if len(model) > MAX_MODEL_CHARS:
            raise errors.bad_request(f"The model parameter is longer than {MAX_MODEL_CHARS} characters.")
        return model, {"stream": fields.get("stream", "").strip().lower() == "true"}

    def no_table(self, retry_after: int) -> Refusal:
        return errors.unavailable("The gateway knows no models yet. Retry later.", retry_after=retry_after)

    def not_found(self, table: EndpointTable, name: str) -> Refusal:
        return errors.model_not_found(name, table.served_names())

    def prepare(
        self,
        request: web.Request,
        target: Target,
        document: dict[str, Any],
        body: bytes,
        api: str,
        started: float,
    ) -> Prepared:
        if target.adapter is not None:  # the form is forwarded as received: no adapter to select
            raise errors.bad_request(
                f"The adapter '{target.name}' of model '{target.entry.name}' is not served on {request.path}."
            )
        return Prepared(body, None, bool(document["stream"]), stream_usage=False)


async def read_head(request: web.Request, limit: int, *, timeout_s: float) -> bytes:
    """The body as far as its ``model`` field: all of it (``bytes``) if no more is coming, else a
    ``StreamedBody`` whose rest the replica gets as it arrives. Raises Refusal: 413 for a
    Content-Length past ``limit`` (nothing read) or a body past it; 400 for a form without its
    model field first (``FormHead``); 408 for a body that does not come within ``timeout_s``.
    """
    if request.content_length is not None and request.content_length > limit:
        raise errors.too_large(limit)
    scan = FormHead(boundary(request))
    reader = BodyReader(request.content, limit=limit, timeout_s=timeout_s)
    head = bytearray()
    while chunk := await reader.next():
        head += chunk
        if scan.scan(head, complete=False) is not None:
            break
    if not chunk or request.content.at_eof():
        return bytes(head)  # all there is: parsed (and refused) or forwarded as any body
    return StreamedBody(head, reader, stream_length(request))


def boundary(request: web.Request) -> bytes:
    """The multipart boundary of ``request``'s Content-Type; raises Refusal (400) without one."""
    mime = parse_mimetype(request.headers.get("Content-Type", ""))
    found = mime.parameters.get("boundary", "")
    if (mime.type, mime.subtype) != ("multipart", "form-data") or not found:
        raise errors.bad_request(
            f"{request.path} takes a multipart/form-data body (the audio file and model)."
        )
    if len(found) > MAX_BOUNDARY_CHARS or not found.isascii():
        raise errors.bad_request("The multipart boundary is not a valid one.")
    return found.encode()


def form_fields(body: bytes, mark: bytes) -> dict[str, str]:
    """The form's text fields before its first file part, read at most ``FIELD_SCAN_BYTES`` into
    ``body`` (all there is of it); raises Refusal (400) when no ``model`` field comes before the
    file or within that."""
    fields = FormHead(mark).scan(body, complete=True)
    assert fields is not None  # a complete body is decided
    return fields


class _Stage(enum.Enum):
    """Where the scan of the form's head is: what it looks for next."""

    PREAMBLE = enum.auto()  # the first delimiter
    DELIMITED = enum.auto()  # the two bytes after a delimiter: CRLF (a part follows) or "--" (the end)
    HEAD = enum.auto()  # the end of a part's headers (CRLF CRLF)
    VALUE = enum.auto()  # the end of a part's value (CRLF and the next delimiter)


class FormHead:
    """The form's text fields before its file, found as the body's head arrives.

    ``scan`` is called with the head as it grows; each call goes on from where the last stopped
    (its stage, and how far each search got), so every byte is looked at a bounded number of times:
    a client that trickles its form in byte by byte costs no more than one that sends it at once.
    """

    def __init__(self, mark: bytes) -> None:
        self._delimiter = b"--" + mark
        self._value_end = b"\r\n" + self._delimiter  # what ends a part (and starts the next)
        self.fields: dict[str, str] = {}
        self._stage = _Stage.PREAMBLE
        self._at = 0  # the start of what the stage looks at (after a delimiter, a value's start)
        self._from = 0  # where the stage's search goes on
        self._name: str | None = None  # the current part's field name

    def scan(self, head: bytes | bytearray, *, complete: bool) -> dict[str, str] | None:
        """The fields once the ``model`` field is in ``head``; None while more of the body is
        needed (``complete``: there is no more). Raises Refusal (400): not a form, the file before
        the model field, no model field in the first ``FIELD_SCAN_BYTES``."""
        end = min(len(head), FIELD_SCAN_BYTES)
        while "model" not in self.fields:
            if not self._step(head, end):  # needs bytes beyond ``end``
                if complete or len(head) >= FIELD_SCAN_BYTES:
                    raise self._undecided()
                return None
        return self.fields

    def _step(self, head: bytes | bytearray, end: int) -> bool:
        """Take the stage one step on within ``head[:end]``; False if it needs more bytes."""
        if self._stage is _Stage.PREAMBLE:
            return self._preamble(head, end)
        if self._stage is _Stage.DELIMITED:
            return self._delimited(head, end)
        if self._stage is _Stage.HEAD:
            return self._head(head, end)
        return self._value(head, end)

    def _preamble(self, head: bytes | bytearray, end: int) -> bool:
        size = len(self._delimiter)
        if head[:size] == self._delimiter:
            return self._next(_Stage.DELIMITED, size)
        if end < size and self._delimiter.startswith(head[:end]):
            return False  # it may still start with the delimiter
        found = self._find(head, self._value_end, end)
        return found >= 0 and self._next(_Stage.DELIMITED, found + len(self._value_end))

    def _delimited(self, head: bytes | bytearray, end: int) -> bool:
        if end < self._at + 2:
            return False
        if head[self._at : self._at + 2] != b"\r\n":  # "--": the form ended (or it is no form)
            raise self._undecided()
        return self._next(_Stage.HEAD, self._at)

    def _head(self, head: bytes | bytearray, end: int) -> bool:
        found = self._find(head, b"\r\n\r\n", end)
        if found < 0:
            return False
        self._name, is_file = part_name(bytes(head[self._at + 2 : found]))
        if is_file:
            raise errors.bad_request(
                "The model field comes after the file: put the model field before the file."
            )
        return self._next(_Stage.VALUE, found + 4)

    def _value(self, head: bytes | bytearray, end: int) -> bool:
        found = self._find(head, self._value_end, end)
        if found < 0:
            return False
        name = self._name
        if name is not None and name not in self.fields:
            self.fields[name] = bytes(head[self._at : found]).decode("utf-8", errors="replace")
        return self._next(_Stage.DELIMITED, found + len(self._value_end))

    def _find(self, head: bytes | bytearray, pattern: bytes, end: int) -> int:
        """Where ``pattern`` is in ``head[self._from:end]``, or -1 (the next search starts where
        this one could still find it)."""
        found = head.find(pattern, self._from, end)
        if found < 0:
            self._from = max(self._from, end - len(pattern) + 1)
        return found

    def _next(self, stage: _Stage, at: int) -> bool:
        self._stage, self._at, self._from = stage, at, at
        return True

    def _undecided(self) -> errors.Refusal:
        if self._stage is _Stage.PREAMBLE:
            return errors.bad_request("The body is not the multipart form its Content-Type announces.")
        return errors.bad_request(
            f"No model field in the first {FIELD_SCAN_BYTES // 1024} KiB of the form: put the model field "
            "before the file."
        )


def part_name(head: bytes) -> tuple[str | None, bool]:
    """(the form field's name, whether it is a file) from one part's headers."""
    text = head.decode("latin-1")
    disposition = _DISPOSITION.search(text)
    if disposition is None:
        return None, False
    value = disposition.group(1)
    name = _NAME.search(value)
    return (name.group(1) if name else None), _FILENAME.search(value) is not None
