"""Prefix keys of Anthropic Messages and Responses requests: stable over a conversation's turns."""

from __future__ import annotations

from typing import Any

from controller.gateway.admission.prefix import prefix_key
from controller.gateway.doors.openai import api_prefix_key
from controller.gateway.errors import ANTHROPIC, OPENAI, RESPONSES, api_of


def key(document: dict[str, Any], api: str) -> int | None:
    return api_prefix_key(document, api, prefix_chars=16)


def test_the_api_comes_from_the_path() -> None:
    assert api_of("/v1/chat/completions") == OPENAI
    assert api_of("/v1/messages") == api_of("/v1/messages/count_tokens") == ANTHROPIC
    assert api_of("/v1/responses") == RESPONSES
    assert api_of("/api/chat") == "ollama"


def test_responses_keep_their_key_as_the_input_grows() -> None:
    first = [{"role": "user", "content": "What is in the report?"}]
    later = [*first, {"role": "assistant", "content": "Numbers."}, {"role": "user", "content": "Which?"}]
    one = key({"instructions": "You read reports.", "input": first}, RESPONSES)
    assert one is not None
    assert one == key({"instructions": "You read reports.", "input": later}, RESPONSES)
    assert one != key({"instructions": "You write poems.", "input": first}, RESPONSES)
    assert one != key(
        {"instructions": "You read reports.", "input": [{"role": "user", "content": "Hi"}]}, RESPONSES
    )


def test_a_string_input_keys_on_its_first_characters() -> None:
    a = key({"input": "0123456789abcdef and then more"}, RESPONSES)
    assert a == key({"input": "0123456789abcdef and then other"}, RESPONSES)
    assert a != key({"input": "another start"}, RESPONSES)
    assert key({}, RESPONSES) is None


def test_messages_key_on_system_and_the_first_user_message() -> None:
    first = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    later = [*first, {"role": "assistant", "content": "Hi"}, {"role": "user", "content": "More"}]
    system = [{"type": "text", "text": "Be brief."}]  # system may be a list of blocks
    one = key({"system": system, "messages": first}, ANTHROPIC)
    assert one is not None and one == key({"system": system, "messages": later}, ANTHROPIC)
    assert one != key({"system": "Be long.", "messages": first}, ANTHROPIC)


def test_openai_requests_keep_their_own_key() -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    assert key(chat, OPENAI) == prefix_key(chat, prefix_chars=16)
