"""The master's numbers for /metrics, fed by worker heartbeats and exits.

Workers report cumulative request counts with every heartbeat;
``MetricsStore`` keeps the latest report of each live worker and folds the
last report of each exited worker into running totals, so counters never go
backwards when a worker is recycled or crashes. Plain data: no I/O here.
"""

from __future__ import annotations

import time
from typing import Any

from .._wire import DURATION_BUCKETS, LAG_BUCKETS, Histogram
from ._core import Reason


class _Totals:
    """Cumulative request numbers: one worker's report, or the sum of many."""

    __slots__ = ("bytes", "duration", "requests")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        self.duration = Histogram(DURATION_BUCKETS)
        self.bytes = 0

    def merge_report(self, report: dict[str, Any]) -> None:
        for method, status, count in report.get("requests", ()):
            key = (str(method), str(status))
            self.requests[key] = self.requests.get(key, 0) + int(count)
        self.duration.add(
            list(report.get("duration_buckets", ())), float(report.get("duration_sum", 0.0))
        )
        self.bytes += int(report.get("bytes", 0))

    def merge(self, other: _Totals) -> None:
        for key, count in other.requests.items():
            self.requests[key] = self.requests.get(key, 0) + count
        self.duration.add(other.duration.counts, other.duration.total)
        self.bytes += other.bytes


class MetricsStore:
    """Everything the master knows that ends up in /metrics."""

    def __init__(self) -> None:
        self.started = time.time()
        self.live: dict[int, dict[str, Any]] = {}  # pid -> latest heartbeat
        self.dead = _Totals()
        self.restarts = dict.fromkeys(Reason, 0)
        self.reloads = {"success": 0, "failed": 0}
        self.lag = Histogram(LAG_BUCKETS)
        self.cpu: dict[int, float] = {}  # pid -> last sampled CPU seconds
        self.slot_cpu_dead: dict[int, float] = {}

    def heartbeat(self, pid: int, data: dict[str, Any]) -> None:
        self.live[pid] = data
        self.lag.observe(float(data.get("lag", 0.0)))

    def exited(self, pid: int, slot: int) -> None:
        last = self.live.pop(pid, None)
        if last is not None and isinstance(last.get("metrics"), dict):
            self.dead.merge_report(last["metrics"])
        self.slot_cpu_dead[slot] = self.slot_cpu_dead.get(slot, 0.0) + self.cpu.pop(pid, 0.0)

    def restarted(self, reason: Reason) -> None:
        self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def reloaded(self, success: bool) -> None:
        self.reloads["success" if success else "failed"] += 1

    def totals(self) -> _Totals:
        totals = _Totals()
        totals.merge(self.dead)
        for data in self.live.values():
            if isinstance(data.get("metrics"), dict):
                totals.merge_report(data["metrics"])
        return totals
