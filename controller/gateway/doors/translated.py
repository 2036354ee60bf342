"""What the two translating doors (Ollama's, and Anthropic Messages for llama.cpp adapters) share
on the way back: the client's response that translates a replica's event stream chunk by chunk
(``TranslatedResponse``), the whole answer turned into the door's JSON (``Translated.whole``), and
how a client that left mid-stream is counted (``left_after_end``). Each door keeps only what is
its own: the stream's frames (``forward.events.Translator``) and the whole answer's document.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from controller.gateway.call import REPLICA_HEADER, Call
from controller.gateway.forward.events import Translator

if TYPE_CHECKING:
    from controller.gateway.forward.proxy import Proxy


class TranslatedResponse(web.StreamResponse):
    """The client's response to a translated stream: each chunk written (OpenAI SSE) goes out as
    the frames it completes; ``write_eof`` first sends what the stream still owes."""

    def __init__(self, stream: Translator, status: int, headers: dict[str, str]) -> None:
        super().__init__(status=status, headers=headers)
        self.stream = stream
        self.delivered = False  # the stream's last frame (not an error) reached the client

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        stream = self.stream
        out = stream.feed(bytes(data))
        if out:
            await super().write(out)
            self.delivered = stream.done and not stream.failed

    async def write_eof(self, data: bytes = b"") -> None:
        out = self.stream.end()
        if out:
            await super().write(out)
        await super().write_eof(data)


class Translated:
    """A call translated to the replica's OpenAI chat API (``call.Translation``); subclasses say
    what a whole answer becomes (``document``) and make ``response`` when the answer streams."""

    __slots__ = ("response",)

    def __init__(self) -> None:
        self.response: TranslatedResponse | None = None  # once the answer streams

    def document(self, status: int, body: bytes) -> tuple[int, dict[str, Any]]:
        """(status, the door's JSON) for a replica's whole answer."""
        raise NotImplementedError

    def whole(self, resp: web.Response) -> web.StreamResponse:
        """The replica's whole answer in the door's shape."""
        if REPLICA_HEADER not in resp.headers:
            return resp  # not the replica's (a client gone: nobody reads it)
        body = resp.body if isinstance(resp.body, bytes) else b""
        status, document = self.document(resp.status, body)
        headers = {k: v for k, v in resp.headers.items() if k in (REPLICA_HEADER, "Retry-After")}
        return web.json_response(document, status=status, headers=headers)


def left_after_end(call: Call, proxy: Proxy) -> int | None:
    """A client that left mid-answer: its status if the answer was delivered whole, 200 with its
    tokens if a translated stream's last frame had reached it, else None (not served)."""
    if call.delivered is not None:
        return call.delivered
    translation = call.translation
    streamed = translation.response if isinstance(translation, Translated) else None
    if streamed is None or not streamed.delivered:
        return None
    usage = streamed.stream.usage()
    if usage is not None:
        proxy.count_tokens(call, usage)
    return 200
