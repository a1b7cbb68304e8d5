"""Metrics for the whole process tree, and the master's /metrics endpoint.

Workers report cumulative request counts with every heartbeat; ``MetricsStore``
keeps the latest report of each live worker and folds the last report of each
exited worker into running totals, so counters never go backwards when a
worker is recycled. Metrics the application defines with prometheus_client
use its multiprocess mode in a directory asgid owns: the files of exited
workers are merged into one archive file per type, so scrapes stay fast and
the directory stays small however many workers have come and gone.

``MetricsServer`` is a small non-blocking HTTP server run by the master's
select loop; a slow or stuck scraper costs one socket, never the loop.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import platform
import selectors
import shutil
import socket
import stat
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .._sockets import bind_socket
from .._version import __version__
from ..config import parse_bind
from ..worker._stats import DURATION_BUCKETS
from ._privileges import writable_by

if TYPE_CHECKING:
    from ._core import Supervisor

logger = logging.getLogger("asgid.error")

LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RESTART_REASONS = ("crash", "hang", "max_requests", "memory", "reload", "scale")
MAX_REQUEST_HEAD = 8192
CLIENT_TIMEOUT = 10.0
# Connections held at once; beyond it the oldest is dropped, so idle scrapers can
# never take the file descriptors the master needs to spawn workers.
MAX_CLIENTS = 32
ACCEPT_PAUSE = 1.0  # seconds the endpoint stops accepting after running out of fds


def setup_multiproc_dir(owner: tuple[int, int] = (-1, -1)) -> tuple[str, bool]:
    """Point prometheus_client at a clean multiprocess directory.

    Must run before anything imports prometheus_client. Returns the directory
    and whether asgid created it (and so removes it at exit). ``owner`` is the
    workers' ``(uid, gid)`` (-1: the master's): a directory asgid creates is
    given to them, since each worker writes its own files there.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    owned = not path
    if owned:
        path = tempfile.mkdtemp(prefix="asgid-metrics-")
    os.makedirs(path, exist_ok=True)
    for name in glob.glob(os.path.join(path, "*.db")):
        os.unlink(name)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    give_to_workers(path, owned, owner)
    return path, owned


def give_to_workers(path: str, owned: bool, owner: tuple[int, int]) -> None:
    """Let workers running as ``owner`` write in the multiprocess directory.

    The directory asgid created is chowned to them; one the user named with
    ``PROMETHEUS_MULTIPROC_DIR`` is left as it is, with a warning if they
    cannot write there. The master never writes through a name in it that a
    worker could have planted (see ``_publish``).
    """
    uid, gid = owner
    if uid < 0 and gid < 0:
        return
    if owned:
        os.chown(path, uid, gid)
    elif not writable_by(os.stat(path), uid, gid):
        logger.warning(
            "workers (uid %d, gid %d) cannot write in PROMETHEUS_MULTIPROC_DIR %s: "
            "the application's prometheus_client metrics will fail",
            uid if uid >= 0 else os.getuid(),
            gid if gid >= 0 else os.getgid(),
            path,
        )


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the bucket rule RequestStats uses
        self.total += value

    def add(self, counts: list[int], total: float) -> None:
        for index, count in enumerate(counts[: len(self.counts)]):
            self.counts[index] += count
        self.total += total

    def cumulative(self) -> list[tuple[str, float]]:
        result = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            result.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return result


class _Totals:
    """Cumulative request numbers: one worker's report, or the sum of many."""

    __slots__ = ("bytes", "duration", "requests")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        self.duration = _Histogram(DURATION_BUCKETS)
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
        self.restarts = dict.fromkeys(RESTART_REASONS, 0)
        self.reloads = {"success": 0, "failed": 0}
        self.lag = _Histogram(LAG_BUCKETS)
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

    def restarted(self, reason: str) -> None:
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


