"""The master's /metrics, /healthz and /readyz, black-box.

Every server runs ``python -m asgid`` (the ``start_server`` fixture) with
``--metrics-bind`` on a free 127.0.0.1 port and serves
``tests/apps/metrics_app.py``, which counts requests with its own
prometheus_client Counter and Histogram. ``PROMETHEUS_MULTIPROC_DIR`` is set to
a directory under ``tmp_path`` so the tests can count its files. Every scrape
is parsed with prometheus_client's own parser; counts arrive with the workers'
heartbeats (about once a second), so every check polls with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from harness import Process
from helpers import ROOT, Server, StartServer, free_port, wait_until
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

APP = "metrics_app:app"
QUIET = ("--no-access-log", "--timeout-graceful-shutdown", "5")
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- helpers ---------------------------------------------------------------------------


class Metrics:
    """A server started with a metrics endpoint, and ways to read it."""

    def __init__(self, server: Server, address: str, directory: Path) -> None:
        self.server = server
        self.address = address
        self.directory = directory
        if address.startswith("unix:"):
            self.base = "http://asgid"
            self.client = httpx.Client(transport=httpx.HTTPTransport(uds=address[5:]), timeout=5.0)
        else:
            self.base = f"http://{address}"
            self.client = httpx.Client(timeout=5.0)

    def get(self, path: str, **headers: str) -> httpx.Response:
        return self.client.get(self.base + path, headers=headers)

    def scrape(self) -> Samples:
        """One /metrics scrape, parsed by prometheus_client's text parser."""
        response = self.get("/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples: Samples = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                assert key not in samples, f"duplicate sample {key}"
                samples[key] = sample.value
        return samples

    def value(self, name: str, samples: Samples | None = None, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``."""
        samples = self.scrape() if samples is None else samples
        wanted = set(labels.items())
        return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)

    def wait_for(self, name: str, expected: float, timeout: float = 10.0, **labels: str) -> Samples:
        """Poll until ``name{labels}`` equals ``expected``; fail with the last value."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            samples = self.scrape()
            last = self.value(name, samples, **labels)
            if last == expected:
                return samples
            time.sleep(0.05)
        raise AssertionError(f"{name}{labels} is {last}, expected {expected} within {timeout}s")

    def wait_ready(self, workers: int, timeout: float = 15.0) -> None:
        self.wait_for("asgid_workers", workers, timeout, state="ready")
        self.wait_for("asgid_workers", 0, timeout, state="starting")
        self.wait_for("asgid_workers", 0, timeout, state="draining")

    def wait_heartbeats(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` more heartbeats have reached the master."""
        start = self.value("asgid_event_loop_lag_seconds_count")
        wait_until(
            lambda: self.value("asgid_event_loop_lag_seconds_count") >= start + count, timeout
        )

    def files(self) -> list[str]:
        return sorted(p.name for p in self.directory.iterdir())


@pytest.fixture
def start_metrics(start_server: StartServer, tmp_path: Path) -> Iterator[Callable[..., Metrics]]:
    opened: list[Metrics] = []

    def start(
        *args: str,
        workers: int = 2,
        app: str = APP,
        bind: str | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> Metrics:
        directory = tmp_path / "multiproc"
        directory.mkdir(exist_ok=True)
        address = bind or f"127.0.0.1:{free_port()}"
        server = start_server(
            app,
            "--workers",
            str(workers),
            "--metrics-bind",
            address,
            *QUIET,
            *args,
            wait=wait,
            env={"PROMETHEUS_MULTIPROC_DIR": str(directory), **(env or {})},
        )
        metrics = Metrics(server, address, directory)
        opened.append(metrics)
        if wait:
            metrics.wait_ready(workers)
        return metrics

    yield start
    for metrics in opened:
        metrics.client.close()
        # SIGTERM to the master alone (start_server's cleanup signals the whole group,
        # and workers that stop on their own are respawned during the shutdown).
        if metrics.server.proc.poll() is None:
            metrics.server.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                metrics.server.wait(15)


def worker_pids(server: Server) -> set[int]:
    try:
        children = psutil.Process(server.pid).children()
    except psutil.NoSuchProcess:
        return set()
    return {c.pid for c in children if c.status() != psutil.STATUS_ZOMBIE}


def request_pids(server: Server, count: int) -> list[int]:
    """``count`` requests to /pid, each on a new connection; the pids that answered."""
    pids = []
    with httpx.Client(timeout=10.0, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for _ in range(count):
            response = client.get(server.url + "/pid")
            assert response.status_code == 200, response.text
            pids.append(int(response.text))
    return pids


def spread_requests(server: Server, workers: int, *, at_least: int, most: int = 400) -> list[int]:
    """Send requests to /pid until ``workers`` distinct workers answered; their pids."""
    pids = request_pids(server, at_least)
    while len(set(pids)) < workers and len(pids) < most:
        pids += request_pids(server, 10)
    assert len(set(pids)) == workers, f"only {set(pids)} answered {len(pids)} requests"
    return pids


def block_worker(server: Server) -> socket.socket:
    """Send ``/block`` to a worker and leave the connection open (the worker hangs)."""
    sock = socket.create_connection((server.host, server.port), timeout=5)
    sock.sendall(b"GET /block?60 HTTP/1.1\r\nhost: test\r\n\r\n")
    return sock


# -- request counts --------------------------------------------------------------------


def test_requests_total_counts_every_request_over_two_workers(
    start_metrics: Callable[..., Metrics],
) -> None:
    metrics = start_metrics()
    assert metrics.value("asgid_requests_total") == 0
    pids = spread_requests(metrics.server, 2, at_least=40)
    sent = len(pids)
    samples = metrics.wait_for("asgid_requests_total", sent, method="GET", code="200")
    assert metrics.value("asgid_requests_total", samples) == sent
    assert metrics.value("asgid_request_duration_seconds_count", samples) == sent
    assert metrics.value("asgid_request_duration_seconds_bucket", samples, le="+Inf") == sent
    assert metrics.value("asgid_response_bytes_total", samples) == sum(len(str(p)) for p in pids)

    # Later heartbeats repeat cumulative counts: nothing is counted twice.
    metrics.wait_heartbeats(4)
    assert metrics.value("asgid_requests_total") == sent

    # Status codes get their own series.
    for _ in range(3):
        assert httpx.get(metrics.server.url + "/status?404", timeout=5).status_code == 404
    metrics.wait_for("asgid_requests_total", 3, code="404")
    assert metrics.value("asgid_requests_total") == sent + 3


def test_app_counter_is_summed_over_workers(start_metrics: Callable[..., Metrics]) -> None:
    metrics = start_metrics()
    sent = len(spread_requests(metrics.server, 2, at_least=40))
    # The app's own metrics are written to per-process files at once: no heartbeat needed.
    samples = metrics.scrape()
    assert metrics.value("metrics_app_hits_total", samples, path="other") == sent
    assert metrics.value("metrics_app_latency_seconds_count", samples) == sent
    pids = worker_pids(metrics.server)
    assert {f"counter_{pid}.db" for pid in pids} <= set(metrics.files())


def test_counts_survive_max_requests_recycling(start_metrics: Callable[..., Metrics]) -> None:
    metrics = start_metrics("--limit-max-requests", "20")
    first = worker_pids(metrics.server)
    pids = request_pids(metrics.server, 200)
    # A due worker serves on until its replacement is ready, so more than 20 each.
    assert len(set(pids)) > 2, f"no worker was recycled: {set(pids)}"

    metrics.wait_for("asgid_requests_total", 200, timeout=15)
    metrics.wait_for("metrics_app_hits_total", 200, timeout=15)
    metrics.wait_for("metrics_app_latency_seconds_count", 200, timeout=15)
    restarts = metrics.value("asgid_worker_restarts_total", reason="max_requests")
    assert restarts >= len(set(pids)) - 2, restarts
    # Scrapes are exact at once, so the replacements may still be under way.
    wait_until(lambda: not worker_pids(metrics.server) & first, 15)

    # Once the replaced workers are gone, only live workers' files and one archive
    # file per type remain.
    metrics.wait_ready(2)

    def only_live_files() -> bool:
        live = worker_pids(metrics.server)
        allowed = {f"{kind}_{pid}.db" for kind in ("counter", "histogram") for pid in live}
        allowed |= {"counter_archive.db", "histogram_archive.db"}
        return len(live) == 2 and set(metrics.files()) <= allowed

    try:
        wait_until(only_live_files, 10)
    except TimeoutError:
        raise AssertionError(
            f"files {metrics.files()} for workers {worker_pids(metrics.server)}"
        ) from None
    assert len(metrics.files()) <= 2 * 2 + 2
    # The totals are unchanged by the merge.
    samples = metrics.scrape()
    assert metrics.value("metrics_app_hits_total", samples) == 200
    assert metrics.value("asgid_requests_total", samples) == 200


# -- restarts and reloads --------------------------------------------------------------


def test_restart_reasons_crash_and_hang(start_metrics: Callable[..., Metrics]) -> None:
    metrics = start_metrics("--timeout", "2")
    metrics.wait_ready(2)  # a worker lost before the first READY fails the start (exit 3)
    victim = min(worker_pids(metrics.server))
    os.kill(victim, signal.SIGKILL)
    metrics.wait_for("asgid_worker_restarts_total", 1, reason="crash")
    metrics.wait_ready(2)
    assert victim not in worker_pids(metrics.server)

    before = worker_pids(metrics.server)
    with contextlib.closing(block_worker(metrics.server)):
        metrics.wait_for("asgid_worker_restarts_total", 1, timeout=15, reason="hang")
    metrics.wait_ready(2)
    samples = metrics.scrape()
    assert metrics.value("asgid_worker_restarts_total", samples, reason="crash") == 1
    assert metrics.value("asgid_worker_restarts_total", samples) == 2
    assert len(worker_pids(metrics.server) & before) == 1
    # A blocked loop shows up in the lag histogram before the worker is killed.
    assert metrics.value("asgid_event_loop_lag_seconds_bucket", samples, le="+Inf") > 0


def test_reloads_count_successes_and_failures(
    start_metrics: Callable[..., Metrics], tmp_path: Path
) -> None:
    config = tmp_path / "server.toml"
    config.write_text("[workers]\ncount = 2\n")
    metrics = start_metrics("-c", str(config))
    first = worker_pids(metrics.server)

    metrics.server.signal(signal.SIGHUP)
    metrics.wait_for("asgid_reloads_total", 1, timeout=15, result="success")
    metrics.wait_for("asgid_worker_restarts_total", 2, reason="reload")
    metrics.wait_ready(2)
    assert not worker_pids(metrics.server) & first

    config.write_text("[workers]\ncount = = 3\n")
    metrics.server.signal(signal.SIGHUP)
    samples = metrics.wait_for("asgid_reloads_total", 1, result="failed")
    assert metrics.value("asgid_reloads_total", samples, result="success") == 1
    assert metrics.value("asgid_worker_restarts_total", samples, reason="reload") == 2
    assert httpx.get(metrics.server.url + "/pid", timeout=5).status_code == 200


# -- health endpoints ------------------------------------------------------------------


def test_readyz_follows_the_workers(start_metrics: Callable[..., Metrics]) -> None:
    metrics = start_metrics(wait=False, env={"METRICS_APP_STARTUP_DELAY": "2"})
    metrics.server.wait_listening()
    wait_until(lambda: _answers(metrics, "/healthz"), 10)
    # Lifespan startup takes 2 s: the master is healthy, the workers are starting.
    response = metrics.get("/readyz")
    assert response.status_code == 503, response.text
    assert metrics.get("/healthz").status_code == 200
    samples = metrics.scrape()
    assert metrics.value("asgid_workers", samples, state="ready") == 0
    assert metrics.value("asgid_workers", samples, state="starting") == 2

    wait_until(lambda: metrics.get("/readyz").status_code == 200, 15)
    assert metrics.value("asgid_workers", state="ready") >= 1  # ready_min_workers = 1
    metrics.wait_ready(2)

    # No worker ready (both killed, their replacements take 2 s to start): 503 again.
    for pid in worker_pids(metrics.server):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: metrics.get("/readyz").status_code == 503, 5)
    assert metrics.get("/healthz").status_code == 200
    wait_until(lambda: metrics.get("/readyz").status_code == 200, 15)

    head = metrics.client.head(metrics.base + "/readyz")
    assert head.status_code == 200
    assert head.content == b""
    missing = metrics.get("/nope")
    assert missing.status_code == 404
    assert "/metrics" in missing.text
    assert metrics.client.post(metrics.base + "/metrics").status_code == 405


def _answers(metrics: Metrics, path: str) -> bool:
    try:
        return metrics.get(path).status_code == 200
    except httpx.TransportError:
        return False


def test_openmetrics_when_the_scraper_asks(start_metrics: Callable[..., Metrics]) -> None:
    metrics = start_metrics()
    sent = len(spread_requests(metrics.server, 2, at_least=10))
    metrics.wait_for("asgid_requests_total", sent)
    response = metrics.get("/metrics", accept=OPENMETRICS)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(response.text)}
    assert families["asgid_requests"].type == "counter"
    assert sum(s.value for s in families["asgid_requests"].samples) == sent
    assert families["metrics_app_hits"].type == "counter"

    plain = metrics.get("/metrics", accept="text/plain")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# EOF" not in plain.text


# Every metric asgid itself exposes, with its type (docs/metrics.md lists the same).
ASGID_FAMILIES = {
    "asgid_requests": "counter",
    "asgid_request_duration_seconds": "histogram",
    "asgid_response_bytes": "counter",
    "asgid_requests_in_progress": "gauge",
    "asgid_connections": "gauge",
    "asgid_workers": "gauge",
    "asgid_worker_restarts": "counter",
    "asgid_reloads": "counter",
    "asgid_worker_memory_rss_bytes": "gauge",
    "asgid_worker_cpu_seconds": "counter",
    "asgid_event_loop_lag_seconds": "histogram",
    "asgid_master_start_time_seconds": "gauge",
    "asgid_build_info": "gauge",
    "asgid_tls_certificate_expiry_timestamp_seconds": "gauge",
}


def test_text_format_parses_and_passes_promtool(start_metrics: Callable[..., Metrics]) -> None:
    metrics = start_metrics()
    sent = len(spread_requests(metrics.server, 2, at_least=10))
    metrics.wait_for("asgid_requests_total", sent)
    text = metrics.get("/metrics").text
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    asgid = {name: kind for name, kind in families.items() if name.startswith("asgid_")}
    assert asgid == ASGID_FAMILIES

    docs = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(asgid_\w+)` \|", docs, re.MULTILINE))
    exposed = {
        name + ("_total" if kind == "counter" else "") for name, kind in ASGID_FAMILIES.items()
    }
    assert documented == exposed, "docs/metrics.md must list every metric asgid exposes"

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian/Ubuntu: apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == "", result.stdout + result.stderr


def test_a_real_prometheus_scrapes_asgid(
    start_metrics: Callable[..., Metrics], tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (Debian/Ubuntu: apt-get install prometheus)")
    metrics = start_metrics()
    sent = len(spread_requests(metrics.server, 2, at_least=10))
    metrics.wait_for("asgid_requests_total", sent)

    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "asgid", "static_configs": [{"targets": [metrics.address]}]}
                ],
            }
        )
    )
    log = tmp_path / "prometheus.log"
    proc = Process(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        log=log,
        cwd=tmp_path,
    )
    try:
        api = f"http://127.0.0.1:{port}/api/v1"

        def query() -> list[dict[str, object]]:
            try:
                response = httpx.get(
                    f"{api}/query",
                    params={"query": "sum(asgid_requests_total)"},
                    timeout=5,
                )
            except httpx.TransportError:
                assert proc.returncode is None, log.read_text()
                return []
            if response.status_code != 200:
                return []
            result: list[dict[str, object]] = response.json()["data"]["result"]
            return result

        try:
            wait_until(lambda: query() and float(query()[0]["value"][1]) == sent, 30, 0.2)  # type: ignore[index]
        except TimeoutError:
            raise AssertionError(
                f"prometheus never saw {sent}: {query()}\n{log.read_text()}"
            ) from None
        targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"], targets
        series = httpx.get(
            f"{api}/query", params={"query": "asgid_requests_total"}, timeout=5
        ).json()["data"]["result"]
        assert {s["metric"]["code"] for s in series} == {"200"}
        assert {s["metric"]["job"] for s in series} == {"asgid"}
    finally:
        proc.stop()


