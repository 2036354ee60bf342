"""Which headers cross the gateway, each way.

Hop-by-hop headers (RFC 9110 section 7.6.1) never do; a replica never sees the client's
credentials (Authorization, x-api-key, cookies), and the client never sees the replica's framing
(aiohttp frames the body and writes its own Date and Server) nor its CORS headers (``Access-Control-*``:
the gateway owns CORS, ``cors.py``). Filtering is on the hot path, so
whether a header name passes is remembered per spelling: one dict lookup per header.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Host and length belong to the new request; the client's credentials are the gateway's business;
# aiohttp's server decodes a compressed body as the gateway reads it, so the replica gets it plain
# (with the client's Content-Encoding it would decode a plain body, and fail).
_DROP_FROM_REQUEST = HOP_BY_HOP | {
    "host", "content-length", "content-encoding", "authorization", "x-api-key", "cookie", "expect",
}  # fmt: skip
# aiohttp writes its own Date/Server and frames the body itself.
_DROP_FROM_RESPONSE = HOP_BY_HOP | {"content-length", "date", "server"}


# Whether a header name (as spelled on the wire) passes, remembered per spelling: one dict lookup per
# header instead of lower() plus a set lookup. Bounded: a client may invent any number of names.
_KEEP_IN_REQUEST: dict[str, bool] = {}
_KEEP_IN_RESPONSE: dict[str, bool] = {}
_KEEP_CACHE_SIZE = 512


# A replica's CORS headers (llama-server: an empty Access-Control-Allow-Origin) are not the gateway's.
_CORS_PREFIX = "access-control-"


def _keeps(cache: dict[str, bool], drop: frozenset[str], name: str) -> bool:
    lower = name.lower()
    keep = lower not in drop and not (drop is _DROP_FROM_RESPONSE and lower.startswith(_CORS_PREFIX))
    if len(cache) < _KEEP_CACHE_SIZE:
        cache[name] = keep
    return keep


def request_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """Return the client's headers that the replica should see (name, value pairs, in order)."""
    cache = _KEEP_IN_REQUEST
    return [
        (k, v)
        for k, v in headers.items()
        if cache.get(k) or (k not in cache and _keeps(cache, _DROP_FROM_REQUEST, k))
    ]


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return the replica's headers that the client should see (name, value pairs, in order)."""
    cache = _KEEP_IN_RESPONSE
    return [
        (k, v)
        for k, v in headers
        if cache.get(k) or (k not in cache and _keeps(cache, _DROP_FROM_RESPONSE, k))
    ]
