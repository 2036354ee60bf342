"""Anthropic Messages (``POST /v1/messages``): as the client sent them, or translated where the
engine would lose the adapter choice.

Every Messages request goes to the replica as it came (the OpenAI door's way, ``openai.OpenAIDoor``)
except one kind: a request for a llama.cpp model with LoRA adapters (the base or an adapter, by
name). llama-server's own ``/v1/messages`` drops the body's ``lora`` (docs/model-shapes.md), so such
a request is translated into the chat completion llama-server would have made of it, with the
adapter's ``lora`` (``messages_translate``), and goes down the same pipeline as any call: admission,
balancing per adapter, retries before the first byte, cancel on disconnect, keys, metrics
(``api="anthropic"``, tokens from the replica's own usage). The answer comes back as a Message: read
whole (at most ``upstream.MAX_WHOLE_ANSWER_BYTES``) and translated, or as an event stream
translated chunk by chunk into Anthropic's events (``translated.TranslatedResponse`` over
``MessagesStream``), each chunk held only until its end. A translated stream for a model with no
ready replica is held without loading comments (its events are translated only once the replica
answers), as Ollama's are.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from controller.endpoints.table import EndpointTable, Target
from controller.gateway import errors
from controller.gateway.admission.balancer import PREFIX_AFFINITY
from controller.gateway.admission.prefix import prefix_key
from controller.gateway.call import EVENT_STREAM, Call, error_message
from controller.gateway.doors import images, targets
from controller.gateway.doors import messages_translate as translate
from controller.gateway.doors.messages_stream import MessagesStream
from controller.gateway.doors.pipeline import Door, Prepared
from controller.gateway.doors.translated import Translated, TranslatedResponse, left_after_end
from controller.gateway.errors import Refusal, anthropic_type

if TYPE_CHECKING:
    from controller.gateway.forward.proxy import Proxy
    from controller.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

_STREAM_HEADERS = {"Content-Type": EVENT_STREAM, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class MessagesTranslation(Translated):
    """How one translated Messages call reaches the replica (``path``) and how its answer comes back."""

    __slots__ = ("model", "path")

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model  # the name the client asked for: the Message echoes it
        self.path = translate.CHAT

    def stream(self, status: int, content_type: str) -> web.StreamResponse | None:
        """Anthropic's events for a 200 event stream; None: read the answer whole."""
        if status == 200 and content_type == EVENT_STREAM:
            self.response = TranslatedResponse(MessagesStream(self.model), 200, _STREAM_HEADERS)
            return self.response
        return None

    def document(self, status: int, body: bytes) -> tuple[int, dict[str, Any]]:
        """(status, Anthropic's JSON) for a replica's whole answer."""
        if status >= 400:
            message = error_message(body) or f"the model server answered HTTP {status}"
            return status, {"type": "error", "error": {"type": anthropic_type(status), "message": message}}
        try:
            return status, translate.message(json.loads(body), self.model)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError, RecursionError):
            log.warning("a replica's chat answer is not OpenAI's: %r", body[:200])
            message = "The model server sent an answer that is not OpenAI's chat completion."
            return 502, {"type": "error", "error": {"type": "api_error", "message": message}}


class MessagesDoor(Door):
    """``/v1/messages``: ``plain``'s (the OpenAI door's) pass-through, translated for a llama.cpp
    model with adapters (``targets.translates_messages``)."""

    def __init__(self, plain: Door, settings: GatewaySettings, proxy: Proxy) -> None:
        self._plain = plain
        self._prefix_chars = settings.affinity_prefix_chars
        self._proxy = proxy

    def api_of(self, request: web.Request) -> str:
        return self._plain.api_of(request)

    def check(self, request: web.Request) -> None:
        self._plain.check(request)

    def parse(self, body: bytes) -> tuple[str, dict[str, Any]]:
        return self._plain.parse(body)

    def lookup(self, table: EndpointTable, name: str) -> Target | None:
        return self._plain.lookup(table, name)

    def no_table(self, retry_after: int) -> Refusal:
        return self._plain.no_table(retry_after)

    def not_found(self, table: EndpointTable, name: str) -> Refusal:
        return self._plain.not_found(table, name)

    def prepare(
        self,
        request: web.Request,
        target: Target,
        document: dict[str, Any],
        body: bytes,
        api: str,
        started: float,
    ) -> Prepared | web.StreamResponse:
        """The call as sent, or translated (the parsed and translated requests do not outlive it:
        the body goes as bytes)."""
        if not targets.translates_messages(target):
            return self._plain.prepare(request, target, document, body, api, started)
        images.check(target, document, body)  # Anthropic's image blocks; URL sources refused
        try:
            translated = translate.chat_request(document, target.entry.name)
            translated |= targets.changes(target, translated)  # the adapter's selection
            body = json.dumps(translated).encode()
        except translate.Invalid as exc:
            raise errors.bad_request(str(exc)) from exc
        except RecursionError:  # parsed at the edge of the limit, a level or two deeper now
            raise errors.bad_request("The request is nested too deeply to translate.") from None
        entry, key = target.entry, None
        if entry.balancing == PREFIX_AFFINITY and len(entry.replicas) != 1:
            key = targets.prefix_key(prefix_key(translated, prefix_chars=self._prefix_chars), target)
        streamed = translated.get("stream") is True
        translation = MessagesTranslation(document["model"])
        return Prepared(body, key, False, streamed, translation=translation)

    def answer(self, call: Call, resp: web.StreamResponse) -> web.StreamResponse:
        translation = call.translation
        if (
            isinstance(translation, MessagesTranslation)
            and isinstance(resp, web.Response)
            and not resp.prepared
        ):
            return translation.whole(resp)
        return resp

    def left(self, call: Call) -> int | None:
        """A client that left mid-stream: 200 with its tokens if message_stop had reached it."""
        return left_after_end(call, self._proxy)
