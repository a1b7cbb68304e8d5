"""What every connection of one worker shares: settings, the app, counters.

Built once per worker from the ``Config``; the protocol reads plain attributes
on the hot path instead of walking the settings dataclasses per request.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from ..config import Config
from ._access import AccessLog
from ._h1 import PERCENT, STATUS_LINES, ResponseDefaults, split_target
from ._proxy import TrustedProxies, apply_proxy_headers
from ._stats import RequestStats

if TYPE_CHECKING:
    from ._cycle import AppCall
    from ._h2 import H2Protocol
    from ._protocol import HttpProtocol
    from ._types import ASGIApp
    from ._websocket import WebSocketSession


class ServerState:
    def __init__(self, config: Config, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        http = config.http
        self.app = app
        self.loop = loop
        self.asgi_info = {"version": "3.0", "spec_version": "2.4"}
        self.root_path = config.app.root_path
        self.root_path_bytes = self.root_path.encode("utf-8")
        self.lifespan_state: dict[str, Any] = {}
        self.defaults = ResponseDefaults(
            server_header=http.server_header,
            date_header=http.date_header,
            headers=http.headers,
        )
        self.proxies = TrustedProxies(http.forwarded_allow_ips) if http.proxy_headers else None
        logging_ = config.logging
        self.access_log = (
            AccessLog(logging_.access_format, logging_.request_id_header)
            if logging_.access_log
            else None
        )
        metrics = config.metrics
        self.stats = RequestStats() if metrics.bind and metrics.request_metrics else None
        self.timed = self.access_log is not None or self.stats is not None
        self.limit_concurrency = http.limit_concurrency
        self.timeout_keep_alive = http.timeout_keep_alive
        self.timeout_request_header = http.timeout_request_header
        self.timeout_request_body = http.timeout_request_body
        self.timeout_write = http.timeout_write
        self.max_body_size = http.max_body_size
        self.max_header_size = http.max_header_size
        self.max_request_line = http.max_request_line
        self.max_headers = http.max_headers
        self.http2 = http.http2
        self.http2_cleartext = http.http2_cleartext
        self.http2_max_streams = http.http2_max_concurrent_streams
        self.http2_max_control_frames = http.http2_max_control_frames
        self.http2_max_resets = http.http2_max_resets
        self.http2_connections = 0
        self.graceful_timeout = config.workers.graceful_timeout
        self.websocket = config.websocket
        self.connections: set[HttpProtocol | H2Protocol] = set()
        self.websockets: set[WebSocketSession] = set()
        self.cycles: set[AppCall] = set()
        self.pending_heads: dict[AppCall, None] = {}  # see head_pending()
        self.now = loop.time()
        # Tasks named up front: 3.11 formats a "Task-N" name for each one otherwise.
        self.new_task: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]
        self.eager_task: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]
        if loop.get_task_factory() is None:
            self.new_task = functools.partial(asyncio.Task, loop=loop, name="asgid-request")
            # From 3.12 a task can take its first step at once, in the caller:
            # a request answered without waiting never queues on the loop.
            self.eager_task = (
                functools.partial(self.new_task, eager_start=True)
                if sys.version_info >= (3, 12)
                else self.new_task
            )
        else:  # the application's own factory decides
            self.new_task = self.eager_task = loop.create_task
        self.draining = False
        self.requests = 0  # requests finished by this worker

    @property
    def in_progress(self) -> int:
        """Application calls running now."""
        return len(self.cycles)

    # -- what HTTP/1.1 and HTTP/2 requests share ---------------------------------

    def request_target(self, method: bytes, target: bytes) -> tuple[str, bytes, bytes]:
        """``(path, raw_path, query_string)`` of the scope for a request-target.

        Raises ``BadRequest`` for a malformed one (``_h1.split_target``). The
        path is decoded and, like uvicorn's (and the ASGI spec's reading of
        root_path), includes the mount point: frameworks strip it.
        """
        if target[:1] == b"/":  # origin-form, nearly every request: no call for it
            raw_path, _, query = target.partition(b"?")
        else:
            raw_path, query = split_target(method, target)
        if PERCENT in raw_path:
            path = unquote_to_bytes(raw_path).decode("utf-8", "replace")
        else:
            path = raw_path.decode("utf-8", "replace")
        if self.root_path:
            return self.root_path + path, self.root_path_bytes + raw_path, query
        return path, raw_path, query

    def http_scope(
        self,
        version: str,
        method: bytes,
        path: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        scheme: str,
        extensions: dict[str, Any],
    ) -> dict[str, Any]:
        """The scope of an ``http`` request, trusted proxy headers applied."""
        if self.proxies is not None:
            client, scheme = apply_proxy_headers(self.proxies, headers, client, scheme)
        return {
            "type": "http",
            "asgi": self.asgi_info,
            "http_version": version,
            "method": method.decode("ascii"),
            "scheme": scheme,
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": self.root_path,
            "headers": headers,
            "client": client,
            "server": server,
            "state": self.lifespan_state.copy(),
            "extensions": extensions,
        }

    def head_pending(self, call: AppCall) -> None:
        """``call`` started its response; the head waits for the body to leave with it.

        The first body message takes it out of ``pending_heads``. Should the
        app await something else first, the head is written at the loop's
        next iteration. One callback per iteration serves every connection:
        under load, the responses started in one iteration share it instead
        of scheduling one each.
        """
        if not self.pending_heads:
            self.loop.call_soon(self._flush_heads)
        self.pending_heads[call] = None

    def _flush_heads(self) -> None:
        calls, self.pending_heads = self.pending_heads, {}
        for call in calls:
            call.flush_head()

    def record(self, scope: dict[str, Any], status: int, body_bytes: int, start: float) -> None:
        """A response is over: count it, and log it (``start``: perf_counter at its start)."""
        duration = time.perf_counter() - start
        if self.stats is not None:
            self.stats.record(scope["method"], status, duration, body_bytes)
        if self.access_log:
            self.access_log.log(scope, status, body_bytes, duration)

    def error_response(self, status: int, reason: str, *, head: bool = False) -> bytes:
        """A complete plain-text response that closes the connection.

        ``head``: the request was HEAD, so the body is left out (its length stays).
        """
        body = f"{STATUS_LINES[status][13:-2].decode()}: {reason}\n".encode("utf-8", "replace")
        return b"".join(
            (
                STATUS_LINES[status],
                self.defaults.suffix,
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body),
                b"" if head else body,
            )
        )
