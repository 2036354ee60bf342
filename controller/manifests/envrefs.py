"""``${NAME}`` references in a manifest's ``env`` values, filled from the controller's environment.

Manifests live in git, so a secret (a Hugging Face token for a gated model, an API key the engine
checks) must not be written in them. A value may instead name a variable of the controller's own
environment: ``HF_TOKEN: ${HF_TOKEN}``, or inside text: ``Authorization: Bearer ${KEY}``. ``$$``
stands for a literal ``$``. The syntax is checked with the manifest; the values are filled in when
the manifests are loaded, so a variable that is not set is an error on that model's ``env`` field.
Filled values go only into the container's environment: never into errors, reprs or logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# "$$" (a literal "$"), "${NAME}" (a reference) or a "$" that starts neither (an error).
_TOKEN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$")


def references(value: str) -> list[str]:
    """Return the variable names ``value`` refers to; raise ValueError for a malformed ``$``."""
    names = []
    for match in _TOKEN.finditer(value):
        token = match.group(0)
        if token == "$$":
            continue
        if match.group(1) is None:
            raise ValueError(
                f"'$' at position {match.start()} starts no ${{NAME}} reference (write $$ for a literal $)"
            )
        names.append(match.group(1))
    return names


def expand(value: str, environ: Mapping[str, str]) -> str:
    """Return ``value`` with each ``${NAME}`` replaced from ``environ`` and ``$$`` by ``$``.

    Raises ValueError naming (only) the variables that are not set.
    """
    missing = [name for name in references(value) if name not in environ]
    if missing:
        names = ", ".join(f"${{{name}}}" for name in dict.fromkeys(missing))
        raise ValueError(f"refers to {names}, not set in the controller's environment")

    def fill(match: re.Match[str]) -> str:
        return "$" if match.group(0) == "$$" else environ[match.group(1)]

    return _TOKEN.sub(fill, value)
