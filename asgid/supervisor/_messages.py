"""The framing of messages a worker sends its master over their socketpair.

A frame is a 4-byte big-endian length followed by a UTF-8 JSON object with a
``"t"`` (type) field. ``encode`` builds frames; ``Decoder`` takes whatever
bytes arrived (whole frames, halves, several at once) and returns the complete
messages. No sockets here: the master and the worker do their own reads and
writes.

Worker to master: ``ready``; ``heartbeat`` (requests, in_progress,
connections, lag, metrics); ``due`` (reason: the worker asks to be replaced,
e.g. ``max_requests``); ``boot_failed`` (code, message: the app could not
start). Master to worker: ``drain`` (restart: finish in-flight work and exit;
WebSockets close with 1012 when ``restart``, else 1001).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

_HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 20

READY = "ready"
HEARTBEAT = "heartbeat"
DUE = "due"
BOOT_FAILED = "boot_failed"
DRAIN = "drain"
TYPES = frozenset({READY, HEARTBEAT, DUE, BOOT_FAILED, DRAIN})


class FrameError(Exception):
    """The peer sent bytes that are not a valid frame."""


@dataclass(frozen=True, slots=True)
class Message:
    type: str
    data: dict[str, Any] = field(default_factory=dict)


def encode(type: str, **data: Any) -> bytes:
    if type not in TYPES:
        raise ValueError(f"unknown message type {type!r}")
    payload = json.dumps({"t": type, **data}, separators=(",", ":")).encode("utf-8")
    if len(payload) > MAX_FRAME:
        raise ValueError("message too large")
    return _HEADER.pack(len(payload)) + payload


class Decoder:
    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages = []
        buffer = self._buffer
        while len(buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer)
            if size > MAX_FRAME:
                raise FrameError(f"frame of {size} bytes exceeds the limit")
            end = _HEADER.size + size
            if len(buffer) < end:
                break
            payload = bytes(buffer[_HEADER.size : end])
            del buffer[:end]
            messages.append(_parse(payload))
        return messages


def _parse(payload: bytes) -> Message:
    try:
        obj = json.loads(payload)
    except ValueError as exc:
        raise FrameError(f"invalid JSON in frame: {exc}") from None
    if not isinstance(obj, dict) or obj.get("t") not in TYPES:
        raise FrameError(f"invalid message {payload[:80]!r}")
    kind = obj.pop("t")
    return Message(kind, obj)
