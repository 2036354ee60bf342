"""The prefix key: stable over a conversation's turns, different between conversations."""

from __future__ import annotations

from typing import Any

import pytest

from controller.gateway.admission.prefix import chat_prefix, prefix_key, prompt_prefix

SYSTEM = {"role": "system", "content": "You are terse."}
OPENING = {"role": "user", "content": "What is a KV cache?"}
TURN_1 = [SYSTEM, OPENING]
TURN_2 = [
    *TURN_1,
    {"role": "assistant", "content": "Saved attention state."},
    {"role": "user", "content": "Why?"},
]


def key(document: dict[str, Any], chars: int = 16) -> int | None:
    return prefix_key(document, prefix_chars=chars)


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        pytest.param({"messages": TURN_1}, {"messages": TURN_2}, True, id="chat: later turn, same key"),
        pytest.param(
            {"messages": TURN_1},
            {"messages": [SYSTEM, {"role": "user", "content": "Other question"}]},
            False,
            id="chat: same system prompt, other opening",
        ),
        pytest.param(
            {"messages": TURN_1},
            {"messages": [{"role": "system", "content": "Be verbose."}, OPENING]},
            False,
            id="chat: other system prompt",
        ),
        pytest.param(
            {"messages": [OPENING]},
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is a KV cache?"}]}]},
            True,
            id="chat: text parts count as their text",
        ),
        pytest.param(
            {"messages": TURN_1, "temperature": 0.1},
            {"messages": TURN_1, "temperature": 0.9, "model": "other"},
            True,
            id="chat: sampling options do not matter",
        ),
        pytest.param(
            {"prompt": "0123456789abcdefXYZ"},
            {"prompt": "0123456789abcdef and more turns"},
            True,
            id="completions: first 16 chars",
        ),
        pytest.param(
            {"prompt": "0123456789abcdeX"}, {"prompt": "0123456789abcdef"}, False, id="completions: differ"
        ),
        pytest.param(
            {"prompt": ["0123456789abcdef!"]}, {"prompt": "0123456789abcdef?"}, True, id="prompt list"
        ),
        pytest.param({"prompt": list(range(20))}, {"prompt": [*range(16), 99]}, True, id="token prompt"),
    ],
)
def test_prefix_keys(first: dict[str, Any], second: dict[str, Any], same: bool) -> None:
    assert key(first) is not None
    assert (key(first) == key(second)) is same


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({"input": "embed me"}, id="embeddings"),
        pytest.param({"messages": []}, id="no messages"),
        pytest.param({"prompt": ""}, id="empty prompt"),
        pytest.param({"prompt": 7}, id="odd prompt"),
        pytest.param({}, id="nothing"),
    ],
)
def test_no_key(document: dict[str, Any]) -> None:
    assert key(document) is None


def test_chat_prefix_stops_at_the_first_user_message() -> None:
    assert chat_prefix(TURN_2) == chat_prefix(TURN_1)
    assert "Why?" not in chat_prefix(TURN_2)
    assert chat_prefix([SYSTEM]) == "system\x1fYou are terse."


def test_prompt_prefix_cuts_at_the_limit() -> None:
    assert prompt_prefix("abcdef", 3) == "abc"
    assert prompt_prefix([[1, 2, 3]], 2) == "1,2"
