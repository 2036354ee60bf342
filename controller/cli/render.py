"""What the commands print, apart from how they get it: the status tables (the controller's
/v1/status answer: replicas, on-demand scaling, energy, notes, manifest errors) and the lines about
manifests (validate, plan). Tables of placement and GPUs are ``controller.placement.report``'s.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


COLUMNS = ("MODEL", "REPLICA", "STATE", "RESTARTS", "AGE", "ENDPOINT", "CONTAINER", "REASON")


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time as Docker (nanoseconds, 'Z') or Python (microseconds, '+00:00') writes it."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", text.strip())
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    parsed = datetime.fromisoformat(whole + (fraction or "")[:7])
    if zone in (None, "Z"):
        return parsed.replace(tzinfo=UTC)
    return parsed.replace(tzinfo=datetime.fromisoformat(f"2000-01-01T00:00:00{zone}").tzinfo)


def age(started_at: str, now: datetime) -> str:
    """'5s', '3m', '2h', '4d' since Docker's StartedAt; '-' when unknown."""
    started = parse_time(started_at)
    if started is None:
        return "-"
    seconds = max(0, int((now - started).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def render_table(payload: dict[str, Any], now: datetime | None = None) -> str:
    """The controller's /v1/status answer as a text table, manifest errors below it."""
    now = now or datetime.now(UTC)
    rows = [
        (
            r["model"],
            str(r["replica"]),
            f"{r['state']} ({r['progress']})" if r.get("progress") else r["state"],
            str(r["restarts"]),
            age(r.get("started_at", ""), now),
            r["endpoint"] or "-",
            r["container"] or "-",
            r["reason"] or "",
        )
        for r in payload["replicas"]
    ]
    widths = [max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(COLUMNS)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [COLUMNS, *rows]
    ]
    if not rows and not payload.get("models"):
        lines.append("(no models)")
    on_demand = [m for m in payload.get("models", []) if m["min_replicas"] != m["max_replicas"]]
    if on_demand:
        lines.extend(["", *scaling_table(on_demand, payload["replicas"], now)])
    lines.extend(energy_lines(payload.get("energy")))
    lines.extend(f"note: {note}" for note in payload.get("notes", []))
    for error in payload.get("manifest_errors", []):
        lines.append(f"manifest error (serving the last good set): {error}")
    return "\n".join(lines)


def energy_lines(energy: dict[str, Any] | None) -> list[str]:
    """One line per model on a GPU ('energy: smollm2: 1.8 J/token over 5 min (exclusive)'), or one
    saying why there are no figures; none from a controller that does not report energy."""
    if not energy:
        return []
    if not energy.get("available") or not energy.get("models"):
        return [f"energy: {energy.get('reason') or 'no figures'}"]
    window = f"{energy['window_s'] / 60:g} min"
    lines = []
    for row in energy["models"]:
        per_token = row["joules_per_token"]
        figure = (
            f"{per_token:.3g} J/token over {window}"
            if per_token is not None
            else f"{row['joules']:.1f} J over {window}, no output tokens counted"
        )
        lines.append(f"energy: {row['model']}: {figure} ({row['basis']})")
    return lines


SCALING_COLUMNS = ("MODEL", "READY", "DESIRED", "RANGE", "IN FLIGHT", "WAITING", "LAST USED", "SCALING")


def scaling_table(models: list[dict[str, Any]], replicas: list[dict[str, Any]], now: datetime) -> list[str]:
    """The on-demand models: ready of desired replicas, bounds, load, last use and why."""
    rows = []
    for m in models:
        ready = sum(1 for r in replicas if r["model"] == m["model"] and r["state"] == "Ready")
        why = "scaled to zero (the next request starts it)" if m["desired"] == 0 else m["reason"]
        used = f"{age(m['last_used'], now)} ago" if m["last_used"] else "never"
        rows.append(
            (
                m["model"],
                str(ready),
                str(m["desired"]),
                f"{m['min_replicas']}-{m['max_replicas']}",
                str(m["in_flight"]),
                str(m["waiting"]),
                used,
                why,
            )
        )
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(SCALING_COLUMNS)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [SCALING_COLUMNS, *rows]
    ]
