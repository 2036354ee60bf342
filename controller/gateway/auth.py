"""Optional API keys: a key on every /v1/* (and /api/*) request, compared in constant time; per-key
names, usage and limits.

With no keys configured the gateway is open (``run_gateway`` says so once at start-up). With keys,
``Authorization: Bearer <key>`` (OpenAI's clients, Ollama's behind a proxy) or ``x-api-key: <key>``
(Anthropic's client) must carry one of them, else 401 in the API's own shape (``errors.Refusal.response``:
openai and anthropic clients raise AuthenticationError). Every key is compared with
``hmac.compare_digest`` and the loop never stops early, so timing tells neither which key matched
nor how much of a guess was right. Probes (``/healthz``, ``/health``, ``/readyz``) stay open, and so
do the scrapers' ``/metrics`` and ``/metrics/requests`` unless ``metrics_require_key`` (then any
valid key reads them, outside its limits): they expose no prompt or answer. Keys are never logged,
and the proxy never forwards the client's Authorization or x-api-key header.

Each key has a name (``settings.read_key_specs``: the keys file's, else a keyed fingerprint), which
the metrics count requests and tokens under, and optional limits: requests and tokens per minute,
over a sliding minute, and requests in flight at once (``max_concurrent_requests``, held from the
middleware's admission to the end of the answer, streams included). A request over any is answered
429 with Retry-After before it reaches admission; tokens count when an answer reports its usage
(every stream's too, ``usage.py``), so one long answer may pass the token limit, and the next
request waits. Each worker process keeps its own windows and counts (with N workers a key may get
up to N x its limits, as with ``max_concurrency``). The keys file is looked at (``stat``) at most
once a second, on the request path, and read again when it changed. It fails closed: a file that
goes missing or no longer parses leaves none of its keys valid (keys from MODELCTL_API_KEYS stay)
until it is readable again, and every look that finds it so says so in the log (never a key).
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from aiohttp import web

from controller.gateway import errors
from controller.gateway.settings import GatewaySettings, KeySpec, SettingsError, key_name, read_key_specs
from controller.gateway.telemetry.metrics import GatewayMetrics

log = logging.getLogger(__name__)

PROBE_PATHS = frozenset({"/healthz", "/health", "/readyz"})
METRICS_PATHS = frozenset({"/metrics", "/metrics/requests"})
OPEN_PATHS = PROBE_PATHS | METRICS_PATHS
WINDOW_S = 60.0
LOOK_EVERY_S = 1.0


class KeyUse:
    """One key name's usage: its limits' sliding minute, and its counters in the metrics."""

    __slots__ = (
        "_metrics",
        "_requests",
        "_token_sum",
        "_tokens",
        "in_flight",
        "max_concurrent_requests",
        "name",
        "requests_per_minute",
        "tokens_per_minute",
    )

    def __init__(self, spec: KeySpec, metrics: GatewayMetrics | None) -> None:
        self.name = spec.name
        self.requests_per_minute = spec.requests_per_minute
        self.tokens_per_minute = spec.tokens_per_minute
        self.max_concurrent_requests = spec.max_concurrent_requests
        self.in_flight = 0  # requests of this key between admission and the end of their answer
        self._metrics = metrics
        self._requests: deque[float] = deque()  # when each request of the last minute came
        self._tokens: deque[tuple[float, int]] = deque()  # (when, how many) reported in the last minute
        self._token_sum = 0

    def limit(self, spec: KeySpec) -> None:
        """Take the limits of ``spec`` (the keys file changed); the minute's figures stay."""
        self.requests_per_minute = spec.requests_per_minute
        self.tokens_per_minute = spec.tokens_per_minute
        self.max_concurrent_requests = spec.max_concurrent_requests

    def busy(self) -> bool:
        """True if the key has as many requests in flight as it may."""
        limit = self.max_concurrent_requests
        return limit is not None and self.in_flight >= limit

    def admit(self, now: float) -> int | None:
        """Count a request at ``now``; return None, or the seconds to wait if it is over a limit."""
        since = now - WINDOW_S
        waits = []
        if self.requests_per_minute is not None:
            requests = self._requests
            while requests and requests[0] <= since:
                requests.popleft()
            if len(requests) >= self.requests_per_minute:
                waits.append(requests[len(requests) - self.requests_per_minute] - since)
        if self.tokens_per_minute is not None:
            tokens = self._tokens
            while tokens and tokens[0][0] <= since:
                self._token_sum -= tokens.popleft()[1]
            if self._token_sum >= self.tokens_per_minute:
                waits.append(self._tokens_free_at(since))
        if waits:
            return max(1, math.ceil(max(waits)))
        if self.requests_per_minute is not None:
            self._requests.append(now)
        return None

    def _tokens_free_at(self, since: float) -> float:
        """Seconds until enough of the minute's tokens leave it to fall under the limit."""
        assert self.tokens_per_minute is not None
        left = self._token_sum
        for when, count in self._tokens:
            left -= count
            if left < self.tokens_per_minute:
                return when - since
        return WINDOW_S

    def tokens(self, prompt: int, completion: int) -> None:
        """Count the tokens an answer reported (``call.Call.user``)."""
        if self.tokens_per_minute is not None:
            self._tokens.append((time.monotonic(), prompt + completion))
            self._token_sum += prompt + completion
        if self._metrics is not None:
            self._metrics.key_tokens(self.name, prompt, completion)

    def record(self, status: int) -> None:
        """Count a request answered with ``status``."""
        if self._metrics is not None:
            self._metrics.key_request(self.name, status)


