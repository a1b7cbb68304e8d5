"""The access log: one line per request, in a format the user chooses.

The format is a ``str.format`` template over the fields below; with
``[logging].format = "json"`` the same fields also become keys of the JSON
line. Fields: client, method, path, query, http_version, status, bytes,
duration (seconds), duration_ms, user_agent, referer, request_id.

A WebSocket gets two lines, as in uvicorn: ``"WebSocket /path" [accepted]``
when the app accepts it (or its HTTP status when the app refuses it), and
``"WebSocket /path" [closed 1000]`` with its duration when it ends; their
JSON lines carry ``websocket`` (``accepted``, ``refused`` or ``closed``),
``status`` or ``code``.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("asgid.access")


def format_client(client: tuple[str, int] | None) -> str:
    """``host:port``, or ``unix`` for a Unix-socket peer."""
    if client is None:
        return "unix"
    return f"{client[0]}:{client[1]}"


class AccessLog:
    __slots__ = ("_request_id", "_template")

    def websocket(
        self,
        scope: dict[str, Any],
        event: str,
        *,
        status: int = 0,
        code: int = 0,
        duration: float = 0.0,
    ) -> None:
        """One line for a WebSocket: ``accepted``, ``refused`` (``status``) or ``closed``."""
        if not logger.isEnabledFor(logging.INFO):
            return
        query = scope["query_string"]
        target = scope["raw_path"].decode("latin-1") + (
            "?" + query.decode("latin-1") if query else ""
        )
        outcome = {"accepted": "[accepted]", "refused": str(status)}.get(event, f"[closed {code}]")
        client = format_client(scope["client"])
        extra = {
            "client": client,
            "path": target,
            "websocket": event,
            "status": status,
            "code": code,
            "duration": duration,
            "duration_ms": duration * 1000,
        }
        if event == "closed":
            logger.info(
                '%s - "WebSocket %s" %s %.1fms',
                client,
                target,
                outcome,
                duration * 1000,
                extra=extra,
            )
        else:
            logger.info('%s - "WebSocket %s" %s', client, target, outcome, extra=extra)

    def __init__(self, template: str, request_id_header: str) -> None:
        self._template = template
        self._request_id = request_id_header.lower().encode("latin-1")

    def log(self, scope: dict[str, Any], status: int, body_bytes: int, duration: float) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        user_agent = referer = request_id = ""
        wanted = self._request_id
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"referer":
                referer = value.decode("latin-1")
            elif name == wanted:
                request_id = value.decode("latin-1")
        client = scope["client"]
        query = scope["query_string"]
        fields = {
            "client": format_client(client),
            "method": scope["method"],
            # As sent (percent-encoded): a decoded path could hold CR/LF and forge lines.
            "path": scope["raw_path"].decode("latin-1"),
            "query": "?" + query.decode("latin-1") if query else "",
            "http_version": scope["http_version"],
            "status": status,
            "bytes": body_bytes,
            "duration": duration,
            "duration_ms": duration * 1000,
            "user_agent": user_agent,
            "referer": referer,
            "request_id": request_id,
        }
        logger.info(self._template.format_map(fields), extra=fields)
