"""Request counters kept in plain Python, reported to the master once a tick.

Recording a request costs a dict update and a bisect: prometheus_client's
multiprocess values would cost several microseconds per request, so the
worker keeps cumulative numbers here and sends them with every heartbeat; the
master turns them into Prometheus metrics and keeps the totals of workers
that have exited.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

# Upper bounds (seconds) of asgid_request_duration_seconds; +Inf is implicit.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestStats:
    __slots__ = ("bytes_sent", "duration_buckets", "duration_sum", "requests")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.duration_buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.bytes_sent = 0

    def record(self, method: str, status: int, duration: float, body_bytes: int) -> None:
        key = (method, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.duration_buckets[bisect_left(DURATION_BUCKETS, duration)] += 1
        self.duration_sum += duration
        self.bytes_sent += body_bytes

    def snapshot(self) -> dict[str, Any]:
        """Cumulative numbers since the worker started (JSON-ready)."""
        return {
            "requests": [[m, s, n] for (m, s), n in self.requests.items()],
            "duration_buckets": list(self.duration_buckets),
            "duration_sum": self.duration_sum,
            "bytes": self.bytes_sent,
        }
