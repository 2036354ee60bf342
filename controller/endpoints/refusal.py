"""The controller API's answer to a body it refuses: one JSON shape for every route.

``{"error": "<what>: <field>: <why>", "field": "<field>", "errors": [{"field": ..., "message": ...}]}``,
the fields as pydantic locates them (``models.smollm2.last_active``). Plain data, so the API and the
routes mounted on it (``api.plan``) answer alike; the HTTP status is theirs (400).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

MAX_ERRORS = 10  # problems listed in one answer
MAX_PART = 80  # characters of one part of a field's location (a key may be long)


def refusal(what: str, exc: ValidationError, *, hint: str = "") -> dict[str, Any]:
    """The JSON body refusing a request for the problems in ``exc``; ``hint`` is appended to the
    error line (how to send it right)."""
    problems = [
        {"field": ".".join(short(str(part)) for part in error["loc"]) or "(body)", "message": error["msg"]}
        for error in exc.errors(include_url=False, include_input=False)[:MAX_ERRORS]
    ]
    first = problems[0] if problems else {"field": "(body)", "message": "invalid"}
    line = f"{what}: {first['field']}: {first['message']}" + (f"; {hint}" if hint else "")
    return {"error": line, "field": first["field"], "errors": problems}


def short(text: str, most: int = MAX_PART) -> str:
    """``text``, cut to ``most`` characters (with "...") when longer."""
    return text if len(text) <= most else text[: most - 3] + "..."
