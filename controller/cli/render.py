"""What the commands print, apart from how they get it: lines about manifests (validate, plan).
Tables of placement and GPUs are ``controller.placement.report``'s.
"""

from __future__ import annotations

import sys
from pathlib import Path

from controller.errors import InvalidManifests
from controller.manifests.document import ModelManifest


def replica_range(manifest: ModelManifest) -> str:
    """'2' for a fixed count, '0-2' for a model scaled on demand."""
    if manifest.on_demand:
        return f"{manifest.min_count}-{manifest.max_count}"
    return str(manifest.min_count)


def report_invalid(exc: InvalidManifests, path: Path) -> int:
    """Every error of a load on stderr, one a line, then their count; exit status 1."""
    for error in exc.errors:
        print(error, file=sys.stderr)
    print(f"{len(exc.errors)} error(s) in {path}", file=sys.stderr)
    return 1
