"""Process-wide tuning for a process that serves only the gateway: the event loop and the GC.

Both are opt-in per process (``GatewaySettings.tune_gc``; uvloop when installed), never applied by
importing the package, because tests and ``modelctl serve`` run the gateway inside other processes.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return uvloop's loop factory when uvloop is installed, else None (asyncio's default loop).

    uvloop cuts the gateway's CPU per proxied request by about a tenth (bench/gateway_overhead.py);
    callers pass it to ``asyncio.Runner(loop_factory=...)``.
    """
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


# Young-generation collections every this many container allocations (CPython's default is 700).
GC_GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a serving process; call once it has started.

    A proxied request allocates a hundred or so container objects, so with CPython's default
    threshold (700) the young generation is collected every few requests, each time walking every
    in-flight request's objects: about a tenth of the CPU at 64 concurrent requests
    (bench/gateway_overhead.py). ``gc.freeze()`` moves everything alive after start-up (modules,
    the app) out of the collector's sight, so full collections walk only what came since;
    a young threshold of GC_GEN0_THRESHOLD collects less often. Cyclic garbage lives a few
    milliseconds longer; everything else is freed by reference counting as before.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
