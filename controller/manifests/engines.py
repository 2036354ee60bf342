"""The engines modelctl runs, by name, in one place: what a manifest's ``engine`` may say, what
the ``modelctl.engine`` label carries, and what the engines' tables (``controller.engines``) are
keyed by. A Literal, so mypy sees a misspelt name; the values are the manifests' and labels'.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

EngineName = Literal["llamacpp", "vllm"]

LLAMACPP: Final = "llamacpp"
VLLM: Final = "vllm"
ENGINE_NAMES: tuple[EngineName, ...] = get_args(EngineName)
