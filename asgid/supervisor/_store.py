"""The master's numbers for /metrics, fed by worker heartbeats and exits.

Workers report cumulative request counts with every heartbeat, and at once
when a scrape asks (``Refresh``); ``MetricsStore`` keeps the latest report of
each live worker and folds the last report of each exited worker into running
totals, so counters never go backwards when a worker is recycled or crashes.
Plain data: no I/O here, and no clock (callers pass ``now``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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

    def report(self, pid: int, data: dict[str, Any]) -> None:
        """Fresh counts a scrape asked for: a heartbeat's numbers, without a lag."""
        self.live[pid] = {**self.live.get(pid, {}), **data}

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


@dataclass(slots=True)
class _Wait:
    seq: int
    deadline: float
    pids: set[int]
    then: Callable[[], None] = field(repr=False)


class Refresh:
    """Scrapes that wait for fresh counts from the workers they asked.

    ``start`` returns the sequence number to send to each worker; a scrape
    goes on (``then`` is called) once every worker it asked has answered
    that number or a later one, has exited, or at its deadline.
    """

    def __init__(self) -> None:
        self.seq = 0
        self.waits: list[_Wait] = []

    def start(self, pids: Iterable[int], deadline: float, then: Callable[[], None]) -> int:
        self.seq += 1
        wait = _Wait(self.seq, deadline, set(pids), then)
        if wait.pids:
            self.waits.append(wait)
        else:
            then()
        return self.seq

    def answered(self, pid: int, seq: int) -> None:
        for wait in self.waits:
            if seq >= wait.seq:
                wait.pids.discard(pid)
        self._finish(lambda wait: not wait.pids)

    def gone(self, pid: int) -> None:
        for wait in self.waits:
            wait.pids.discard(pid)
        self._finish(lambda wait: not wait.pids)

    def expire(self, now: float) -> None:
        self._finish(lambda wait: not wait.pids or now >= wait.deadline)

    def next_deadline(self) -> float | None:
        return min((wait.deadline for wait in self.waits), default=None)

    def _finish(self, done: Callable[[_Wait], bool]) -> None:
        finished = [wait for wait in self.waits if done(wait)]
        if finished:
            self.waits = [wait for wait in self.waits if not done(wait)]
            for wait in finished:
                wait.then()