# -- a slow scraper, a unix socket -----------------------------------------------------


def test_a_slow_scraper_does_not_stall_the_master(start_metrics: Callable[..., Metrics]) -> None:
    from asgid.supervisor._endpoint import MAX_CLIENTS

    metrics = start_metrics()
    host, _, port = metrics.address.rpartition(":")
    master = psutil.Process(metrics.server.pid)
    fds_before = master.num_fds()
    stuck = []
    try:
        for index in range(MAX_CLIENTS + 20):
            sock = socket.create_connection((host, int(port)), timeout=5)
            if index % 2:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nhost: x\r\n")  # half a request head
            stuck.append(sock)
        # With scrapers saying nothing, the master answers and supervises.
        started = time.monotonic()
        assert metrics.get("/healthz").status_code == 200
        assert metrics.get("/readyz").status_code == 200
        metrics.scrape()
        assert time.monotonic() - started < 2
        # It holds at most MAX_CLIENTS of them: the oldest were closed, so idle
        # connections cannot take the file descriptors it needs to spawn workers.
        assert master.num_fds() <= fds_before + MAX_CLIENTS + 2
        for sock in stuck[:10]:
            sock.settimeout(5)
            assert sock.recv(100) == b"", "the oldest idle connection should be closed"
        sent = len(spread_requests(metrics.server, 2, at_least=10))
        metrics.wait_for("asgid_requests_total", sent)
        victim = min(worker_pids(metrics.server))
        os.kill(victim, signal.SIGKILL)
        metrics.wait_for("asgid_worker_restarts_total", 1, reason="crash")
        metrics.wait_ready(2)
        assert victim not in worker_pids(metrics.server)
        spread_requests(metrics.server, 2, at_least=10)
        # The newest ones, finishing their request heads, are answered.
        for index, sock in enumerate(stuck[-4:]):
            sock.sendall(
                b"\r\n" if (len(stuck) - 4 + index) % 2 else b"GET /healthz HTTP/1.1\r\n\r\n"
            )
            assert sock.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")
        assert metrics.get("/healthz").status_code == 200
    finally:
        for sock in stuck:
            sock.close()


