"""Request counters kept in plain Python, reported to the master once a tick.

Recording a request costs a dict update and a bisect: prometheus_client's
multiprocess values would cost several microseconds per request, so the
worker keeps cumulative numbers here and sends them with every heartbeat; the
master turns them into Prometheus metrics and keeps the totals of workers
that have exited. The histogram is the one both sides use (``_wire``).
"""

from __future__ import annotations

from typing import Any

from .._wire import DURATION_BUCKETS, Histogram


class RequestStats:
    __slots__ = ("bytes_sent", "duration", "requests")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.duration = Histogram(DURATION_BUCKETS)
        self.bytes_sent = 0

    def record(self, method: str, status: int, duration: float, body_bytes: int) -> None:
        key = (method, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.duration.observe(duration)
        self.bytes_sent += body_bytes

    def snapshot(self) -> dict[str, Any]:
        """Cumulative numbers since the worker started (JSON-ready)."""
        return {
            "requests": [[m, s, n] for (m, s), n in self.requests.items()],
            "duration_buckets": list(self.duration.counts),
            "duration_sum": self.duration.total,
            "bytes": self.bytes_sent,
        }
