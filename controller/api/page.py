"""The console page: ``GET /`` serves index.html, ``GET /console/{file}`` the files beside it.

The page is plain files (HTML, CSS, one script, uPlot vendored from npm) so there is no build step
and nothing is fetched from the Internet: the controller's API serves it all from the package.
Paths are resolved inside ``static/`` and anything that would leave it is a 404, never a file.
Every answer says ``Cache-Control: no-cache`` (with the ETag and Last-Modified aiohttp adds, a
reload revalidates instead of downloading again) so a new controller never runs an old script.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    "": "text/plain; charset=utf-8",  # LICENSE
}

# The page may talk to its own origin only: a vendored file that tried to reach a CDN would fail.
# uPlot sets inline styles on the elements it draws, hence 'unsafe-inline' for styles alone.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def add_routes(app: web.Application) -> None:
    """Mount the page at ``/`` and its files at ``/console/{file}`` on the controller's API."""
    app.router.add_get("/", index)
    app.router.add_get("/console/{file:.+}", static_file)


async def index(request: web.Request) -> web.StreamResponse:
    return serve(STATIC / "index.html")


async def static_file(request: web.Request) -> web.StreamResponse:
    path = resolve(request.match_info["file"])
    if path is None:
        raise web.HTTPNotFound(text=f"no console file {request.match_info['file']!r}\n")
    return serve(path)


def resolve(name: str, root: Path = STATIC) -> Path | None:
    """The file ``name`` names under ``root``; None for one that is missing, a folder, has an
    unknown suffix, or lies outside ``root`` (``..``, an absolute path, a link pointing out)."""
    if "\\" in name or "\x00" in name:
        return None
    try:
        path = (root / name).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            return None
    except OSError:  # a name too long for the file system, say: no such file either
        return None
    return path if path.suffix in CONTENT_TYPES else None


def serve(path: Path) -> web.FileResponse:
    headers = {
        "Content-Type": CONTENT_TYPES[path.suffix],
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    if path.suffix == ".html":
        headers["Content-Security-Policy"] = CSP
    return web.FileResponse(path, headers=headers)
