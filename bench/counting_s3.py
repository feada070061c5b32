"""moto's S3 server on loopback, in this process, behind a WSGI middleware that counts requests by kind.

The server is assembled as moto's ThreadedMotoServer assembles it (DomainDispatcherApplication around
create_backend_app, MotoRequestHandler) so it behaves the same; the counting layer only observes.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from reindexer.contract import PACKAGE_SUFFIXES
from reindexer_cli.embedded_s3 import LOOPBACK, free_port

if TYPE_CHECKING:
    from _typeshed import OptExcInfo

LIST = "LIST"
GET_PACKAGE = "GET pkg"
GET_OTHER = "GET other"
HEAD_PACKAGE = "HEAD pkg"
HEAD_OTHER = "HEAD other"
PUT = "PUT"
DELETE = "DELETE"
POST = "POST"
OTHER = "other"
ERRORS = "errors"  # responses with a 4xx or 5xx status, whatever their kind
KINDS = (LIST, GET_PACKAGE, GET_OTHER, HEAD_PACKAGE, HEAD_OTHER, PUT, DELETE, POST, OTHER)


# Bucket sub-resources a GET on the bucket reads instead of listing its objects.
_BUCKET_CONFIG_QUERIES = frozenset(
    {
        "accelerate",
        "acl",
        "analytics",
        "cors",
        "encryption",
        "intelligent-tiering",
        "inventory",
        "lifecycle",
        "location",
        "logging",
        "metrics",
        "notification",
        "object-lock",
        "ownershipControls",
        "policy",
        "policyStatus",
        "publicAccessBlock",
        "replication",
        "requestPayment",
        "tagging",
        "versioning",
        "website",
    }
)


def classify(method: str, path: str, query: str) -> str:
    """The kind of one path-style S3 request: LIST, GET/HEAD of a package or another object, PUT, ..."""
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket or bucket == "moto-api":
        return OTHER
    method = method.upper()
    if not key:
        if method != "GET":
            return {"PUT": PUT, "DELETE": DELETE, "POST": POST, "HEAD": HEAD_OTHER}.get(method, OTHER)
        fields = parse_qs(query, keep_blank_values=True).keys()
        if "list-type" in fields or "prefix" in fields or not fields & _BUCKET_CONFIG_QUERIES:
            return LIST
        return OTHER
    package = key.endswith(PACKAGE_SUFFIXES)
    if method == "GET":
        return GET_PACKAGE if package else GET_OTHER
    if method == "HEAD":
        return HEAD_PACKAGE if package else HEAD_OTHER
    return {"PUT": PUT, "DELETE": DELETE, "POST": POST}.get(method, OTHER)


class RequestCounter:
    """Thread-safe counts of requests by kind, plus error responses; reset between benchmark phases."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] += 1

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def snapshot(self) -> dict[str, int]:
        """Every kind (zeros included) and the error count."""
        with self._lock:
            return {kind: self._counts[kind] for kind in (*KINDS, ERRORS)}


class CountingMiddleware:
    """A WSGI layer that classifies each request and counts it (and its status when it is an error)."""

    def __init__(self, app: WSGIApplication, counter: RequestCounter) -> None:
        self.app = app
        self.counter = counter

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        kind = classify(
            str(environ.get("REQUEST_METHOD", "")),
            str(environ.get("PATH_INFO", "")),
            str(environ.get("QUERY_STRING", "")),
        )
        self.counter.add(kind)

        def counting_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None, /
        ) -> Callable[[bytes], object]:
            if status[:1] in ("4", "5"):
                self.counter.add(ERRORS)
            return start_response(status, headers, exc_info)

        return self.app(environ, counting_start_response)


class QuietRequestHandler(MotoRequestHandler):
    """moto's request handler without werkzeug's line per request on stderr."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        del code, size


class CountingS3Server:
    """moto's S3 on http://127.0.0.1:PORT, served from a daemon thread, counting requests by kind."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint_url = f"http://{LOOPBACK}:{self.port}"
        self.counter = RequestCounter()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> CountingS3Server:
        app = CountingMiddleware(DomainDispatcherApplication(create_backend_app), self.counter)
        self._server = make_server(
            LOOPBACK, self.port, app, threaded=True, request_handler=QuietRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-s3", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> CountingS3Server:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
