"""``${NAME}`` references in a manifest's ``env`` values, filled from the controller's environment.

Manifests live in git, so a secret (a Hugging Face token for a gated model, an API key the engine
checks) must not be written in them. A value may instead name a variable of the controller's own
environment: ``HF_TOKEN: ${HF_TOKEN}``, or inside text: ``Authorization: Bearer ${KEY}``. ``$$``
stands for a literal ``$``. The syntax is checked with the manifest; the values are filled in when
the manifests are loaded, so a variable that is not set is an error on that model's ``env`` field.
Filled values go only into the container's environment: never into errors, reprs or logs.

A manifest names only variables allowed for manifests (``EnvAllow``): the Hugging Face tokens, and
the names or prefixes of ``MODELCTL_MANIFEST_ENV_ALLOW``; never ``MODELCTL_*``. The controller's
environment also holds its own keys (``MODELCTL_CONTROLLER_KEY``, the gateway's), and whoever can
edit a manifest must not be able to copy them into a container they control.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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


# Variables every manifest may name: the tokens for gated hub models.
DEFAULT_ALLOWED = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# modelctl's own settings and keys: never copied into a container, whatever the setting says.
NEVER_PREFIX = "MODELCTL_"
ALLOW_SETTING = "MODELCTL_MANIFEST_ENV_ALLOW"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class EnvAllow:
    """The variables manifests may name: exact names, and prefixes (written ``PREFIX*``)."""

    names: frozenset[str] = frozenset(DEFAULT_ALLOWED)
    prefixes: tuple[str, ...] = ()

    def allows(self, name: str) -> bool:
        if name.startswith(NEVER_PREFIX):
            return False
        return name in self.names or name.startswith(self.prefixes)

    @classmethod
    def parse(cls, text: str) -> EnvAllow:
        """The defaults plus ``text``'s comma-separated names and ``PREFIX*`` entries.
        Raises ValueError for an entry that is no variable name, or one that allows MODELCTL_*."""
        return cls.of(entry.strip() for entry in text.split(",") if entry.strip())

    @classmethod
    def of(cls, entries: Iterable[str]) -> EnvAllow:
        names, prefixes = set(DEFAULT_ALLOWED), []
        for entry in entries:
            stem = entry.removesuffix("*")
            if not _NAME.fullmatch(stem):
                raise ValueError(f"{ALLOW_SETTING}: '{entry}' is not a variable name or a PREFIX*")
            if stem.startswith(NEVER_PREFIX):
                raise ValueError(f"{ALLOW_SETTING}: '{entry}': manifests never get {NEVER_PREFIX}* variables")
            if entry.endswith("*"):
                prefixes.append(stem)
            else:
                names.add(stem)
        return cls(frozenset(names), tuple(prefixes))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> EnvAllow:
        return cls.parse(environ.get(ALLOW_SETTING, ""))


# Every name but MODELCTL_*: for rendering to Kubernetes, where ${NAME} is a key of a Secret the
# cluster's operator creates, not a variable of a controller's environment.
ANY_NAME = EnvAllow(prefixes=("",))


def check_allowed(value: str, allow: EnvAllow) -> None:
    """Raise ValueError naming the variables ``value`` refers to that manifests may not use."""
    refused = [name for name in dict.fromkeys(references(value)) if not allow.allows(name)]
    if refused:
        names = ", ".join(f"${{{name}}}" for name in refused)
        raise ValueError(
            f"refers to {names}, which manifests may not use (allowed: {', '.join(sorted(allow.names))}"
            f"{''.join(f', {p}*' for p in allow.prefixes)}; more with {ALLOW_SETTING}; never {NEVER_PREFIX}*)"
        )
