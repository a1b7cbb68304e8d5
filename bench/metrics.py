#!/usr/bin/env python3
"""What metrics cost: scrapes under heavy recycling, and requests/s with and without them.

    python bench/metrics.py                     # both parts
    python bench/metrics.py --part recycle --recycles 1000
    python bench/metrics.py --part overhead --rounds 3 --duration 5

**recycle**: asgid with ``--limit-max-requests 1`` and a few workers serves an
app that updates a prometheus_client Counter and Histogram per request, while
one client sends requests (a new connection each) until the master has
replaced ``--recycles`` workers (``asgid_worker_restarts_total{reason=
"max_requests"}``). Every few requests it scrapes /metrics and counts the
files in the multiprocess directory. Reported: the wall time, the scrape
latency at the start and after the recycles, the most files ever seen and
the count at the end (the target: live workers' files plus one archive per
type), whether asgid's and the app's counters both equal the requests
answered, and, for scale, how long prometheus_client takes to read the same
data left as one file per dead worker (what asgid's merging avoids).

**overhead**: the raw-ASGI plaintext app (``bench/apps.py``), one worker,
``--no-access-log``, server pinned with ``taskset -c 0`` and wrk with
``taskset -c 1``, in three configurations: ``--metrics-bind`` (request
metrics on), ``--metrics-bind --no-request-metrics``, and no metrics
endpoint; interleaved rounds with a rotating order, the median per
configuration, and the overhead against no metrics.

Every server runs in its own process group and is stopped by process group;
every wait has a deadline and every loop a bound. Only 127.0.0.1 is used.
Results go to stdout and to ``bench/results/metrics-<time>.json``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this asgid

import argparse
import contextlib
import datetime as dt
import glob
import http.client
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import Process, free_port, pinned

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

RECYCLE_APP = textwrap.dedent(
    '''
    """Counts each request with a prometheus_client Counter and Histogram."""
    import time

    from prometheus_client import Counter, Histogram

    HITS = Counter("bench_hits", "Requests the app counted.", ["route"])
    LATENCY = Histogram("bench_latency_seconds", "Time in the app.")


    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        started = time.perf_counter()
        HITS.labels(route="hello").inc()
        body = b"Hello, world!"
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        LATENCY.observe(time.perf_counter() - started)
    '''
)


# -- processes ----------------------------------------------------------------------


class Asgid:
    """``python -m asgid`` in its own process group."""

    def __init__(
        self, args: list[str], *, env: dict[str, str], log: Path, cpu: int | None = None
    ) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "asgid", *args, "--host", HOST, "--port", str(self.port)]
        self.log_path = log
        # taskset (when pinned) execs: same pid, same group
        self.process = Process(pinned(cpu, cmd), log=log, cwd=ROOT, env=env)
        self.proc = self.process.proc

    def wait_ready(self, path: str = "/", timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"asgid exited:\n{self.process.output()[-3000:]}")
            with contextlib.suppress(OSError):
                if get(self.port, path)[0] == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"asgid not ready in {timeout}s:\n{self.process.output()[-3000:]}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the master and its workers so far."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        seconds = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                seconds += times.user + times.system
        return seconds

    def stop(self) -> None:
        self.process.stop(STOP_TIMEOUT)


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET on a new connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def scrape(port: int) -> tuple[float, dict[tuple[str, str], float]]:
    """Seconds one /metrics scrape took, and its samples by (name, labels as text)."""
    started = time.perf_counter()
    status, body = get(port, "/metrics")
    elapsed = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}: {body[:300]!r}")
    samples = {}
    for line in body.decode().splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if match:
            samples[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return elapsed, samples


def total(samples: dict[tuple[str, str], float], name: str, labels: str = "") -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and labels in ls)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# -- part 1: recycling ----------------------------------------------------------------


def bench_recycle(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    app_dir = workdir / "app"
    app_dir.mkdir()
    (app_dir / "bench_metrics_app.py").write_text(RECYCLE_APP)
    multiproc = workdir / "multiproc"
    multiproc.mkdir()
    metrics_port = free_port()
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    server = Asgid(
        [
            "bench_metrics_app:app",
            "--app-dir",
            str(app_dir),
            "--workers",
            str(args.workers),
            "--limit-max-requests",
            "1",
            "--metrics-bind",
            f"{HOST}:{metrics_port}",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
        log=workdir / "recycle.log",
    )
    try:
        server.wait_ready()
        # The readiness probe was one request; wait for the master to count it.
        answered, errors = 1, 0
        error_kinds: dict[str, int] = {}
        _wait_count(metrics_port, answered)
        start_scrapes = [scrape(metrics_port)[0] for _ in range(20)]
        start_files = len(os.listdir(multiproc))
        files_seen = [start_files]
        scrape_times: list[float] = []
        restarts = 0.0
        started = time.monotonic()
        deadline = started + args.max_seconds
        for sent in range(1, args.recycles * 20 + 1):
            if time.monotonic() > deadline:
                break
            try:
                status, _ = get(server.port, "/")
                if status == 200:
                    answered += 1
                else:
                    errors += 1
                    error_kinds[f"status {status}"] = error_kinds.get(f"status {status}", 0) + 1
            except (OSError, http.client.HTTPException) as exc:
                errors += 1
                kind = type(exc).__name__
                error_kinds[kind] = error_kinds.get(kind, 0) + 1
            if sent % 10 == 0:
                files_seen.append(len(os.listdir(multiproc)))
                elapsed, samples = scrape(metrics_port)
                scrape_times.append(elapsed)
                restarts = total(samples, "asgid_worker_restarts_total", 'reason="max_requests"')
                if restarts >= args.recycles:
                    break
        wall = time.monotonic() - started
        _wait_count(metrics_port, answered)
        end_scrapes = []
        for _ in range(20):
            elapsed, samples = scrape(metrics_port)
            end_scrapes.append(elapsed)
        restarts = total(samples, "asgid_worker_restarts_total", 'reason="max_requests"')
        end_files = sorted(os.listdir(multiproc))
        unmerged = _unmerged_reference(multiproc, workdir, int(restarts) + args.workers)
        return {
            "workers": args.workers,
            "recycles": int(restarts),
            "requests_answered": answered,
            "request_errors": errors,
            "request_error_kinds": error_kinds,
            "wall_s": round(wall, 1),
            "recycles_per_s": round(restarts / wall, 1),
            "asgid_requests_total": total(samples, "asgid_requests_total"),
            "app_counter_total": total(samples, "bench_hits_total"),
            "app_histogram_count": total(samples, "bench_latency_seconds_count"),
            "counts_match": total(samples, "asgid_requests_total")
            == total(samples, "bench_hits_total")
            == answered,
            "scrape_ms_start": _summary(start_scrapes),
            "scrape_ms_during": _summary(scrape_times),
            "scrape_ms_after": _summary(end_scrapes),
            "files_start": start_files,
            "files_max": max(files_seen),
            "files_end": len(end_files),
            "files_end_names": end_files,
            "files_bound": 2 * (2 * args.workers) + 2,
            "unmerged_reference": unmerged,
        }
    finally:
        server.stop()


def _wait_count(metrics_port: int, expected: int, timeout: float = 15.0) -> None:
    """Poll until asgid_requests_total reaches ``expected`` (heartbeats are 1 s apart)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if total(scrape(metrics_port)[1], "asgid_requests_total") >= expected:
            return
        time.sleep(0.1)


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "p50": ms(statistics.median(ordered)),
        "p90": ms(ordered[int(0.9 * (len(ordered) - 1))]),
        "max": ms(ordered[-1]),
        "n": len(ordered),
    }


