"""Real clients: py-rattler (pixi's library) loading, solving and installing from a channel folder through
each repodata route (sharded, repodata.json.zst, repodata.json) served on 127.0.0.1 one route at a time."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from rattler import (
    Channel,
    ChannelConfig,
    Gateway,
    RepoData,
    SourceConfig,
    SparseRepoData,
    Subdir,
    install,
    solve,
)
from rattler.repo_data import PackageFormatSelection

from reindexer.contract import REPODATA_JSON, REPODATA_ZST, SHARD_INDEX, SHARDS_FOLDER

INDEX_FILES = frozenset({SHARD_INDEX, REPODATA_ZST, REPODATA_JSON})


@dataclass(frozen=True)
class Route:
    config: SourceConfig
    # The one index file this route may read; the other two answer 404 under its prefix.
    served: str

    @property
    def hidden(self) -> frozenset[str]:
        return INDEX_FILES - {self.served}


ROUTES = {
    "sharded": Route(SourceConfig(sharded_enabled=True, zstd_enabled=False, bz2_enabled=False), SHARD_INDEX),
    "zst": Route(SourceConfig(sharded_enabled=False, zstd_enabled=True, bz2_enabled=False), REPODATA_ZST),
    "plain-json": Route(
        SourceConfig(sharded_enabled=False, zstd_enabled=False, bz2_enabled=False), REPODATA_JSON
    ),
}


class _Server(ThreadingHTTPServer):
    # rattler opens many connections at once; a short listen backlog drops SYNs, which cost 1 s retries.
    request_queue_size = 128
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gives up on a channel (a failed load) drops its other connections: not our error.
        del request, client_address


class ChannelServer:
    """Serves the folders under `root` at http://127.0.0.1:PORT/<route>/<path>, per route hiding the
    index files of the other routes, and records every request as (route, path, status).

    rattler prefers sharded repodata, then repodata.json.zst, then repodata.json, and quietly falls back
    when one is missing, so a load alone would not show which file was read: under each route's prefix the
    index files of the other routes answer 404, and what remains is the only way to the records.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._answer(self, body=True)

            def do_HEAD(self) -> None:
                server._answer(self, body=False)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="channel-server", daemon=True)

    def __enter__(self) -> ChannelServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, route: str, channel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{route}/{channel}"

    def requested(self, route: str, channel: str) -> list[tuple[str, int]]:
        """(path inside the channel, status) of every request made through `route` to `channel`."""
        prefix = f"{channel}/"
        with self._lock:
            return [
                (path.removeprefix(prefix), status)
                for requested_route, path, status in self.requests
                if requested_route == route and path.startswith(prefix)
            ]

    def _answer(self, handler: BaseHTTPRequestHandler, *, body: bool) -> None:
        route, _, path = unquote(urlsplit(handler.path).path).lstrip("/").partition("/")
        status, data = self._lookup(route, path)
        with self._lock:
            self.requests.append((route, path, status))
        handler.send_response(status)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Cache-Control", "no-store")
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def _lookup(self, route_name: str, path: str) -> tuple[int, bytes]:
        route = ROUTES.get(route_name)
        parts = path.split("/")
        if route is None or ".." in parts or not path:
            return HTTPStatus.NOT_FOUND, b""
        if parts[-1] in route.hidden or (route.served != SHARD_INDEX and SHARDS_FOLDER in parts):
            return HTTPStatus.NOT_FOUND, b""
        file = self.root / path
        if not file.is_file():
            return HTTPStatus.NOT_FOUND, b""
        return HTTPStatus.OK, file.read_bytes()


@dataclass
class ClientView:
    """What rattler saw of a channel through one route: every record of every name it lists."""

    names: set[str] = field(default_factory=set)
    # subdir -> file name -> record
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None

    def files(self, subdir: str) -> set[str]:
        return set(self.records.get(subdir, {}))


async def _view(url: str, platforms: list[Subdir], config: SourceConfig, cache_dir: Path) -> ClientView:
    gateway = Gateway(cache_dir=cache_dir, default_config=config)
    names = await gateway.names([url], platforms, channel_relations="disabled")
    view = ClientView(names={name.normalized for name in names})
    # Recursive, as a solve does: dependencies of every record are looked up as well.
    specs = sorted(view.names)
    result = await gateway.query([url], platforms, specs, recursive=True, channel_relations="disabled")
    for per_source in result:
        for record in per_source:
            view.records.setdefault(str(record.subdir), {})[record.file_name] = record
    return view


async def _views(
    server: ChannelServer, channel: str, platforms: list[str], cache_root: Path
) -> dict[str, ClientView]:
    async def one(route_name: str) -> ClientView:
        cache_dir = cache_root / f"rattler-cache-{route_name}"
        shutil.rmtree(cache_dir, ignore_errors=True)
        try:
            url = server.url(route_name, channel)
            subdirs = [Subdir(platform) for platform in platforms]
            return await _view(url, subdirs, ROUTES[route_name].config, cache_dir)
        except Exception as error:  # rattler raises its own exception types
            return ClientView(error=f"{type(error).__name__}: {error}")

    views = await asyncio.gather(*(one(route_name) for route_name in ROUTES))
    return dict(zip(ROUTES, views, strict=True))


def load_all_routes(
    server: ChannelServer, channel: str, platforms: Iterable[str], cache_root: Path
) -> dict[str, ClientView]:
    """The channel as rattler's Gateway sees it through each route, each with a fresh cache."""
    return asyncio.run(_views(server, channel, list(platforms), cache_root))


def parse_repodata_json(path: Path, subdir: str) -> set[str]:
    """Parse a written repodata.json with rattler's RepoData and SparseRepoData; the file names they read
    (both must agree). Raises whatever rattler raises on a file it cannot read."""
    channel = Channel("hostile-test", ChannelConfig())
    full = {record.file_name for record in RepoData.from_path(path).into_repo_data(channel)}
    sparse = SparseRepoData(channel, subdir, path)
    try:
        records = sparse.load_all_records(PackageFormatSelection.BOTH)
        by_name = {
            record.file_name
            for name in sparse.package_names(PackageFormatSelection.BOTH)
            for record in sparse.load_records(name, PackageFormatSelection.BOTH)
        }
    finally:
        sparse.close()
    lazily = {record.file_name for record in records}
    if not full == lazily == by_name:
        raise AssertionError(f"RepoData: {sorted(full)}, SparseRepoData: {sorted(lazily)}, {sorted(by_name)}")
    return full


async def _solve_and_install(
    url: str, specs: list[str], platforms: list[str], config: SourceConfig, scratch: Path
) -> list[Any]:
    gateway = Gateway(cache_dir=scratch / "repodata-cache", default_config=config)
    subdirs = [Subdir(platform) for platform in platforms]
    records = await solve([url], specs, gateway=gateway, platforms=subdirs)
    await install(
        records, target_prefix=scratch / "env", cache_dir=scratch / "pkgs-cache", show_progress=False
    )
    return list(records)


def solve_and_install_url(
    url: str, specs: list[str], platforms: list[str], config: SourceConfig, scratch: Path
) -> list[Any]:
    """Solve `specs` against the channel at `url` (read as `config` allows) and install the result into
    scratch/env, with fresh caches under scratch; the solved records."""
    return asyncio.run(_solve_and_install(url, specs, platforms, config, scratch))


def solve_and_install(
    server: ChannelServer, route: str, channel: str, specs: list[str], platforms: list[str], scratch: Path
) -> list[Any]:
    """Solve `specs` against the channel through `route` and install the result into scratch/env."""
    return solve_and_install_url(server.url(route, channel), specs, platforms, ROUTES[route].config, scratch)
