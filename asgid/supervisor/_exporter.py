"""The /metrics body: asgid's own families and the application's, in one scrape.

``Exporter`` renders what ``MetricsStore`` and the supervisor know, samples
the master's and each worker's process (the standard ``process_*`` families:
the master's unlabelled, each slot's newest worker with ``slot``), the TLS
certificates' expiry, and adds the application's multiprocess metrics
(``_archive.AppCollector``). A fresh registry per scrape, as
prometheus_client's multiprocess mode requires.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ._archive import AppCollector
from ._store import MetricsStore

if TYPE_CHECKING:
    from ._core import Supervisor


class Exporter:
    """Builds the /metrics body from the store, the supervisor and the app's files."""

    def __init__(
        self,
        store: MetricsStore,
        supervisor: Callable[[], Supervisor],
        directory: str,
        *,
        tls_expiry: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self.store = store
        self.supervisor = supervisor
        self.directory = directory
        self.tls_expiry = tls_expiry  # listener -> its certificate's notAfter (Unix time)

    def render(self, accept: str) -> tuple[bytes, str]:
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        registry.register(AppCollector(self.directory))
        encoder, content_type = choose_encoder(accept)
        return encoder(registry), content_type

    def _sample_workers(self) -> list[tuple[int, float, ProcessSample]]:
        """(slot, start on the monotonic clock, sample) of each live worker."""
        found = []
        for worker in self.supervisor().live():
            sample = sample_process(worker.pid)
            if sample is not None:
                self.store.cpu[worker.pid] = sample.cpu
                found.append((worker.slot, worker.started, sample))
        return found


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """What the standard ``process_*`` metrics say about one process."""

    cpu: float  # user + system seconds
    rss: int
    vms: int
    start_time: float  # Unix time
    open_fds: int
    max_fds: int


def sample_process(pid: int) -> ProcessSample | None:
    """One process's numbers, or None once it is gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            memory = proc.memory_info()
            times = proc.cpu_times()
            return ProcessSample(
                cpu=times.user + times.system,
                rss=memory.rss,
                vms=memory.vms,
                start_time=proc.create_time(),
                open_fds=proc.num_fds(),
                max_fds=proc.rlimit(psutil.RLIMIT_NOFILE)[0],
            )
    except (psutil.Error, OSError):
        return None


def _by_slot(samples: list[tuple[int, float, ProcessSample]]) -> dict[int, tuple[int, float]]:
    result: dict[int, tuple[int, float]] = {}
    for slot, _, sample in samples:
        rss_total, cpu_total = result.get(slot, (0, 0.0))
        result[slot] = (rss_total + sample.rss, cpu_total + sample.cpu)
    return result


_PROCESS_FAMILIES = (
    ("process_cpu_seconds", "counter", "Total user and system CPU time spent in seconds.", "cpu"),
    ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", "rss"),
    ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", "vms"),
    (
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        "start_time",
    ),
    ("process_open_fds", "gauge", "Number of open file descriptors.", "open_fds"),
    ("process_max_fds", "gauge", "Maximum number of open file descriptors.", "max_fds"),
)


def _process_families(
    master: ProcessSample | None, workers: list[tuple[int, float, ProcessSample]]
) -> Iterator[Any]:
    """The master's samples unlabelled (as any exporter's own), then each slot's
    newest worker labelled ``slot`` (one per slot, even while a replacement boots)."""
    from prometheus_client.core import Metric
    from prometheus_client.samples import Sample

    newest: dict[int, tuple[float, ProcessSample]] = {}
    for slot, started, sample in workers:
        if slot not in newest or started > newest[slot][0]:
            newest[slot] = (started, sample)
    for name, kind, documentation, attribute in _PROCESS_FAMILIES:
        family = Metric(name, documentation, kind)
        sample_name = name + "_total" if kind == "counter" else name
        if master is not None:
            family.samples.append(Sample(sample_name, {}, float(getattr(master, attribute))))
        for slot in sorted(newest):
            value = float(getattr(newest[slot][1], attribute))
            family.samples.append(Sample(sample_name, {"slot": str(slot)}, value))
        yield family


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
        http2 = sum(int(d.get("http2", 0)) for d in live)
        total_connections = sum(int(d.get("connections", 0)) for d in live)
        connections.add_metric(["http"], total_connections - websockets - http2)
        connections.add_metric(["http2"], http2)
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
        reloads = CounterMetricFamily(
            "asgid_reloads", "Rolling reloads (SIGHUP, asgid ctl reload).", labels=["result"]
        )
        for result, count in store.reloads.items():
            reloads.add_metric([result], count)
        yield reloads
        processes = self.exporter._sample_workers()
        samples = _by_slot(processes)
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
        expiry = self.exporter.tls_expiry() if self.exporter.tls_expiry is not None else {}
        certificates = GaugeMetricFamily(
            "asgid_tls_certificate_expiry_timestamp_seconds",
            "When the certificate each TLS listener serves expires (notAfter, Unix time).",
            labels=["listener"],
        )
        for listener, not_after in sorted(expiry.items()):
            certificates.add_metric([listener], not_after)
        yield certificates
        yield from _process_families(sample_process(os.getpid()), processes)
        build = GaugeMetricFamily(
            "asgid_build_info", "asgid version and Python.", labels=["version", "python"]
        )
        build.add_metric([__version__, platform.python_version()], 1)
        yield build