def _unmerged_reference(multiproc: Path, workdir: Path, dead: int) -> dict[str, Any]:
    """prometheus_client reading one file per dead worker: what merging saves."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    sources = sorted(glob.glob(str(multiproc / "*_archive.db")))
    if not sources:
        return {}
    reference = workdir / "unmerged"
    reference.mkdir()
    for pid in range(100000, 100000 + dead):
        for source in sources:
            kind = os.path.basename(source)[: -len("_archive.db")]
            shutil.copyfile(source, reference / f"{kind}_{pid}.db")
    times = []
    for _ in range(5):
        started = time.perf_counter()
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, str(reference))
        generate_latest(registry)
        times.append(time.perf_counter() - started)
    return {"files": len(os.listdir(reference)), "render_ms": _summary(times)}


# -- part 2: requests/s ----------------------------------------------------------------


CONFIGS = {
    "request metrics": ["--metrics-bind", "METRICS"],
    "metrics, no request metrics": ["--metrics-bind", "METRICS", "--no-request-metrics"],
    "no metrics": [],
}


def bench_overhead(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    names = list(CONFIGS)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            extra = [a if a != "METRICS" else f"{HOST}:{free_port()}" for a in CONFIGS[name]]
            server = Asgid(
                [
                    *("bench.apps:app", "--workers", "1", "--no-access-log"),
                    *("--log-level", "warning", *extra),
                ],
                env=env,
                log=workdir / f"overhead-{round_}-{names.index(name)}.log",
                cpu=args.server_cpu,
            )
            try:
                server.wait_ready("/plaintext")
                wrk(server.port, args, args.warmup)
                cpu_before = server.cpu_seconds()
                rps, requests = wrk(server.port, args, args.duration)
                cpu_us = (server.cpu_seconds() - cpu_before) / requests * 1e6
            finally:
                server.stop()
            runs[name].append((rps, cpu_us))
            print(
                f"  round {round_ + 1} {name:<28} {rps:>10.0f} req/s {cpu_us:>7.2f} us CPU/request",
                flush=True,
            )
    # Positive costs: fewer requests/s, or more CPU per request, than with no metrics.
    base_rps = statistics.median(r for r, _ in runs["no metrics"])
    base_cpu = statistics.median(c for _, c in runs["no metrics"])
    result: dict[str, Any] = {"record_ns": record_cost()}
    base_runs = runs["no metrics"]
    for name, values in runs.items():
        rps = statistics.median(r for r, _ in values)
        cpu = statistics.median(c for _, c in values)
        # Each round runs every configuration back to back: the median of the
        # per-round ratios cancels slow drift of the machine better.
        paired_rps = statistics.median(
            1 - r / b for (r, _), (b, _) in zip(values, base_runs, strict=True)
        )
        paired_cpu = statistics.median(
            c / b - 1 for (_, c), (_, b) in zip(values, base_runs, strict=True)
        )
        result[name] = {
            "rps_runs": [round(r) for r, _ in values],
            "rps_median": round(rps),
            "rps_overhead_pct": round(100 * (1 - rps / base_rps), 2),
            "rps_overhead_paired_pct": round(100 * paired_rps, 2),
            "cpu_us_per_request_runs": [round(c, 2) for _, c in values],
            "cpu_us_per_request_median": round(cpu, 2),
            "cpu_overhead_pct": round(100 * (cpu / base_cpu - 1), 2),
            "cpu_overhead_paired_pct": round(100 * paired_cpu, 2),
        }
    return result


def record_cost() -> float:
    """Nanoseconds one ``RequestStats.record`` call costs: the per-request price of metrics."""
    import timeit

    from asgid.worker._stats import RequestStats

    stats = RequestStats()
    timer = timeit.Timer(lambda: stats.record("GET", 200, 0.0004, 13))
    number = 200_000
    return round(min(timer.repeat(5, number)) / number * 1e9, 1)


def wrk(port: int, args: argparse.Namespace, duration: int) -> tuple[float, int]:
    """Requests/s and requests answered in one wrk run."""
    cmd = [
        "taskset",
        "-c",
        str(args.client_cpu),
        "wrk",
        "-t1",
        f"-c{args.connections}",
        f"-d{duration}s",
        f"http://{HOST}:{port}/plaintext",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + 30, start_new_session=True
    )
    out = proc.stdout + proc.stderr
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    count = re.search(r"^\s+(\d+) requests in", out, re.M)
    if proc.returncode != 0 or not rps or not count or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{out}")
    return float(rps.group(1)), int(count.group(1))


# -- main ------------------------------------------------------------------------------


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="asgid-bench-metrics-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "recycle", "overhead"), default="all")
    parser.add_argument("--recycles", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    results: dict[str, Any] = {"date": dt.datetime.now().isoformat(timespec="seconds")}
    with scratch() as workdir:
        if args.part in ("all", "recycle"):
            print(f"recycle: {args.workers} workers, --limit-max-requests 1", flush=True)
            recycle = results["recycle"] = bench_recycle(args, workdir)
            shown = {k: v for k, v in recycle.items() if k != "files_end_names"}
            print(json.dumps(shown, indent=2))
            print("files at the end:", " ".join(recycle["files_end_names"]))
        if args.part in ("all", "overhead"):
            if shutil.which("wrk") is None or shutil.which("taskset") is None:
                print("overhead: skipped, wrk or taskset not installed", file=sys.stderr)
            else:
                print(
                    f"overhead: plaintext, 1 worker, {args.rounds} rounds x {args.duration}s",
                    flush=True,
                )
                overhead = results["overhead"] = bench_overhead(args, workdir)
                print(f"RequestStats.record: {overhead['record_ns']} ns per request")
                for name, row in overhead.items():
                    if name == "record_ns":
                        continue
                    print(
                        f"{name:<28} median {row['rps_median']:>8} req/s "
                        f"(cost {row['rps_overhead_pct']:+.2f}%, paired "
                        f"{row['rps_overhead_paired_pct']:+.2f}%)  "
                        f"{row['cpu_us_per_request_median']:>6.2f} us CPU/request "
                        f"(cost {row['cpu_overhead_pct']:+.2f}%, paired "
                        f"{row['cpu_overhead_paired_pct']:+.2f}%)"
                    )
    out = BENCH / "results" / f"metrics-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
