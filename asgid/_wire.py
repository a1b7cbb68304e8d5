"""What the master and its workers say to each other over their socketpair.

Both sides import this module and nothing else of each other: the message
kinds, the framing, and the histogram a heartbeat's request numbers use.

A frame is a 4-byte big-endian length followed by a UTF-8 JSON object with a
``"t"`` (type) field. ``encode`` builds frames; ``Decoder`` takes whatever
bytes arrived (whole frames, halves, several at once) and returns the complete
messages. No sockets here: the master and the worker do their own reads and
writes.

Worker to master: ``ready``; ``heartbeat`` (requests, in_progress,
connections, lag, metrics); ``due`` (reason: the worker asks to be replaced,
e.g. ``max_requests``); ``boot_failed`` (code, message: the app could not
start); ``stats`` (seq, and a heartbeat's numbers without lag: the answer to
``scrape``). Master to worker: ``drain`` (restart: finish in-flight work and
exit; WebSockets close with 1012 when ``restart``, else 1001); ``scrape``
(seq: send your counts now, a /metrics scrape waits for them).
"""

from __future__ import annotations

import enum
import json
import struct
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

_HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 20


class Kind(str, enum.Enum):
    READY = "ready"
    HEARTBEAT = "heartbeat"
    DUE = "due"
    BOOT_FAILED = "boot_failed"
    STATS = "stats"
    DRAIN = "drain"
    SCRAPE = "scrape"


_KINDS = {kind.value: kind for kind in Kind}


class WorkerExit(enum.IntEnum):
    """A worker process's exit status, as the master reads it (``boot_failed``'s ``code``)."""

    OK = 0
    CRASHED = 1  # an unexpected error
    BOOT_FAILED = 3  # TLS files, user switch, logging or lifespan startup
    APP_LOAD_FAILED = 4  # the application could not be imported or built


class FrameError(Exception):
    """The peer sent bytes that are not a valid frame."""


@dataclass(frozen=True, slots=True)
class Message:
    kind: Kind
    data: dict[str, Any] = field(default_factory=dict)


def encode(kind: Kind, **data: Any) -> bytes:
    payload = json.dumps({"t": kind.value, **data}, separators=(",", ":")).encode("utf-8")
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
    kind = _KINDS.get(obj.pop("t", None)) if isinstance(obj, dict) else None
    if kind is None:
        raise FrameError(f"invalid message {payload[:80]!r}")
    return Message(kind, obj)


# Upper bounds (seconds) of the histograms heartbeats carry; +Inf is implicit.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts per bucket and a sum: a worker observes, the master adds reports up."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def add(self, counts: list[int], total: float) -> None:
        for index, count in enumerate(counts[: len(self.counts)]):
            self.counts[index] += count
        self.total += total

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus' buckets: (upper bound, count at or below it)."""
        result = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            result.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return result