# The request's key use, set by ``refusal`` for the handlers: ``request.get(KEY_USE)``.
KEY_USE = web.RequestKey("modelctl.key_use", KeyUse)


class KeyCheck:
    """Whether a key is one of the configured ones, and whose; follows the keys file if there is one.

    ``open_paths``: the paths that want no key (``refusal``). ``secret`` keys the fingerprints that
    name keys without a name (``settings.key_name``); a random one per check when not given.
    """

    def __init__(
        self,
        keys: Iterable[str] = (),
        *,
        keys_file: Path | None = None,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        secret: bytes | None = None,
        metrics_require_key: bool = False,
    ) -> None:
        self._file = keys_file
        self._metrics = metrics
        self._clock = clock
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self.open_paths = PROBE_PATHS if metrics_require_key else OPEN_PATHS
        self._uses: dict[str, KeyUse] = {}
        self._stamp: tuple[int, int] | None = None
        self._broken = False
        # Keys given directly (env, settings); a key also in the file is the file's.
        self._given = [KeySpec(key_name(k, self._secret), k) for k in dict.fromkeys(keys)]
        self._entries: tuple[tuple[bytes, KeyUse], ...] = ()
        self._install((self._read() or []) if keys_file is not None else [])
        self._next_look = clock() + LOOK_EVERY_S

    @classmethod
    def from_settings(cls, settings: GatewaySettings, metrics: GatewayMetrics | None = None) -> KeyCheck:
        """Return the check for ``settings``' keys and keys file, counting into ``metrics``."""
        return cls(
            settings.api_keys,
            keys_file=settings.api_keys_file,
            metrics=metrics,
            secret=settings.key_secret,
            metrics_require_key=settings.metrics_require_key,
        )

    def __bool__(self) -> bool:
        return bool(self._entries) or self._file is not None

    def names(self) -> list[str]:
        """Return the key names accepted now."""
        return [use.name for _, use in self._entries]

    def accepts(self, authorization: str | None) -> bool:
        """Return True if the Authorization header value carries a configured key."""
        return self.match(bearer_token(authorization)) is not None

    def match(self, token: str | None) -> KeyUse | None:
        """Return the usage of the key ``token`` is, or None; constant time over all keys."""
        if token is None:
            return None
        candidate = token.strip().encode("utf-8", "replace")
        found = None
        for key, use in self._entries:
            if hmac.compare_digest(candidate, key):
                found = use
        return found

    def refresh(self, now: float) -> None:
        """Read the keys file again if it changed, or while it is broken (looked at once a second)."""
        if now < self._next_look or self._file is None:
            return
        self._next_look = now + LOOK_EVERY_S
        if self._look() == self._stamp and not self._broken:
            return
        specs = self._read()
        self._install(specs or [])
        if specs is not None:
            log.info("API keys file read again: %d keys", len(self._entries))

    def _look(self) -> tuple[int, int] | None:
        assert self._file is not None
        try:
            stat = self._file.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _read(self) -> list[KeySpec] | None:
        """Return the keys file's keys, or None (said, at every look) if it cannot be read or parsed."""
        assert self._file is not None
        self._stamp = self._look()
        try:
            specs = read_key_specs(self._file, secret=self._secret)
        except SettingsError as exc:  # an OSError too, named by read_key_specs
            self._broken = True
            log.warning("API keys file unusable, none of its keys is accepted until it is fixed: %s", exc)
            return None
        self._broken = False
        return specs

    def _install(self, file_specs: list[KeySpec]) -> None:
        in_file = {spec.key for spec in file_specs}
        uses = {}
        entries = []
        for spec in (*(s for s in self._given if s.key not in in_file), *file_specs):
            use = self._uses.get(spec.name)
            if use is None:
                use = KeyUse(spec, self._metrics)
            else:
                use.limit(spec)
            uses[spec.name] = use
            entries.append((spec.key.encode("ascii"), use))
        self._uses = uses
        self._entries = tuple(entries)