def test_metrics_on_a_unix_socket(start_metrics: Callable[..., Metrics], tmp_path: Path) -> None:
    path = tmp_path / "metrics.sock"
    metrics = start_metrics(bind=f"unix:{path}", workers=1)
    assert path.is_socket()
    sent = len(spread_requests(metrics.server, 1, at_least=5))
    metrics.wait_for("asgid_requests_total", sent)
    assert metrics.get("/healthz").status_code == 200
    assert metrics.get("/readyz").status_code == 200
    metrics.server.signal(signal.SIGTERM)
    assert metrics.server.wait(15) == 0
    assert not path.exists()


def test_no_request_metrics_keeps_the_rest(start_metrics: Callable[..., Metrics]) -> None:
    metrics = start_metrics("--no-request-metrics", workers=1)
    sent = len(spread_requests(metrics.server, 1, at_least=5))
    metrics.wait_heartbeats(2)
    samples = metrics.scrape()
    assert not [key for key in samples if key[0] == "asgid_requests_total"]
    assert metrics.value("asgid_request_duration_seconds_count", samples) == 0
    assert metrics.value("asgid_response_bytes_total", samples) == 0
    assert metrics.value("asgid_workers", samples, state="ready") == 1
    assert metrics.value("metrics_app_hits_total", samples) == sent  # the app's own still count


