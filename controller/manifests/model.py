"""``LoadedModel``, the main domain type: a valid manifest, where it came from, and the host path of
its weights. Placement, the engines, the reconciler and the Kubernetes renderer all take it; the
loader (``loader``) makes it from a folder, apart from YAML so that its readers need not know YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from controller.manifests.document import ModelManifest, hub_reference


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A valid manifest, where it came from, and the host path of its weights (if checked)."""

    manifest: ModelManifest
    file: str
    document: int | None  # its position in a file of several documents (from 1); None: the only one
    weights: Path | None  # resolved host path under a model root; None for hub references and
    # when no roots were given
    created: int = 0  # the manifest file's modification time (OpenAI's `created` in /v1/models)
    # ``env`` with its ${NAME} references filled in (envrefs.py); None: not filled (the manifest's
    # values as written). Secrets may be in it: kept out of repr.
    filled_env: tuple[tuple[str, str], ...] | None = field(default=None, repr=False)

    @property
    def env(self) -> tuple[tuple[str, str], ...]:
        """The engine's extra environment, references filled in when the loader did so."""
        if self.filled_env is not None:
            return self.filled_env
        return tuple(self.manifest.env.items())

    @property
    def hub(self) -> str | None:
        """'org/repo[:quant]' when the engine downloads the weights itself."""
        return hub_reference(self.manifest.model)

    @property
    def name(self) -> str:
        return self.manifest.resolved_name
