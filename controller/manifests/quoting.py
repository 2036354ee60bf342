"""How a value from a manifest appears in an error message: bounded, escapes visible. A manifest is
hostile input; an error about it must never carry a megabyte of text or a terminal escape.
"""

from __future__ import annotations


def shown(value: str, limit: int = 80) -> str:
    """``value`` as an error message quotes it: at most ``limit`` characters, escapes visible."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return repr(text)[1:-1]
