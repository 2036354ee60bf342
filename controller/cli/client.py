"""The controller API's client, for the commands that ask the running controller (`status`,
`plan --diff`): one urllib request (no event loop for one call), the key from
MODELCTL_CONTROLLER_KEY, and every failure one ModelctlError line naming the URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from typing import Any

from controller.errors import ModelctlError

DEFAULT_API = "http://127.0.0.1:8081"


def default_url() -> str:
    """The controller's API: MODELCTL_CONTROLLER_URL, else where compose publishes it."""
    return os.environ.get("MODELCTL_CONTROLLER_URL", DEFAULT_API)


def key_header() -> dict[str, str]:
    """The Authorization header for a controller whose API wants keys (MODELCTL_CONTROLLER_KEY)."""
    key = os.environ.get("MODELCTL_CONTROLLER_KEY", "").strip()
    return {"Authorization": f"Bearer {key}"} if key else {}


def get_json(url: str, *, timeout: float, doing: str = "reach") -> Any:
    """GET ``url``; its JSON. Raises ModelctlError: "cannot {doing} the controller at URL" when
    nothing answers, "the controller at URL answered CODE: ..." when it refuses."""
    request = urllib.request.Request(url, headers=key_header())
    return call(request, timeout=timeout, doing=doing)


def post_json(url: str, body: dict[str, Any], *, timeout: float, accept: tuple[int, ...] = ()) -> Any:
    """POST ``body`` as JSON; the answer's JSON, also that of a refusal whose status is in
    ``accept`` (a 422 that lists manifest errors). Raises ModelctlError as ``get_json`` does."""
    headers = {"Content-Type": "application/json", **key_header()}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    return call(request, timeout=timeout, accept=accept)


def call(
    request: urllib.request.Request, *, timeout: float, accept: tuple[int, ...] = (), doing: str = "reach"
) -> Any:
    url = request.full_url
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        return refused(url, exc, accept)
    except (OSError, ValueError) as exc:
        raise ModelctlError(
            f"cannot {doing} the controller at {url}: {exc} (is it running? `make up`)"
        ) from exc


def refused(url: str, exc: urllib.error.HTTPError, accept: tuple[int, ...]) -> dict[str, Any]:
    """The JSON object of a refusal in ``accept``; else a ModelctlError with the controller's own
    words (its JSON ``error``), and what to set when it wants a key."""
    answer = exc.read().decode(errors="replace")
    with contextlib.suppress(ValueError):
        payload = json.loads(answer)
        if exc.code in accept and isinstance(payload, dict):
            return payload
        answer = str(payload.get("error", answer)) if isinstance(payload, dict) else answer
    hint = " (set MODELCTL_CONTROLLER_KEY)" if exc.code == 401 else ""
    raise ModelctlError(f"the controller at {url} answered {exc.code}: {answer}{hint}") from exc
