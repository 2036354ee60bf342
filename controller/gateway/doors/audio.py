"""OpenAI's audio APIs (``/v1/audio/transcriptions``, ``/v1/audio/translations``): multipart bodies
routed by their ``model`` form field down the same pipeline as every JSON request (admission,
balancing, keys, metrics labelled with the model).

The body is read once, under ``max_audio_bytes`` (413 past it), and forwarded as those same bytes
with the client's Content-Type (its boundary): nothing is re-encoded, and the file is never copied
(``forward.upstream`` writes a large body as its own buffer). It is not streamed to the replica
while it arrives: the replica is chosen by the model, which is in the body, and a retry on another
replica before the first byte needs the body again.

The ``model`` field is found by reading the part headers of the form from the start, at most
``FIELD_SCAN_BYTES`` into it and never into the file: clients (openai's, curl ``-F``) send small
fields first, and a form whose file comes before ``model`` is refused (400) rather than searched.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.helpers import parse_mimetype

from controller.endpoints.table import EndpointTable, Target
from controller.gateway import errors
from controller.gateway.doors.pipeline import Door, Prepared
from controller.gateway.doors.tasks import AUDIO_PATHS
from controller.gateway.errors import Refusal

if TYPE_CHECKING:
    from controller.gateway.settings import GatewaySettings

__all__ = ["AUDIO_PATHS", "AudioDoor", "form_fields"]

# How far into the form the fields before the file are looked for (bytes).
FIELD_SCAN_BYTES = 64 * 1024
MAX_MODEL_CHARS = 256
MAX_BOUNDARY_CHARS = 70  # RFC 2046
_NAME = re.compile(r';\s*name="([^"]*)"', re.IGNORECASE)
_FILENAME = re.compile(r";\s*filename\*?=", re.IGNORECASE)
_DISPOSITION = re.compile(r"^content-disposition:(.*)$", re.IGNORECASE | re.MULTILINE)


class AudioDoor(Door):
    """A multipart audio upload: its model from the form, its body forwarded as received."""

    def check(self, request: web.Request) -> None:
        boundary(request)  # a form with a boundary, before its body is read

    def body_limit(self, settings: GatewaySettings) -> int:
        return settings.max_audio_bytes

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
    ``body``; raises Refusal (400) when no ``model`` field comes before the file or within that."""
    delimiter = b"--" + mark
    end = min(len(body), FIELD_SCAN_BYTES)
    at = 0 if body.startswith(delimiter) else body.find(b"\r\n" + delimiter, 0, end)
    if at < 0:
        raise errors.bad_request("The body is not the multipart form its Content-Type announces.")
    at = body.index(delimiter, at) + len(delimiter)
    fields: dict[str, str] = {}
    while "model" not in fields:
        if body[at : at + 2] != b"\r\n":  # "--": the form ended
            break
        head_end = body.find(b"\r\n\r\n", at, end)
        if head_end < 0:
            break
        name, is_file = part_name(body[at + 2 : head_end])
        if is_file:
            raise errors.bad_request(
                "The model field comes after the file: put the model field before the file."
            )
        value_end = body.find(b"\r\n" + delimiter, head_end + 4, end)
        if value_end < 0:
            break
        if name is not None and name not in fields:
            fields[name] = body[head_end + 4 : value_end].decode("utf-8", errors="replace")
        at = value_end + 2 + len(delimiter)
    if "model" not in fields:
        raise errors.bad_request(
            f"No model field in the first {FIELD_SCAN_BYTES // 1024} KiB of the form: put the model field "
            "before the file."
        )
    return fields


def part_name(head: bytes) -> tuple[str | None, bool]:
    """(the form field's name, whether it is a file) from one part's headers."""
    text = head.decode("latin-1")
    disposition = _DISPOSITION.search(text)
    if disposition is None:
        return None, False
    value = disposition.group(1)
    name = _NAME.search(value)
    return (name.group(1) if name else None), _FILENAME.search(value) is not None
