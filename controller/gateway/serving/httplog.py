"""What aiohttp's server logs about requests it could not parse, made one line a minute.

aiohttp answers a request it cannot parse (a broken request line, a header without a colon, a bad
chunk size) with 400 itself, then logs "Error handling request" at ERROR with the parser's whole
traceback. The gateway faces clients, so anyone could fill its log with tracebacks at wire speed.
``QuietParseErrors``, a filter on the logger the gateway's server writes to, counts those records
and lets one summary line through per ``every_s`` (how many, and the last parser message);
everything else passes untouched. The client still gets aiohttp's 400.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp.http_exceptions import HttpProcessingError

SERVER_LOGGER = "modelctl.gateway.http"


class QuietParseErrors(logging.Filter):
    """Drops parse-error tracebacks; lets a one-line count through at most once per ``every_s``."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s = every_s
        self.clock = clock
        self.dropped = 0
        self.last_said = -every_s

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        self.dropped += 1
        now = self.clock()
        if now - self.last_said < self.every_s:
            return False
        self.last_said = now
        record.msg = "refused %d request(s) it could not parse with 400 (last: %s)"
        first_line = (exc.message or type(exc).__name__).strip().splitlines()[0]
        record.args = (self.dropped, first_line[:200])
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        self.dropped = 0
        return True


def server_logger() -> logging.Logger:
    """The logger the gateway's aiohttp server writes its errors to, parse errors quieted (once)."""
    logger = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(f, QuietParseErrors) for f in logger.filters):
        logger.addFilter(QuietParseErrors())
    return logger
