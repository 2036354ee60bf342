"""The console page's files as the controller serves them: local assets only (it works offline),
the right content types and cache headers, and no path that leaves the static folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from controller.api import page

STATIC = page.STATIC
OURS = ("index.html", "app.js", "app.css")


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient[Any, Any]:
    app = web.Application()
    page.add_routes(app)
    return await aiohttp_client(app)


def assets(html: str) -> list[str]:
    return re.findall(r'<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)"', html)


async def test_the_root_serves_the_page_with_a_policy_that_keeps_it_on_its_own_origin(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-cache"
    policy = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    assert '<html lang="en">' in await resp.text()


async def test_every_asset_the_page_names_is_local_and_served_with_its_type(
    client: TestClient[Any, Any],
) -> None:
    html = (STATIC / "index.html").read_text()
    names = [n for n in assets(html) if n != "data:,"]  # the empty favicon: no request for one
    assert set(names) == {
        "/console/vendor/uplot/uPlot.min.css",
        "/console/app.css",
        "/console/vendor/uplot/uPlot.iife.min.js",
        "/console/app.js",
    }
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    for name in names:
        resp = await client.get(name)
        assert resp.status == 200, name
        assert resp.headers["Content-Type"] == types[Path(name).suffix], name
        assert resp.headers["Cache-Control"] == "no-cache" and resp.headers["ETag"], name
        assert await resp.read() == (STATIC / name.removeprefix("/console/")).read_bytes()


async def test_a_reload_revalidates_instead_of_downloading_again(client: TestClient[Any, Any]) -> None:
    first = await client.get("/console/app.js")
    again = await client.get("/console/app.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304


@pytest.mark.parametrize("name", OURS)
def test_our_files_name_no_url_on_the_internet(name: str) -> None:
    text = (STATIC / name).read_text()
    assert not re.findall(r"https?://", text), f"{name} refers to the Internet: the page must work offline"
    assert "//cdn" not in text and "@import" not in text


def test_the_vendored_library_fetches_nothing_and_carries_its_version_and_licence() -> None:
    vendor = STATIC / "vendor" / "uplot"
    script = (vendor / "uPlot.iife.min.js").read_text()
    version = re.match(r"/\*! https://github.com/leeoniya/uPlot \(v([\d.]+)\) \*/", script)
    assert version is not None
    assert re.findall(r"https?://[^\s\"')]+", script) == ["https://github.com/leeoniya/uPlot"]  # its banner
    assert not re.search(r"\bfetch\(|XMLHttpRequest|importScripts", script)
    assert f"npm pack uplot@{version.group(1)}" in (vendor / "README.md").read_text()
    assert (vendor / "LICENSE").read_text().startswith("The MIT License")


@pytest.mark.parametrize(
    "raw",
    [
        "/console/../page.py",
        "/console/%2e%2e/page.py",
        "/console/..%2fpage.py",
        "/console/vendor/../../page.py",
        "/console/vendor/uplot/../../../page.py",
        "/console/%2e%2e/%2e%2e/api.py",
        "/console/..%5cpage.py",
        "/console//etc/passwd",
        "/console/vendor",
        "/console/nothing.js",
    ],
)
async def test_a_path_outside_the_static_folder_or_not_a_file_is_refused(
    client: TestClient[Any, Any], raw: str
) -> None:
    resp = await client.get(URL(raw, encoded=True))
    assert resp.status == 404, raw
    body = await resp.text()
    assert "from __future__" not in body and "root:" not in body


@pytest.mark.parametrize(
    ("name", "served"),
    [
        ("app.js", True),
        ("vendor/uplot/LICENSE", True),
        ("vendor/uplot/README.md", True),
        ("../page.py", False),
        ("vendor/../../page.py", False),
        ("/etc/passwd", False),
        ("vendor\\..\\..\\page.py", False),
        ("app.js\x00.png", False),
        ("vendor", False),
        ("", False),
    ],
)
def test_resolve_keeps_to_the_static_folder(name: str, served: bool) -> None:
    path = page.resolve(name)
    assert (path is not None) == served
    if path is not None:
        assert path.is_relative_to(STATIC)


def test_a_link_pointing_out_of_the_folder_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "static"
    root.mkdir()
    (tmp_path / "secret.js").write_text("secret")
    (root / "ok.js").write_text("ok")
    (root / "out.js").symlink_to(tmp_path / "secret.js")
    assert page.resolve("ok.js", root) == (root / "ok.js").resolve()
    assert page.resolve("out.js", root) is None


def test_a_file_of_an_unknown_kind_is_not_served(tmp_path: Path) -> None:
    root = tmp_path / "static"
    root.mkdir()
    (root / "notes.py").write_text("x = 1")
    assert page.resolve("notes.py", root) is None