def merge_dead_files(directory: str, pid: int) -> None:
    """Fold a dead worker's prometheus_client files into per-type archive files.

    Counters, histograms and summaries (and gauges in sum/min/max modes) are
    added into ``<type>_archive.db``; per-process gauges of a dead process
    are dropped. prometheus_client's collector reads the archives like any
    other process's file, so totals are unchanged and the file count stays
    bounded by the live workers.
    """
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    multiprocess.mark_process_dead(pid, directory)
    for path in glob.glob(os.path.join(directory, f"*_{pid}.db")):
        name = os.path.basename(path)
        kind = name[: -len(f"_{pid}.db")]
        if kind in ("counter", "histogram", "summary", "gauge_sum"):
            mode = "sum"
        elif kind in ("gauge_max", "gauge_min", "gauge_mostrecent"):
            mode = kind.split("_")[1]
        else:
            os.unlink(path)  # per-process gauges: meaningless once the process is gone
            continue
        if not _has_header(path):  # killed before prometheus_client sized its file
            os.unlink(path)
            continue
        archive = os.path.join(directory, f"{kind}_archive.db")
        # Only gauges in mostrecent mode carry timestamps; a key's presence in the
        # archive, not its timestamp, says whether there is a value to combine with.
        archived: dict[str, tuple[float, float]] = {}
        if _has_header(archive):
            for key, value, timestamp, *_ in MmapedDict.read_all_values_from_file(archive):
                archived[key] = (value, timestamp)
        # (key, value, timestamp, position) in recent releases; older ones had no position.
        for key, value, timestamp, *_ in MmapedDict.read_all_values_from_file(path):
            if key not in archived:
                archived[key] = (value, timestamp)
                continue
            current, current_ts = archived[key]
            if mode == "sum":
                archived[key] = (current + value, timestamp)
            elif mode == "max":
                archived[key] = (max(current, value), timestamp)
            elif mode == "min":
                archived[key] = (min(current, value), timestamp)
            elif timestamp >= current_ts:
                archived[key] = (value, timestamp)
        _publish(archive, archived)
        os.unlink(path)


def _publish(path: str, values: dict[str, tuple[float, float]]) -> None:
    """Replace the archive file ``path`` with one holding ``values``.

    Workers may own the directory (``[process].user``), so the master, often
    root, never opens a name there that a worker could have made a symlink
    or a hard link: the file is written in a private temporary file,
    copied into a new file created with ``O_EXCL | O_NOFOLLOW``, and renamed
    over ``path`` (a rename replaces a link, never follows it). Readers see
    the old archive or the new one, never half of one.
    """
    from prometheus_client.mmap_dict import MmapedDict

    fd, scratch = tempfile.mkstemp(prefix="asgid-archive-", suffix=".db")
    os.close(fd)
    staging = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}")
    try:
        db = MmapedDict(scratch)
        try:
            for key, (value, timestamp) in values.items():
                db.write_value(key, value, timestamp)
        finally:
            db.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)  # left by a master that died here
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(scratch, "rb") as source, open(os.open(staging, flags, 0o644), "wb") as target:
            shutil.copyfileobj(source, target)
        os.replace(staging, path)
    finally:
        os.unlink(scratch)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)


def _has_header(path: str) -> bool:
    """Whether ``path`` is a regular file prometheus_client has sized (it creates it empty).

    Symbolic links are skipped: a worker could point one at a file only root can read.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size >= 8


class _AppCollector:
    """The application's metrics: prometheus_client's multiprocess merge of the files.

    Like ``MultiProcessCollector``, except that a file a worker is creating right
    now (empty until prometheus_client sizes it, and holding no values yet) is
    skipped rather than failing the whole scrape.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Any]:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = [f for f in glob.glob(os.path.join(self.directory, "*.db")) if _has_header(f)]
        yield from MultiProcessCollector.merge(files, accumulate=True)


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
        registry.register(_AppCollector(self.directory))
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
            restarts.add_metric([reason], count)
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


class _Client:
    __slots__ = ("inbox", "outbox", "sock", "started")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbox = b""
        self.outbox = b""
        self.started = now


