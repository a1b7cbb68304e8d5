"""The /metrics body: asgid's own families and the application's, in one scrape.

``Exporter`` renders what ``MetricsStore`` and the supervisor know, samples
each worker's memory and CPU, and adds the application's multiprocess
metrics (``_archive.AppCollector``). A fresh registry per scrape, as
prometheus_client's multiprocess mode requires.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ._archive import AppCollector
from ._store import MetricsStore

if TYPE_CHECKING:
    from ._core import Supervisor


class Exporter:
    """Builds the /metrics body from the store, the supervisor and the app's files."""

    def __init__(
        self, store: MetricsStore, supervisor: Callable[[], Supervisor], directory: str
    ) -> None:
        self.store = store
        self.supervisor = supervisor
        self.directory = directory

    def render(self, accept: str) -> tuple[bytes, str]:
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        registry.register(AppCollector(self.directory))
        encoder, content_type = choose_encoder(accept)
        return encoder(registry), content_type

    def sample_processes(self) -> dict[int, tuple[int, float]]:
        """RSS and CPU seconds of each live worker, by slot."""
        import psutil

        result: dict[int, tuple[int, float]] = {}
        for worker in self.supervisor().live():
            try:
                proc = psutil.Process(worker.pid)
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    cpu = sum(proc.cpu_times()[:2])
            except psutil.Error:
                continue
            self.store.cpu[worker.pid] = cpu
            rss_total, cpu_total = result.get(worker.slot, (0, 0.0))
            result[worker.slot] = (rss_total + rss, cpu_total + cpu)
        return result


class _Collector:
    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        store = self.exporter.store
        supervisor = self.exporter.supervisor()
        totals = store.totals()
        requests = CounterMetricFamily(
            "asgid_requests", "HTTP requests answered.", labels=["method", "code"]
        )
        for (method, code), count in sorted(totals.requests.items()):
            requests.add_metric([method, code], count)
        yield requests
        duration = HistogramMetricFamily(
            "asgid_request_duration_seconds", "Time from request head to response end."
        )
        duration.add_metric([], totals.duration.cumulative(), totals.duration.total)
        yield duration
        yield CounterMetricFamily(
            "asgid_response_bytes", "Response body bytes sent.", value=totals.bytes
        )
        live = [store.live.get(w.pid, {}) for w in supervisor.live()]
        yield GaugeMetricFamily(
            "asgid_requests_in_progress",
            "Requests being handled now.",
            value=sum(int(d.get("in_progress", 0)) for d in live),
        )
        connections = GaugeMetricFamily(
            "asgid_connections", "Open client connections.", labels=["protocol"]
        )
        websockets = sum(int(d.get("websockets", 0)) for d in live)
        total_connections = sum(int(d.get("connections", 0)) for d in live)
        connections.add_metric(["http"], total_connections - websockets)
        connections.add_metric(["websocket"], websockets)
        yield connections
        workers = GaugeMetricFamily("asgid_workers", "Worker processes by state.", labels=["state"])
        for state, count in supervisor.counts().items():
            workers.add_metric([state], count)
        yield workers
        restarts = CounterMetricFamily(
            "asgid_worker_restarts", "Workers replaced, by reason.", labels=["reason"]
        )
        for reason, count in store.restarts.items():
            restarts.add_metric([reason.value], count)
        yield restarts
        reloads = CounterMetricFamily("asgid_reloads", "SIGHUP reloads.", labels=["result"])
        for result, count in store.reloads.items():
            reloads.add_metric([result], count)
        yield reloads
        samples = self.exporter.sample_processes()
        rss = GaugeMetricFamily(
            "asgid_worker_memory_rss_bytes", "Resident memory of each worker.", labels=["slot"]
        )
        cpu = CounterMetricFamily(
            "asgid_worker_cpu_seconds", "CPU time used by each worker slot.", labels=["slot"]
        )
        for slot in sorted(set(samples) | set(store.slot_cpu_dead)):
            slot_rss, slot_cpu = samples.get(slot, (0, 0.0))
            if slot in samples:
                rss.add_metric([str(slot)], slot_rss)
            cpu.add_metric([str(slot)], slot_cpu + store.slot_cpu_dead.get(slot, 0.0))
        yield rss
        yield cpu
        lag = HistogramMetricFamily(
            "asgid_event_loop_lag_seconds", "Event-loop lag measured by worker heartbeats."
        )
        lag.add_metric([], store.lag.cumulative(), store.lag.total)
        yield lag
        yield GaugeMetricFamily(
            "asgid_master_start_time_seconds",
            "When the master started (Unix time).",
            value=store.started,
        )
        build = GaugeMetricFamily(
            "asgid_build_info", "asgid version and Python.", labels=["version", "python"]
        )
        build.add_metric([__version__, platform.python_version()], 1)
        yield build