def bearer_token(authorization: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer <token>`` value, or None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token if scheme.lower() == "bearer" else None


def refusal(check: KeyCheck, request: web.Request) -> web.StreamResponse | None:
    """Return the 401 (no valid key) or 429 (over the key's limit) for a request outside the check's
    open paths, in the API's shape, else None: it may pass, with its ``KeyUse`` at
    ``request[KEY_USE]``, counted in flight until ``release(request)``.

    The app's guard (``app.guard``, around every route's handler) calls it before the handler when keys are
    configured, and ``release`` once the answer is done.
    """
    path = request.path
    if path in check.open_paths:
        return None
    now = time.monotonic()
    check.refresh(now)
    headers = request.headers
    authorization = headers.get("Authorization")
    token = bearer_token(authorization) if authorization is not None else headers.get("x-api-key")
    use = check.match(token)
    if use is None:
        return _unauthorized(authorization, token).response(errors.api_of(path))
    if path in METRICS_PATHS:  # a scraper's key: read, not counted against its limits
        return None
    if use.busy():
        use.record(429)
        busy = errors.overloaded(
            f"API key '{use.name}' has {use.in_flight} requests in flight, its limit. Retry when one ends.",
            code="key_concurrency_limited",
            retry_after=1,
        )
        return busy.response(errors.api_of(path))
    retry_after = use.admit(now)
    if retry_after is not None:
        use.record(429)
        limited = errors.overloaded(
            f"API key '{use.name}' is over its limit of requests or tokens per minute. "
            f"Retry in {retry_after} s.",
            code="key_rate_limited",
            retry_after=retry_after,
        )
        return limited.response(errors.api_of(path))
    use.in_flight += 1
    request[KEY_USE] = use
    return None


def release(request: web.Request) -> None:
    """The answer to a request ``refusal`` let pass is done (streams: their last byte): not in flight."""
    use = request.get(KEY_USE)
    if use is not None:
        use.in_flight -= 1


def access_line(settings: GatewaySettings) -> str:
    """Return the start-up line about API keys: how many, from where, or that the gateway is open;
    never a key. A keys file that holds none (or cannot be used) is said as such: everyone is refused."""
    given = len(settings.api_keys)
    path = settings.api_keys_file
    metrics = "; /metrics too" if settings.metrics_require_key else ""
    if path is None:
        if not given:
            return "API keys: none configured, the gateway is open to anyone who can reach it"
        return f"API keys: {given} configured; /v1/* needs 'Authorization: Bearer <key>'{metrics}"
    try:
        keys = {spec.key for spec in read_key_specs(path, secret=b"")}
    except SettingsError as exc:
        keys, problem = set(), f" ({exc})"
    else:
        problem = ""
    in_file, given = len(keys), len(set(settings.api_keys) - keys)  # a key in both is the file's
    if not in_file and not given:
        return (
            f"API keys: none yet: the keys file {path} holds no usable key{problem}, so every request "
            "to /v1/* and /api/* is refused until one is added (the file is read again when it changes)"
        )
    return (
        f"API keys: {in_file + given} configured ({in_file} in {path}{problem}, {given} from "
        f"MODELCTL_API_KEYS); /v1/* needs 'Authorization: Bearer <key>'{metrics}"
    )


def _unauthorized(authorization: str | None, token: str | None) -> errors.Refusal:
    if authorization is None and token is None:
        return errors.unauthorized(
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' "
            "(or 'x-api-key: YOUR_KEY')."
        )
    return errors.unauthorized("Incorrect API key provided.")
