"""A stand-in for the Hugging Face Hub (which cannot be reached from here): an aiohttp server that
speaks the parts of the Hub's API huggingface_hub uses for a pull, serving real files from disk.

- ``GET /api/models/{org}/{repo}[/revision/{rev}]``: the repo's commit (``sha``) and its files
  (``siblings``) with sizes, blob IDs and LFS sha256s (``?blobs=true``).
- ``HEAD|GET /{org}/{repo}/resolve/{rev}/{path}``: ``ETag``, ``X-Repo-Commit``, ``Content-Length``,
  ``Accept-Ranges``; GET honours ``Range: bytes=N-`` (206), or answers it as a server that ignores
  ranges (200) or refuses them (416) would (``range_answer``).
- with ``cdn`` set, a GET of an LFS file is redirected (302, as the Hub sends LFS files to its CDN)
  to ``{cdn}/cdn/{sha256}``, which any stand-in serves: a second one on another port is the CDN.

It counts requests (``requests``), keeps the ``Authorization`` headers it saw, the ranges asked for,
can cut one download short once (``cut_after``: the connection is dropped after N bytes), and can
serve other bytes than it lists (``corrupt``: the first byte flipped).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".gguf", ".safetensors")
CHUNK = 1 << 20


@dataclass
class HubFile:
    path: Path
    size: int
    sha256: str
    git_oid: str

    @classmethod
    def of(cls, path: Path) -> HubFile:
        sha, size = hashlib.sha256(), path.stat().st_size
        git = hashlib.sha1(f"blob {size}\0".encode())
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                sha.update(chunk)
                git.update(chunk)
        return cls(path, size, sha.hexdigest(), git.hexdigest())

    @property
    def lfs(self) -> bool:
        return self.path.name.endswith(LFS_SUFFIXES)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class StandInHub:
    repos: dict[str, dict[str, HubFile]]  # "org/repo" -> repo path -> file
    requests: int = 0
    authorizations: list[str] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)
    downloads: dict[str, int] = field(default_factory=dict)  # repo path -> GETs
    cut_after: dict[str, int] = field(default_factory=dict)  # repo path -> bytes, once
    pause_s: float = 0.0  # after each MiB sent: a slow Hub, so that a pull takes a while
    range_answer: int = 206  # to a Range request: 206 (honoured), 200 (ignored) or 416 (refused)
    corrupt: set[str] = field(default_factory=set)  # repo paths served with their first byte flipped
    cdn: str | None = None  # where LFS downloads are redirected to

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.count])
        app.router.add_get(r"/api/models/{org}/{repo}", self.info)
        app.router.add_get(r"/api/models/{org}/{repo}/revision/{rev}", self.info)
        app.router.add_route("HEAD", r"/{org}/{repo}/resolve/{rev}/{path:.+}", self.head)
        app.router.add_get(r"/{org}/{repo}/resolve/{rev}/{path:.+}", self.get, allow_head=False)
        app.router.add_get(r"/cdn/{sha256}", self.from_cdn, allow_head=False)
        return app

    @web.middleware
    async def count(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        self.requests += 1
        if "Authorization" in request.headers:
            self.authorizations.append(request.headers["Authorization"])
        return await handler(request)

    def repo(self, request: web.Request) -> dict[str, HubFile]:
        name = f"{request.match_info['org']}/{request.match_info['repo']}"
        if name not in self.repos:
            raise web.HTTPNotFound(headers={"X-Error-Code": "RepoNotFound"}, text="Repository not found")
        return self.repos[name]

    async def info(self, request: web.Request) -> web.Response:
        files = self.repo(request)
        siblings = []
        for name, f in sorted(files.items()):
            entry: dict[str, object] = {"rfilename": name, "size": f.size, "blobId": f.git_oid}
            if f.lfs:
                entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
            siblings.append(entry)
        repo = f"{request.match_info['org']}/{request.match_info['repo']}"
        return web.json_response({"id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings})

    def file(self, request: web.Request) -> tuple[str, HubFile]:
        files, name = self.repo(request), request.match_info["path"]
        if name not in files:
            raise web.HTTPNotFound(headers={"X-Error-Code": "EntryNotFound"}, text="Entry not found")
        return name, files[name]

    @staticmethod
    def headers(f: HubFile) -> dict[str, str]:
        return {
            "ETag": f'"{f.etag}"',
            "X-Repo-Commit": COMMIT,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }

    async def head(self, request: web.Request) -> web.Response:
        _, f = self.file(request)
        return web.Response(headers={**self.headers(f), "Content-Length": str(f.size)})

    async def get(self, request: web.Request) -> web.StreamResponse:
        name, f = self.file(request)
        if self.cdn is not None and f.lfs:
            raise web.HTTPFound(f"{self.cdn}/cdn/{f.sha256}", headers=self.headers(f))
        return await self.send(request, name, f)

    async def from_cdn(self, request: web.Request) -> web.StreamResponse:
        found = [(n, f) for files in self.repos.values() for n, f in files.items() if f.lfs]
        for name, f in found:
            if f.sha256 == request.match_info["sha256"]:
                return await self.send(request, name, f)
        raise web.HTTPNotFound(text="no such object")

    async def send(self, request: web.Request, name: str, f: HubFile) -> web.StreamResponse:
        self.downloads[name] = self.downloads.get(name, 0) + 1
        start = 0
        if (asked := request.headers.get("Range")) is not None:
            self.ranges.append(f"{name}: {asked}")
            if self.range_answer == 416:
                raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{f.size}"})
            if self.range_answer == 206:
                start = int(asked.removeprefix("bytes=").split("-")[0])
        headers = {**self.headers(f), "Content-Length": str(f.size - start)}
        if start:
            headers["Content-Range"] = f"bytes {start}-{f.size - 1}/{f.size}"
        resp = web.StreamResponse(status=206 if start else 200, headers=headers)
        await resp.prepare(request)
        cut = self.cut_after.pop(name, None)
        sent = 0
        with f.path.open("rb") as data:
            data.seek(start)
            while chunk := data.read(CHUNK):
                if name in self.corrupt and data.tell() == len(chunk):  # the file's first chunk
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                if cut is not None and sent + len(chunk) >= cut:
                    await resp.write(chunk[: cut - sent])
                    await asyncio.sleep(0.05)  # let the bytes leave before the connection drops
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                await resp.write(chunk)
                sent += len(chunk)
                if self.pause_s:
                    await asyncio.sleep(self.pause_s)
        await resp.write_eof()
        return resp


def smollm2_repos(models: Path) -> dict[str, dict[str, HubFile]]:
    """SmolLM2's real files as two repos: a GGUF one (with a README) and a safetensors one."""
    gguf = models / "SmolLM2-135M-Instruct.Q4_1.gguf"
    readme = models / "smollm2-safetensors" / "generation_config.json"
    folder = models / "smollm2-safetensors"
    return {
        "stand-in/SmolLM2-135M-Instruct-GGUF": {
            "SmolLM2-135M-Instruct.Q4_1.gguf": HubFile.of(gguf),
            "README.md": HubFile.of(readme),
        },
        "stand-in/SmolLM2-135M-Instruct": {
            p.name: HubFile.of(p) for p in sorted(folder.iterdir()) if p.is_file()
        },
    }


