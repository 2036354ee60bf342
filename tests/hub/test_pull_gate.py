"""A pull that ends in the middle of a reconcile pass: that pass decided from manifests loaded before
the end (the model not yet resolved in the cache), so its gate must hold the start for the next
pass (which loads the model with its cached files) instead of pulling the same files again. Seen
in the compose end-to-end run (tests/e2e/test_compose_pull.py): a second pull of a cached repo and
a second ``pulled`` event whose reason read "listing the repo". A model loaded as not pulled whose
files are in the cache is held without a pull on any pass (the load that found them may have
refused them: ``controller.hub.fit``), until the cache loses them."""

from __future__ import annotations

import asyncio

from controller.hub.cache import HubCache, HubRef
from controller.hub.pull import Puller
from controller.reconcile.events import EventLog
from controller.reconcile.pulls import Pulls
from controller.reconcile.supervise import Failures
from controller.runtime.spec import ContainerSpec
from tests.hub.conftest import GGUF_REPO, hub_model
from tests.hub.standin import StandInHub


async def test_a_pass_loaded_before_the_pull_ended_holds_the_start_and_pulls_no_more(
    hub: tuple[StandInHub, str], cache: HubCache
) -> None:
    standin, url = hub
    ended = asyncio.Event()
    events = EventLog()
    pulls = Pulls(Puller(cache, endpoint=url), wake=ended.set, failures=Failures(), events=events)
    stale = hub_model(f"hf://{GGUF_REPO}:Q4_1", "llamacpp")  # as loaded before the pull ended
    spec = ContainerSpec(stale.name, 0, "llamacpp", "image", (), 8080, "/health", 1)

    def start_failed(slot: tuple[str, int], why: str) -> float:
        raise AssertionError(f"no start fails here: {why}")

    assert pulls.gate([spec], [stale], start_failed) == ()  # the pull starts instead
    await asyncio.wait_for(ended.wait(), 30)
    requests = standin.requests

    assert pulls.gate([spec], [stale], start_failed) == ()  # held for the next pass
    assert not pulls.busy and standin.requests == requests  # no second pull
    assert [e.kind for e in events.after(0)].count("pulled") == 1

    ended.clear()
    (fresh,) = cache.resolve([stale])  # the next pass loads it with its cached files
    assert pulls.gate([spec], [fresh], start_failed) == (spec,)
    assert pulls.gate([spec], [stale], start_failed) == ()  # a stale model later, still cached:
    assert not pulls.busy and standin.requests == requests  # held, nothing pulled (``Pulls.cached``)
    ref = HubRef.of(stale)
    assert ref is not None
    cache.record_path(ref).unlink()  # the cache lost its files: a stale model is pulled again
    assert pulls.gate([spec], [stale], start_failed) == ()
    assert pulls.busy
    await asyncio.wait_for(ended.wait(), 30)
