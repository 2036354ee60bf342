"""Sizes ('24GiB', '500MB') and durations ('90s', '10m', '1h30m') as manifests write them, each
bounded: a size at most 1 PiB, a duration at most 30 days. Plain functions without pydantic, so
placement and the settings read sizes the same way the manifests do.
"""

from __future__ import annotations

import re

from controller.manifests.quoting import shown

MAX_SIZE_BYTES = 1 << 50  # 1 PiB of GPU or host memory
MAX_DURATION_S = 30 * 86400.0  # a month: beyond it a timeout means "never", which 0 says

SIZE_UNITS = {
    "": 1,
    "B": 1,
    "K": 1000,
    "KB": 1000,
    "M": 1000**2,
    "MB": 1000**2,
    "G": 1000**3,
    "GB": 1000**3,
    "T": 1000**4,
    "TB": 1000**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}


def parse_size(text: str) -> int:
    """Bytes in a size like '24GiB', '500MB', '1.5G' (decimal and binary units). Raises ValueError."""
    match = re.fullmatch(r"\s*(\d{1,20}(?:\.\d{1,20})?)\s*([A-Za-z]{0,3})\s*", text)
    unit = match.group(2).upper() if match else ""
    if not match or unit not in SIZE_UNITS:
        raise ValueError(f"'{shown(text)}' is not a size: use a number with B, KB, MB, GB, KiB, MiB or GiB")
    size = float(match.group(1)) * SIZE_UNITS[unit]
    if size > MAX_SIZE_BYTES:
        raise ValueError(f"'{shown(text)}' is more memory than any machine has (at most 1 PiB)")
    return int(size)


DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_duration(value: float | str) -> float:
    """Seconds in a duration: a number of seconds, or '30s', '10m', '1h', '1h30m'. Raises ValueError."""
    if isinstance(value, int | float):
        return _bounded_duration(float(value))
    if len(value) > 64:
        raise ValueError(f"'{shown(value)}' is not a duration: too long")
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip().lower())
    rebuilt = "".join(f"{n}{u}" for n, u in parts)
    if (
        not parts
        or rebuilt != re.sub(r"\s+", "", value.lower())
        or any(u not in DURATION_UNITS for _, u in parts)
    ):
        raise ValueError(
            f"'{shown(value)}' is not a duration: use seconds, or a number with s, m or h ('90s', '10m')"
        )
    return _bounded_duration(sum(float(n) * DURATION_UNITS[u] for n, u in parts))


def _bounded_duration(seconds: float) -> float:
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative ({seconds:g})")
    if not seconds <= MAX_DURATION_S:  # NaN too
        raise ValueError(f"a duration is at most 30 days ({MAX_DURATION_S:g} s), not {seconds:g}")
    return seconds