class MetricsServer:
    """/metrics, /healthz and /readyz on a non-blocking socket in the master's loop."""

    def __init__(
        self,
        address: str,
        selector: selectors.BaseSelector,
        exporter: Exporter,
        ready: Callable[[], tuple[bool, str]],
    ) -> None:
        self.selector = selector
        self.exporter = exporter
        self.ready = ready
        self.sock = bind_socket(parse_bind(address), backlog=128, reuse_port=False)
        self.path = parse_bind(address).path
        self.clients: dict[int, _Client] = {}
        self.paused_until = 0.0  # accepting stopped until then (out of file descriptors)
        selector.register(self.sock, selectors.EVENT_READ, self._accept)

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        if not self.paused_until:
            self.selector.unregister(self.sock)
        self.sock.close()
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def expire(self, now: float) -> None:
        for client in list(self.clients.values()):
            if now - client.started > CLIENT_TIMEOUT:
                self._drop(client)
        if self.paused_until and now >= self.paused_until:
            self.paused_until = 0.0
            self.selector.register(self.sock, selectors.EVENT_READ, self._accept)

    def _accept(self, mask: int) -> None:
        for _ in range(16):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of file descriptors (EMFILE/ENFILE): give one back, and stop
                # watching the listening socket for a while (it stays readable, so
                # the loop would spin) so the master can use the fd to spawn.
                logger.warning(
                    "metrics endpoint: accept failed (%s); pausing for %gs", exc, ACCEPT_PAUSE
                )
                if self.clients:
                    self._drop(min(self.clients.values(), key=lambda c: c.started))
                self.selector.unregister(self.sock)
                self.paused_until = time.monotonic() + ACCEPT_PAUSE
                return
            if len(self.clients) >= MAX_CLIENTS:
                self._drop(min(self.clients.values(), key=lambda c: c.started))
            sock.setblocking(False)
            client = _Client(sock, time.monotonic())
            self.clients[sock.fileno()] = client
            self.selector.register(sock, selectors.EVENT_READ, lambda m, c=client: self._io(c, m))

    def _io(self, client: _Client, mask: int) -> None:
        if mask & selectors.EVENT_READ and not client.outbox:
            try:
                data = client.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._drop(client)
                return
            client.inbox += data
            if b"\r\n\r\n" not in client.inbox:
                if len(client.inbox) > MAX_REQUEST_HEAD:
                    self._respond(client, 431, b"request head too large\n", "text/plain")
                return
            self._handle(client)
        if mask & selectors.EVENT_WRITE or client.outbox:
            self._flush(client)

    def _handle(self, client: _Client) -> None:
        head = client.inbox.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            self._respond(client, 400, b"bad request\n", "text/plain")
            return
        method, target, _ = parts
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            self._respond(client, 405, b"method not allowed\n", "text/plain", head_only=False)
        elif path == "/metrics":
            try:
                body, content_type = self.exporter.render(headers.get("accept", ""))
            except Exception:
                logger.exception("metrics endpoint: rendering failed")
                self._respond(client, 500, b"rendering metrics failed\n", "text/plain")
                return
            self._respond(client, 200, body, content_type, head_only=method == "HEAD")
        elif path == "/healthz":
            self._respond(client, 200, b"ok\n", "text/plain", head_only=method == "HEAD")
        elif path == "/readyz":
            ok, reason = self.ready()
            body = (reason + "\n").encode()
            self._respond(
                client, 200 if ok else 503, body, "text/plain", head_only=method == "HEAD"
            )
        else:
            self._respond(
                client, 404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain"
            )

    def _respond(
        self, client: _Client, status: int, body: bytes, content_type: str, head_only: bool = False
    ) -> None:
        phrase = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            405: "Method Not Allowed",
            431: "Request Header Fields Too Large",
            500: "Internal Server Error",
            503: "Service Unavailable",
        }[status]
        head = (
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode("latin-1")
        client.outbox = head + (b"" if head_only else body)
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(client)
            return
        client.outbox = client.outbox[sent:]
        if not client.outbox:
            self._drop(client)
        else:
            self.selector.modify(
                client.sock, selectors.EVENT_WRITE, lambda m, c=client: self._io(c, m)
            )

    def _drop(self, client: _Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()


def remove_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