# -- merging dead workers' files (no processes) ----------------------------------------


def _write(directory: Path, kind: str, pid: int, values: dict[str, tuple[float, float]]) -> None:
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    db = MmapedDict(str(directory / f"{kind}_{pid}.db"))
    try:
        for name, (value, timestamp) in values.items():
            db.write_value(mmap_key(name, name, [], [], "help"), value, timestamp)
    finally:
        db.close()


def _collect(directory: Path) -> dict[str, float]:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, str(directory))
    return {
        sample.name: sample.value
        for family in registry.collect()
        for sample in family.samples
        if "pid" not in sample.labels
    }


def test_merging_dead_files_keeps_every_total(tmp_path: Path) -> None:
    from asgid.supervisor._archive import merge_dead_files

    for pid, (count, low, high, recent) in {
        101: (3.0, -5.0, -7.0, (1.0, 2000.0)),
        102: (4.0, 2.0, -9.0, (2.0, 1000.0)),
        103: (5.0, 8.0, -8.0, (3.0, 3000.0)),
    }.items():
        _write(tmp_path, "counter", pid, {"c_total": (count, 0.0)})
        _write(tmp_path, "gauge_min", pid, {"low": (low, 0.0)})
        _write(tmp_path, "gauge_max", pid, {"high": (high, 0.0)})
        _write(tmp_path, "gauge_mostrecent", pid, {"recent": recent})
        _write(tmp_path, "gauge_all", pid, {"each": (1.0, 0.0)})
        _write(tmp_path, "gauge_livesum", pid, {"alive": (1.0, 0.0)})
    before = _collect(tmp_path)
    assert before["c_total"] == 12.0
    merge_dead_files(str(tmp_path), 101)
    merge_dead_files(str(tmp_path), 102)
    after = _collect(tmp_path)
    assert after["c_total"] == 12.0
    assert after["low"] == -5.0  # the minimum over all three, dead or alive
    assert after["high"] == -7.0  # a negative maximum is not lost to a default 0
    assert after["recent"] == 3.0
    assert after["alive"] == 1.0  # only the live worker's
    merge_dead_files(str(tmp_path), 103)
    final = _collect(tmp_path)
    assert (final["c_total"], final["low"], final["high"], final["recent"]) == (
        12.0,
        -5.0,
        -7.0,
        3.0,
    )
    assert "alive" not in final
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "counter_archive.db",
        "gauge_max_archive.db",
        "gauge_min_archive.db",
        "gauge_mostrecent_archive.db",
    ]


def test_a_file_being_created_does_not_fail_the_scrape(tmp_path: Path) -> None:
    from asgid.supervisor._archive import merge_dead_files
    from asgid.supervisor._core import Supervisor, Timeouts
    from asgid.supervisor._exporter import Exporter
    from asgid.supervisor._store import MetricsStore

    _write(tmp_path, "counter", 101, {"c_total": (2.0, 0.0)})
    (tmp_path / "counter_102.db").touch()  # opened by a worker, not yet sized
    exporter = Exporter(MetricsStore(), lambda: Supervisor(1, Timeouts()), str(tmp_path))
    body, content_type = exporter.render("")
    assert content_type.startswith("text/plain")
    samples = {
        s.name: s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
        if not s.labels
    }
    assert samples["c_total"] == 2.0
    assert samples["asgid_requests_in_progress"] == 0.0
    merge_dead_files(str(tmp_path), 102)  # the worker died before sizing it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_101.db"]
