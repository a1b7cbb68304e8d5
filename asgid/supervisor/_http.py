"""The master's HTTP endpoint: /metrics, /healthz and /readyz.

Answered from the master's own loop on an ``Endpoint``, so /healthz says the
master is alive and /readyz what the supervisor thinks, even while every
worker is busy or stuck; a slow or stuck scraper costs one socket, never the
loop. A /metrics scrape first asks for fresh counts (``fresh``) and is
answered once they are in, within a short bound. One request per connection,
answered with ``connection: close``.
"""

from __future__ import annotations

import logging
import selectors
from collections.abc import Callable
from http import HTTPStatus

from .._sockets import bind_socket
from ..config import parse_bind
from ._endpoint import Client, Endpoint
from ._exporter import Exporter

logger = logging.getLogger("asgid.error")

MAX_REQUEST_HEAD = 8192


class MetricsServer:
    def __init__(
        self,
        address: str,
        selector: selectors.BaseSelector,
        exporter: Exporter,
        ready: Callable[[], tuple[bool, str]],
        fresh: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.exporter = exporter
        self.ready = ready
        self.fresh = fresh  # fresh(then): get the workers' counts now, then call then()
        parsed = parse_bind(address)
        self.endpoint = Endpoint(
            "metrics endpoint",
            bind_socket(parsed, backlog=128, reuse_port=False),
            selector,
            self._handle,
            terminator=b"\r\n\r\n",
            max_request=MAX_REQUEST_HEAD,
            too_large=lambda: _response(431, b"request head too large\n", "text/plain"),
            path=parsed.path,
        )

    def close(self) -> None:
        self.endpoint.close()

    def close_in_child(self) -> None:
        self.endpoint.close_in_child()

    def expire(self, now: float) -> None:
        self.endpoint.expire(now)

    def _handle(self, request: bytes, client: Client) -> None:
        head = request.decode("latin-1")
        target = head.split("\r\n", 1)[0].split(" ")
        if self.fresh is not None and len(target) == 3 and target[1].startswith("/metrics"):
            self.fresh(lambda: self.endpoint.reply(client, self._answer(head)))
        else:
            self.endpoint.reply(client, self._answer(head))

    def _answer(self, head: str) -> bytes:
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return _response(400, b"bad request\n", "text/plain")
        method, target, _ = parts
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _response(405, b"method not allowed\n", "text/plain")
        if path == "/metrics":
            try:
                body, content_type = self.exporter.render(headers.get("accept", ""))
            except Exception:
                logger.exception("metrics endpoint: rendering failed")
                return _response(500, b"rendering metrics failed\n", "text/plain")
            return _response(200, body, content_type, head_only=head_only)
        if path == "/healthz":
            return _response(200, b"ok\n", "text/plain", head_only=head_only)
        if path == "/readyz":
            ok, reason = self.ready()
            body = (reason + "\n").encode()
            return _response(200 if ok else 503, body, "text/plain", head_only=head_only)
        return _response(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")


def _response(status: int, body: bytes, content_type: str, *, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + body
