"""A hub download cut in the middle resumes on the next try: the partial blob stays on disk, the next
pull (a new ``Puller``, as after a restart) asks for the rest with a Range request; a server that
ignores or refuses the range gets the whole file again; a file that is not the listed one is
deleted; the token never leaves the hub's host on a redirect to the CDN. Against the stand-in Hub
over real sockets, with a generated file of a few MiB."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from controller.errors import HubError
from controller.hub.cache import HubCache, HubRef
from controller.hub.pull import Puller
from controller.manifests.model import LoadedModel
from tests.hub.conftest import hub_model
from tests.hub.standin import HubFile, StandInHub, serve

REPO = "test/big-GGUF"
NAME = "big-Q4_0.gguf"
SIZE = 6 * (1 << 20) + 4321  # a few MiB, not a multiple of the stand-in's chunk
CUT = 2 * (1 << 20) + 12345  # where the first download is cut
TOKEN = "hf_secret_resume_token"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> HubFile:
    path = tmp_path_factory.mktemp("big") / NAME
    path.write_bytes(random.Random(19).randbytes(SIZE))
    return HubFile.of(path)


async def standin(big: HubFile) -> tuple[StandInHub, str, web.AppRunner]:
    hub = StandInHub({REPO: {NAME: big}})
    runner, url = await serve(hub)
    return hub, url, runner


@pytest.fixture
async def hub(big: HubFile) -> AsyncIterator[tuple[StandInHub, str]]:
    found, url, runner = await standin(big)
    yield found, url
    await runner.cleanup()


@pytest.fixture
async def cdn(big: HubFile) -> AsyncIterator[tuple[StandInHub, str]]:
    found, url, runner = await standin(big)
    yield found, url
    await runner.cleanup()


@pytest.fixture
def cache(tmp_path: Path) -> HubCache:
    return HubCache(tmp_path / "hub")


def model(token: str | None = None) -> LoadedModel:
    return hub_model(f"hf://{REPO}:Q4_0", "llamacpp", secrets={"HF_TOKEN": token} if token else None)


def blobs(cache: HubCache) -> Path:
    return cache.hf_dir / "models--test--big-GGUF" / "blobs"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def pull(cache: HubCache, url: str, token: str | None = None) -> object:
    """One pull by a new Puller (as after a restart); the pulled files, or the HubError."""
    try:
        return await asyncio.to_thread(Puller(cache, endpoint=url).pull, model(token))
    except HubError as exc:
        return exc


def assert_pulled(cache: HubCache, pulled: object, big: HubFile) -> None:
    assert not isinstance(pulled, HubError), pulled
    local = cache.root / pulled.path  # type: ignore[attr-defined]
    assert local.name == NAME and sha256(local) == big.sha256
    assert os.readlink(local) == f"../../blobs/{big.sha256}"  # huggingface_hub's layout: a relative link
    assert {p.name for p in blobs(cache).iterdir()} == {big.sha256}  # no partial left


async def test_a_cut_download_is_kept_and_the_next_pull_asks_for_the_rest(
    hub: tuple[StandInHub, str], cache: HubCache, big: HubFile
) -> None:
    standin, url = hub
    standin.cut_after[NAME] = CUT
    first = await pull(cache, url)
    assert isinstance(first, HubError)
    assert str(first).startswith(f"hf://{REPO}:Q4_0: downloading {NAME} failed: ")
    assert "kept for the next try" in str(first) and "\n" not in str(first)
    partial = blobs(cache) / f"{big.sha256}.incomplete"
    assert partial.stat().st_size == CUT
    puller = Puller(cache, endpoint=url)
    plan = await asyncio.to_thread(puller.plan, HubRef(REPO, "Q4_0", "llamacpp"), None)
    assert puller.partial_bytes(plan) == CUT  # check_room counts it as fetched
    assert puller.measure(plan).done == CUT  # and the progress starts from it

    second = await pull(cache, url)
    assert standin.ranges == [f"{NAME}: bytes={CUT}-"]
    assert standin.downloads == {NAME: 2}
    assert_pulled(cache, second, big)


@pytest.mark.parametrize(("answer", "gets"), [(200, 2), (416, 3)], ids=["range-ignored", "range-refused"])
async def test_a_server_that_will_not_resume_gets_the_whole_file_again(
    hub: tuple[StandInHub, str], cache: HubCache, big: HubFile, answer: int, gets: int
) -> None:
    standin, url = hub
    standin.cut_after[NAME] = CUT
    standin.range_answer = answer
    assert isinstance(await pull(cache, url), HubError)
    second = await pull(cache, url)
    assert standin.ranges == [f"{NAME}: bytes={CUT}-"]  # asked, then started again from 0
    assert standin.downloads == {NAME: gets}
    assert_pulled(cache, second, big)


async def test_a_partial_longer_than_the_file_starts_again_without_a_range(
    hub: tuple[StandInHub, str], cache: HubCache, big: HubFile
) -> None:
    standin, url = hub
    blobs(cache).mkdir(parents=True)
    (blobs(cache) / f"{big.sha256}.incomplete").write_bytes(b"x" * (SIZE + 5))
    pulled = await pull(cache, url)
    assert standin.ranges == []
    assert_pulled(cache, pulled, big)


async def test_a_file_that_is_not_the_listed_one_is_deleted_and_named(
    hub: tuple[StandInHub, str], cache: HubCache, big: HubFile
) -> None:
    standin, url = hub
    standin.corrupt.add(NAME)
    first = await pull(cache, url)
    assert isinstance(first, HubError)
    assert str(first).startswith(f"hf://{REPO}:Q4_0: {NAME} is not the file the Hub listed: sha256 ")
    assert "the download is deleted" in str(first)
    assert list(blobs(cache).iterdir()) == []  # neither a blob nor a partial
    assert cache.find(HubRef(REPO, "Q4_0", "llamacpp")) is None

    standin.corrupt.clear()
    second = await pull(cache, url)
    assert standin.ranges == []  # nothing kept to resume
    assert_pulled(cache, second, big)


async def test_a_partial_being_written_by_another_pull_is_refused_in_one_line(
    hub: tuple[StandInHub, str], cache: HubCache, big: HubFile
) -> None:
    _standin, url = hub
    blobs(cache).mkdir(parents=True)
    with (blobs(cache) / f"{big.sha256}.incomplete").open("ab") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        found = await pull(cache, url)
    assert isinstance(found, HubError)
    assert str(found) == (
        f"hf://{REPO}:Q4_0: {NAME} is being downloaded by another pull "
        f"(its partial file {big.sha256}.incomplete is locked)"
    )


@pytest.mark.parametrize("elsewhere", [True, False], ids=["cdn-on-another-host", "redirect-on-the-hub"])
async def test_the_token_goes_to_the_hub_and_not_to_the_cdn_it_redirects_to(
    hub: tuple[StandInHub, str],
    cdn: tuple[StandInHub, str],
    cache: HubCache,
    big: HubFile,
    elsewhere: bool,
) -> None:
    standin, url = hub
    cdn_standin, cdn_url = cdn if elsewhere else hub
    standin.cdn = cdn_url.replace("127.0.0.1", "localhost") if elsewhere else url
    cdn_standin.cut_after[NAME] = CUT  # the resumed download goes through the redirect as well
    assert isinstance(await pull(cache, url, TOKEN), HubError)
    pulled = await pull(cache, url, TOKEN)
    assert_pulled(cache, pulled, big)
    assert cdn_standin.downloads == {NAME: 2} and cdn_standin.ranges == [f"{NAME}: bytes={CUT}-"]
    bearer = f"Bearer {TOKEN}"
    if elsewhere:
        assert standin.authorizations == [bearer] * 4  # each pull's listing and resolve GET
        assert cdn_standin.authorizations == []
    else:
        assert standin.authorizations == [bearer] * 6  # and each GET it redirected to itself