def beside_repos(models: Path) -> dict[str, dict[str, HubFile]]:
    """The files beside the weights as repos of their own (``make shapes``'s real files): a LoRA
    GGUF repo, one with two LoRA GGUFs, a PEFT adapter repo, and tiny-vlm with its projector."""
    vlm = models / "tiny-vlm"
    return {
        "test/smollm2-lora": {"smollm2-lora-a.gguf": HubFile.of(models / "smollm2-lora-a.gguf")},
        "test/smollm2-loras": {
            name: HubFile.of(models / name) for name in ("smollm2-lora-a.gguf", "smollm2-lora-b.gguf")
        },
        "test/smollm2-lora-peft": {
            p.name: HubFile.of(p) for p in sorted((models / "smollm2-lora-a").iterdir()) if p.is_file()
        },
        "test/tiny-vlm": {p.name: HubFile.of(p) for p in sorted(vlm.iterdir()) if p.suffix == ".gguf"},
    }


async def serve(hub: StandInHub, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Start ``hub`` on ``host``; returns the runner (clean it up) and its URL."""
    runner = web.AppRunner(hub.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = site._server.sockets  # type: ignore[union-attr]
    return runner, f"http://{host}:{sockets[0].getsockname()[1]}"


SPLIT_REPO = "test/smollm2-split-GGUF"


def split_repo(models: Path) -> dict[str, dict[str, HubFile]]:
    """SmolLM2 in three GGUF shards (``make shapes``) under a quant folder, as large split GGUFs
    are laid out on the Hub (``Q4_1/...-00001-of-00003.gguf``), beside a README."""
    shards = sorted((models / "smollm2-split").glob("*-of-*.gguf"))
    files = {f"Q4_1/{p.name}": HubFile.of(p) for p in shards}
    return {SPLIT_REPO: {**files, "README.md": HubFile.of(models / "smollm2-safetensors" / "config.json")}}
