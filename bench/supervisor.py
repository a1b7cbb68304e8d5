#!/usr/bin/env python3
"""Supervisor benchmark: asgid's reloads and recycling under load, 2-worker
throughput against uvicorn and gunicorn, and the master's memory, in one run.

    python bench/supervisor.py                       # ~4.5 minutes

1. **Resilience.** asgid with 2 workers under a fixed-length wrk load
   (``-t2 -c64 --latency``), three kinds of run on fresh servers:
   ``steady`` (nothing happens), ``reload`` (``--reloads`` SIGHUPs to the
   master, one every ``--reload-interval`` s; before sending the next, the
   script waits, with a deadline, until the master's worker children are all
   new pids and there are as many as before), and ``max-requests``
   (``--limit-max-requests 1000``; the script polls the worker pids to count
   the recycles). Reported: wrk's non-2xx responses and socket errors (target
   0), and the p99 of the reload run over the steady run (target < 2).
2. **Throughput.** asgid, uvicorn (``--workers 2``, uvloop, httptools) and
   gunicorn (``-k uvicorn_worker.UvicornWorker -w 2``), 2 workers each, same
   app (``bench.apps:app``, ``GET /plaintext``), interleaved over ``--rounds``
   rounds with the order rotated each round; median req/s and ratios.
3. **Memory.** RSS (and USS/PSS) of asgid's master and of each worker after
   warm-up (target: master under 30 MB), plus the peers' processes.

The machine's cores are shared by the servers, wrk and whatever else runs:
nothing is pinned (two workers want both cores). Each run records how much
CPU the server and wrk used and how much went to other processes ("foreign").

Every server runs in its own session/process group and is stopped by process
group (SIGTERM, then SIGKILL after a deadline); every wait has a deadline and
every wrk run a fixed duration. Only 127.0.0.1 is used. The table goes to
stdout, everything to bench/results/supervisor-<time>.json, server logs to
bench/results/supervisor-<time>-logs/. Exit status: 0 all runs completed and
all targets met, 1 a run failed, 2 a target was missed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from _common import (
    Process,
    free_port,
    git_state,
    http_get,
    machine,
    median,
    package_versions,
)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"
APP = "bench.apps:app"
PATH = "/plaintext"
BODY = b"Hello, world!"
MiB = 1024 * 1024
MB = 1000 * 1000
WORKERS = 2

READY_TIMEOUT = 30.0  # a server's first good answer, and all its workers up
STOP_TIMEOUT = 10.0  # SIGTERM to the group, then SIGKILL
WRK_GRACE = 30.0  # a wrk run may overrun its duration by this much
REQUEST_TIMEOUT = 5.0
RELOAD_TIMEOUT = 20.0  # one SIGHUP until every worker pid has changed
POLL = 0.02

MASTER_RSS_TARGET = 30 * MB
P99_RATIO_TARGET = 2.0

SERVERS = ("asgid", "uvicorn", "gunicorn")
# Info for the resilience runs: asgid logs each reload/recycle step (a few lines each).
RESILIENCE_EXTRA = ["--log-level", "info"]
THROUGHPUT_EXTRA = ["--log-level", "warning"]


def server_command(name: str, port: int, extra: list[str] | None = None) -> list[str]:
    py = sys.executable
    extra = extra or []
    if name == "asgid":
        return [
            py, "-m", "asgid", APP, "--host", HOST, "--port", str(port),
            "--workers", str(WORKERS), "--no-access-log", *extra,
        ]  # fmt: skip
    if name == "uvicorn":
        return [
            py, "-m", "uvicorn", APP, "--host", HOST, "--port", str(port),
            "--workers", str(WORKERS), "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", *extra,
        ]  # fmt: skip
    if name == "gunicorn":
        # No --access-logfile: gunicorn's default (None) writes no access log, and
        # UvicornWorker then gives uvicorn's access logger no handler, so uvicorn
        # skips access logging. ("--access-logfile -" would log to stdout.)
        # UvicornWorker uses loop="auto"/http="auto": uvloop and httptools when
        # installed; the script checks that the workers have them mapped.
        return [
            py, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker",
            "-w", str(WORKERS), "-b", f"{HOST}:{port}", *extra, APP,
        ]  # fmt: skip
    raise ValueError(name)


# -- wrk --------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PCT_RE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_LAT_RE = re.compile(
    r"Latency\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)"
)
_RPS_RE = re.compile(r"Requests/sec:\s+([\d.]+)")
_TOTAL_RE = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)")
_ERRORS_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass
class WrkResult:
    rps: float
    requests: int
    seconds: float
    latency_ms: dict[str, float]  # "avg", "max", "50", "75", "90", "99"
    errors: dict[str, int]  # connect, read, write, timeout
    non_2xx: int
    client_cpu_s: float
    output: str = field(repr=False)

    @property
    def socket_errors(self) -> int:
        return sum(self.errors.values())


class Wrk:
    """One wrk run in the background (own process group) with a fixed duration.

    Its output goes to ``log``.
    """

    def __init__(self, port: int, duration: int, threads: int, connections: int, log: Path) -> None:
        self.duration = duration
        self.cmd = [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s",
            "--latency", "--timeout", "5s", f"http://{HOST}:{port}{PATH}",
        ]  # fmt: skip
        self._rusage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.started = time.monotonic()
        self.process = Process(self.cmd, log=log)
        self.proc = self.process.proc

    @property
    def ends_at(self) -> float:
        return self.started + self.duration

    def wait(self) -> WrkResult:
        try:
            self.process.wait(self.duration + WRK_GRACE)
        except subprocess.TimeoutExpired:
            self.process.stop(STOP_TIMEOUT)
            raise RuntimeError(
                f"wrk overran its {self.duration}s by {WRK_GRACE}s:\n{self.process.output()}"
            ) from None
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.process.stop(STOP_TIMEOUT)  # wrk has exited: this closes its log
        out = self.process.output()
        before = self._rusage
        rps = _RPS_RE.search(out)
        pcts = {
            m.group(1): float(m.group(2)) * _UNITS_MS[m.group(3)] for m in _PCT_RE.finditer(out)
        }
        if self.proc.returncode != 0 or rps is None or "99" not in pcts:
            raise RuntimeError(f"wrk failed (exit {self.proc.returncode}):\n{out}")
        lat = _LAT_RE.search(out)
        if lat:
            pcts["avg"] = float(lat.group(1)) * _UNITS_MS[lat.group(2)]
            pcts["max"] = float(lat.group(5)) * _UNITS_MS[lat.group(6)]
        total = _TOTAL_RE.search(out)
        errors = _ERRORS_RE.search(out)
        non2xx = _NON2XX_RE.search(out)
        return WrkResult(
            rps=float(rps.group(1)),
            requests=int(total.group(1)) if total else 0,
            seconds=float(total.group(2)) * _UNITS_MS[total.group(3)] / 1000 if total else 0.0,
            latency_ms=pcts,
            errors=dict(
                zip(
                    ("connect", "read", "write", "timeout"),
                    (int(g) for g in errors.groups()) if errors else (0, 0, 0, 0),
                    strict=True,
                )
            ),
            non_2xx=int(non2xx.group(1)) if non2xx else 0,
            client_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            output=out,
        )

    def kill(self) -> None:
        self.process.stop(STOP_TIMEOUT)


# -- servers ----------------------------------------------------------------------


def _alive(p: psutil.Process) -> bool:
    try:
        return bool(p.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _has_mapped(p: psutil.Process, needle: str) -> bool:
    with contextlib.suppress(psutil.Error):
        return any(needle in m.path for m in p.memory_maps())
    return False


LIVE_SERVERS: list[Server] = []


class Server:
    """One server's process group."""

    def __init__(self, name: str, log_path: Path, extra: list[str] | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.cmd = server_command(name, self.port, extra)
        self.log_path = log_path
        self.wrk_log = log_path.with_suffix(".wrk.log")  # the wrk runs against this server
        self.process = Process(self.cmd, log=log_path, cwd=ROOT)
        self.proc = self.process.proc
        self.root = psutil.Process(self.proc.pid)
        LIVE_SERVERS.append(self)

    def log_text(self) -> str:
        return self.process.output()

    def log_tail(self, lines: int = 30) -> str:
        return self.process.tail(lines)

    def workers(self) -> list[psutil.Process]:
        """The processes that serve requests (live, not zombies)."""
        try:
            kids = self.root.children(recursive=False)
        except psutil.NoSuchProcess:
            return []
        out = []
        for p in kids:
            if not _alive(p):
                continue
            with contextlib.suppress(psutil.Error):
                cmd = " ".join(p.cmdline())
                if self.name == "uvicorn" and "resource_tracker" in cmd:
                    continue  # multiprocessing's helper, not a worker
                out.append(p)
        return out

    def worker_pids(self) -> set[int]:
        return {p.pid for p in self.workers()}

    def others(self) -> list[psutil.Process]:
        """Processes of the tree that are neither the root nor a worker."""
        wp = self.worker_pids()
        with contextlib.suppress(psutil.NoSuchProcess):
            return [p for p in self.root.children(recursive=True) if p.pid not in wp and _alive(p)]
        return []

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """A correct answer on PATH, and WORKERS workers running."""
        deadline = time.monotonic() + timeout
        answered = False
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {self.proc.returncode}:\n{self.log_tail()}"
                )
            if not answered:
                try:
                    status, body = http_get(self.port, PATH)
                except OSError as exc:
                    last = exc
                    time.sleep(0.05)
                    continue
                if status != 200 or body != BODY:
                    raise RuntimeError(f"{self.name} answered {status} {body[:200]!r}")
                answered = True
            if len(self.worker_pids()) == WORKERS:
                return
            time.sleep(0.05)
        raise TimeoutError(
            f"{self.name} not ready within {timeout}s (answered={answered}, {last!r}, "
            f"workers={sorted(self.worker_pids())}):\n{self.log_tail()}"
        )

    def cpu_seconds(self) -> float:
        """CPU time of the whole tree so far, including reaped children."""
        total = 0.0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total

    def stop(self) -> float:
        """Stop the group (SIGTERM, SIGKILL after STOP_TIMEOUT); the seconds it took."""
        t0 = time.monotonic()
        self.process.stop(STOP_TIMEOUT)
        with contextlib.suppress(ValueError):
            LIVE_SERVERS.remove(self)
        return time.monotonic() - t0


def mem(p: psutil.Process) -> dict[str, Any]:
    out: dict[str, Any] = {"pid": p.pid}
    with contextlib.suppress(psutil.Error):
        out["name"] = p.name()
        out["rss"] = p.memory_info().rss
        full = p.memory_full_info()
        out["uss"] = full.uss
        out["pss"] = getattr(full, "pss", 0)
    return out


def memory_snapshot(server: Server) -> dict[str, Any]:
    return {
        "master": mem(server.root),
        "workers": [mem(p) for p in sorted(server.workers(), key=lambda p: p.pid)],
        "others": [mem(p) for p in server.others()],
    }


def mapped_extensions(p: psutil.Process, top: int = 15) -> list[tuple[str, int]]:
    """The largest shared objects mapped by p, by resident size (diagnostic)."""
    with contextlib.suppress(psutil.Error):
        rows = [
            (m.path, m.rss)
            for m in p.memory_maps(grouped=True)
            if m.path.endswith(".so") or ".so." in m.path or ".cpython-" in m.path
        ]
        rows.sort(key=lambda r: -r[1])
        return [
            (os.path.relpath(path, sys.prefix) if path.startswith(sys.prefix) else path, rss)
            for path, rss in rows[:top]
        ]
    return []


def background_load(seconds: float = 3.0) -> float:
    """Cores busy with other work while this script runs nothing."""
    a0 = psutil.cpu_times()
    time.sleep(seconds)
    a1 = psutil.cpu_times()
    a, b = a1._asdict(), a0._asdict()
    total = sum(a.values()) - sum(b.values())
    total -= sum(a.get(k, 0) - b.get(k, 0) for k in ("guest", "guest_nice"))
    idle = sum(a.get(k, 0) - b.get(k, 0) for k in ("idle", "iowait"))
    return 0.0 if total <= 0 else (psutil.cpu_count() or 1) * (1 - idle / total)


class CpuMeter:
    """Server CPU, wrk CPU (from the Wrk result) and everything else on the machine."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.t0 = time.monotonic()
        self.machine0 = psutil.cpu_times()
        self.server0 = server.cpu_seconds()
        self.load = os.getloadavg()[0]

    def finish(self, wrk: WrkResult) -> dict[str, float]:
        elapsed = time.monotonic() - self.t0
        machine1 = psutil.cpu_times()
        server_cpu = (self.server.cpu_seconds() - self.server0) / elapsed
        a, b = machine1._asdict(), self.machine0._asdict()
        total = sum(a.values()) - sum(b.values())
        total -= sum(a.get(k, 0) - b.get(k, 0) for k in ("guest", "guest_nice"))
        idle = sum(a.get(k, 0) - b.get(k, 0) for k in ("idle", "iowait"))
        ncpu = psutil.cpu_count() or 1
        busy_cores = 0.0 if total <= 0 else ncpu * (1 - idle / total)
        client_cpu = wrk.client_cpu_s / elapsed
        return {
            "server_cpu": server_cpu,  # cores (1.0 = one core busy)
            "client_cpu": client_cpu,
            "foreign_cpu": max(0.0, busy_cores - server_cpu - client_cpu),
            "machine_busy_cores": busy_cores,
            "loadavg_1m": self.load,
        }


# -- part 1: steady / reload / max-requests ------------------------------------------

LOG_PATTERNS = re.compile(
    r"(?i)\b(error|warning|critical|traceback|killed|failed|timed out|garbage|retrying)\b"
)


def log_findings(text: str, limit: int = 40) -> list[str]:
    return [line for line in text.splitlines() if LOG_PATTERNS.search(line)][:limit]


def resilience_run(
    kind: str, round_no: int, args: argparse.Namespace, log_dir: Path
) -> dict[str, Any]:
    extra = list(RESILIENCE_EXTRA)
    if kind == "max-requests":
        extra += ["--limit-max-requests", str(args.max_requests)]
    server = Server("asgid", log_dir / f"r{round_no}-{kind}.log", extra)
    record: dict[str, Any] = {"kind": kind, "round": round_no, "cmd": server.cmd}
    wrk: Wrk | None = None
    try:
        server.wait_ready()
        master_pid = server.root.pid
        if args.warmup > 0:
            Wrk(server.port, args.warmup, args.threads, args.connections, server.wrk_log).wait()
        record["memory_before"] = memory_snapshot(server)
        initial = server.worker_pids()
        seen = set(initial)
        reloads: list[dict[str, Any]] = []
        meter = CpuMeter(server)
        wrk = Wrk(
            server.port, args.resilience_duration, args.threads, args.connections, server.wrk_log
        )
        if kind == "reload":
            next_at = wrk.started + args.reload_interval
            for i in range(args.reloads):
                # Leave the last reload time to finish inside the measured window.
                if next_at > wrk.ends_at - args.reload_margin:
                    reloads.append({"n": i + 1, "skipped": "not enough wrk time left"})
                    break
                while time.monotonic() < next_at:
                    time.sleep(POLL)
                old = server.worker_pids()
                sent = time.monotonic()
                os.kill(master_pid, signal.SIGHUP)
                done = None
                deadline = sent + RELOAD_TIMEOUT
                while time.monotonic() < deadline:
                    cur = server.worker_pids()
                    seen |= cur
                    if len(cur) == WORKERS and not (cur & old):
                        done = time.monotonic()
                        break
                    if server.proc.poll() is not None:
                        break
                    time.sleep(POLL)
                entry = {
                    "n": i + 1,
                    "sent_at_s": round(sent - wrk.started, 3),
                    "old": sorted(old),
                    "new": sorted(server.worker_pids()),
                    "completed_s": None if done is None else round(done - sent, 3),
                    "before_wrk_end": done is not None and done <= wrk.ends_at,
                }
                reloads.append(entry)
                if done is None:
                    entry["log_tail"] = server.log_tail(40)
                    break  # a stuck reload: stop sending, let wrk finish
                next_at = max(sent + args.reload_interval, done)
        else:
            while wrk.proc.poll() is None and time.monotonic() < wrk.ends_at + WRK_GRACE:
                seen |= server.worker_pids()
                time.sleep(POLL)
        result = wrk.wait()
        record["cpu"] = meter.finish(result)
        wrk = None
        seen |= server.worker_pids()
        record["memory_after"] = memory_snapshot(server)
        record["master_alive"] = server.proc.poll() is None and server.root.pid == master_pid
        record["wrk"] = {k: v for k, v in asdict(result).items() if k != "output"}
        record["wrk_output"] = result.output
        record["workers_seen"] = len(seen)
        record["worker_replacements"] = len(seen) - len(initial)
        record["reloads"] = reloads
        text = server.log_text()
        record["log_counts"] = {
            "reload started": text.count("reload started"),
            "reload finished": text.count("reload finished"),
            "due for replacement": text.count("due for replacement"),
            "drained and exited": text.count("drained and exited"),
            "ready": len(re.findall(r"\) ready, generation", text)),
        }
        record["log_findings"] = log_findings(text)
    except Exception as exc:
        record["error"] = f"{exc!r}"
        record["traceback"] = traceback.format_exc()
        record["log_tail"] = server.log_tail(40)
    finally:
        if wrk is not None:
            wrk.kill()
        record["stop_s"] = round(server.stop(), 3)
        record["log"] = str(server.log_path)
        # Anything the master logged while stopping.
        with contextlib.suppress(OSError):
            record["log_findings"] = log_findings(server.log_path.read_text(errors="replace"))
    return record


# -- part 2: throughput -------------------------------------------------------------


def throughput_run(
    name: str, round_no: int, args: argparse.Namespace, log_dir: Path
) -> dict[str, Any]:
    server = Server(name, log_dir / f"r{round_no}-throughput-{name}.log", THROUGHPUT_EXTRA)
    record: dict[str, Any] = {"server": name, "round": round_no, "cmd": server.cmd}
    try:
        server.wait_ready()
        workers = server.workers()
        record["uvloop_httptools_mapped"] = [
            _has_mapped(p, "uvloop") and _has_mapped(p, "httptools") for p in workers
        ]
        if args.warmup > 0:
            Wrk(server.port, args.warmup, args.threads, args.connections, server.wrk_log).wait()
        record["memory_warm"] = memory_snapshot(server)
        if name == "asgid" and round_no == 0:
            record["master_mapped_so"] = mapped_extensions(server.root)
        pids = server.worker_pids()
        meter = CpuMeter(server)
        result = Wrk(
            server.port, args.duration, args.threads, args.connections, server.wrk_log
        ).wait()
        record["cpu"] = meter.finish(result)
        if server.worker_pids() != pids or server.proc.poll() is not None:
            raise RuntimeError(
                f"{name}: a process exited or was replaced during the run "
                f"({sorted(pids)} -> {sorted(server.worker_pids())}):\n{server.log_tail()}"
            )
        record["memory_after"] = memory_snapshot(server)
        record["wrk"] = {k: v for k, v in asdict(result).items() if k != "output"}
        record["log_findings"] = log_findings(server.log_text())
    except Exception as exc:
        record["error"] = f"{exc!r}"
        record["traceback"] = traceback.format_exc()
        record["log_tail"] = server.log_tail(40)
    finally:
        record["stop_s"] = round(server.stop(), 3)
        record["log"] = str(server.log_path)
    return record


# -- report ---------------------------------------------------------------------------


def mib(n: float | None) -> str:
    return "-" if not n else f"{n / MiB:.1f}"


def summarize(res: list[dict[str, Any]], thr: list[dict[str, Any]]) -> dict[str, Any]:
    s: dict[str, Any] = {"resilience": {}, "throughput": {}, "memory": {}, "targets": {}}
    for kind in ("steady", "reload", "max-requests"):
        rs = [r for r in res if r["kind"] == kind and "wrk" in r]
        if not rs:
            continue
        s["resilience"][kind] = {
            "runs": len(rs),
            "failed_runs": len([r for r in res if r["kind"] == kind and "error" in r]),
            "requests": sum(r["wrk"]["requests"] for r in rs),
            "rps_median": median([r["wrk"]["rps"] for r in rs]),
            "p50_ms_median": median([r["wrk"]["latency_ms"]["50"] for r in rs]),
            "p99_ms_median": median([r["wrk"]["latency_ms"]["99"] for r in rs]),
            "p99_ms_each": [r["wrk"]["latency_ms"]["99"] for r in rs],
            "max_ms_max": max(r["wrk"]["latency_ms"].get("max", 0.0) for r in rs),
            "non_2xx": sum(r["wrk"]["non_2xx"] for r in rs),
            "socket_errors": {
                k: sum(r["wrk"]["errors"][k] for r in rs)
                for k in ("connect", "read", "write", "timeout")
            },
            "reloads_completed": sum(
                1 for r in rs for x in r["reloads"] if x.get("completed_s") is not None
            ),
            "reloads_completed_in_window": sum(
                1 for r in rs for x in r["reloads"] if x.get("before_wrk_end")
            ),
            "reloads_sent": sum(1 for r in rs for x in r["reloads"] if "sent_at_s" in x),
            "reload_s": [
                x["completed_s"] for r in rs for x in r["reloads"] if x.get("completed_s")
            ],
            "worker_replacements": sum(r["worker_replacements"] for r in rs),
            "recycles_logged": sum(r["log_counts"]["due for replacement"] for r in rs),
            "reloads_finished_logged": sum(r["log_counts"]["reload finished"] for r in rs),
            "server_cpu_median": median([r["cpu"]["server_cpu"] for r in rs]),
            "client_cpu_median": median([r["cpu"]["client_cpu"] for r in rs]),
            "foreign_cpu_max": max(r["cpu"]["foreign_cpu"] for r in rs),
            "master_alive": all(r["master_alive"] for r in rs),
        }
    rsl = s["resilience"]
    if "steady" in rsl and "reload" in rsl:
        rsl["reload"]["p99_vs_steady"] = (
            rsl["reload"]["p99_ms_median"] / rsl["steady"]["p99_ms_median"]
        )
        # Paired by round as well: each round's reload run over the same round's steady run.
        pairs = []
        for rnd in sorted({r["round"] for r in res}):
            st = [r for r in res if r["round"] == rnd and r["kind"] == "steady" and "wrk" in r]
            rl = [r for r in res if r["round"] == rnd and r["kind"] == "reload" and "wrk" in r]
            if st and rl:
                pairs.append(rl[0]["wrk"]["latency_ms"]["99"] / st[0]["wrk"]["latency_ms"]["99"])
        rsl["reload"]["p99_vs_steady_by_round"] = pairs
    if "steady" in rsl and "max-requests" in rsl:
        rsl["max-requests"]["p99_vs_steady"] = (
            rsl["max-requests"]["p99_ms_median"] / rsl["steady"]["p99_ms_median"]
        )

    for name in SERVERS:
        rs = [r for r in thr if r["server"] == name and "wrk" in r]
        if not rs:
            continue
        s["throughput"][name] = {
            "rounds": len(rs),
            "failed_runs": len([r for r in thr if r["server"] == name and "error" in r]),
            "rps_each": [r["wrk"]["rps"] for r in rs],
            "rps_median": median([r["wrk"]["rps"] for r in rs]),
            "rps_min": min(r["wrk"]["rps"] for r in rs),
            "rps_max": max(r["wrk"]["rps"] for r in rs),
            "p99_ms_median": median([r["wrk"]["latency_ms"]["99"] for r in rs]),
            "errors": sum(r["wrk"]["non_2xx"] + sum(r["wrk"]["errors"].values()) for r in rs),
            "server_cpu_median": median([r["cpu"]["server_cpu"] for r in rs]),
            "client_cpu_median": median([r["cpu"]["client_cpu"] for r in rs]),
            "foreign_cpu_max": max(r["cpu"]["foreign_cpu"] for r in rs),
            "per_cpu_s_median": median(
                [r["wrk"]["rps"] / r["cpu"]["server_cpu"] for r in rs if r["cpu"]["server_cpu"] > 0]
            ),
            "uvloop_httptools": all(all(r["uvloop_httptools_mapped"]) for r in rs),
            "mem_master_rss_median": median(
                [float(r["memory_warm"]["master"].get("rss", 0)) for r in rs]
            ),
            "mem_worker_rss_median": median(
                [float(w.get("rss", 0)) for r in rs for w in r["memory_warm"]["workers"]]
            ),
            "mem_tree_rss_median": median(
                [
                    float(
                        r["memory_warm"]["master"].get("rss", 0)
                        + sum(w.get("rss", 0) for w in r["memory_warm"]["workers"])
                        + sum(w.get("rss", 0) for w in r["memory_warm"]["others"])
                    )
                    for r in rs
                ]
            ),
        }
    for row in s["throughput"].values():
        for peer in ("uvicorn", "gunicorn"):
            if peer in s["throughput"]:
                p = s["throughput"][peer]
                row[f"rps_vs_{peer}"] = row["rps_median"] / p["rps_median"]
                row[f"p99_vs_{peer}"] = row["p99_ms_median"] / p["p99_ms_median"]
                row[f"per_cpu_s_vs_{peer}"] = row["per_cpu_s_median"] / p["per_cpu_s_median"]

    # Memory: asgid's master and workers, after warm-up, from every asgid server started.
    snaps = [
        (f"throughput r{r['round']}", r["memory_warm"])
        for r in thr
        if r["server"] == "asgid" and "memory_warm" in r
    ]
    snaps += [
        (f"{r['kind']} r{r['round']} before", r["memory_before"])
        for r in res
        if "memory_before" in r
    ]
    snaps += [
        (f"{r['kind']} r{r['round']} after", r["memory_after"]) for r in res if "memory_after" in r
    ]
    s["memory"]["asgid_snapshots"] = [
        {
            "when": when,
            "master_rss": m["master"].get("rss"),
            "master_uss": m["master"].get("uss"),
            "master_pss": m["master"].get("pss"),
            "workers_rss": [w.get("rss") for w in m["workers"]],
            "workers_uss": [w.get("uss") for w in m["workers"]],
        }
        for when, m in snaps
    ]
    warm = [x for x in s["memory"]["asgid_snapshots"] if x["when"].startswith("throughput")]
    if warm:
        s["memory"]["master_rss_median"] = median([float(x["master_rss"]) for x in warm])
        s["memory"]["master_rss_max"] = max(x["master_rss"] for x in s["memory"]["asgid_snapshots"])

    # Targets.
    t = s["targets"]
    errs = 0
    for kind in ("reload", "max-requests"):
        if kind in rsl:
            errs += rsl[kind]["non_2xx"] + sum(rsl[kind]["socket_errors"].values())
    t["zero_errors_reload_and_recycle"] = {
        "value": errs,
        "met": errs == 0 and "reload" in rsl and "max-requests" in rsl,
    }
    if "reload" in rsl and "p99_vs_steady" in rsl["reload"]:
        v = rsl["reload"]["p99_vs_steady"]
        t["reload_p99_below_2x_steady"] = {"value": v, "met": v < P99_RATIO_TARGET}
    if "master_rss_median" in s["memory"]:
        v = s["memory"]["master_rss_median"]
        t["master_rss_below_30MB"] = {"value": v, "met": v < MASTER_RSS_TARGET}
    return s


def md_row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def yes(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(
    s: dict[str, Any], meta: dict[str, Any], res: list[dict[str, Any]], thr: list[dict[str, Any]]
) -> str:
    o: list[str] = []
    o.append(
        f"{meta['date']} · asgid {meta['versions']['asgid']} ({meta['git']}) · {meta['machine']} · "
        f"wrk -t{meta['threads']} -c{meta['connections']} · {meta['elapsed_s']} s"
    )
    o.append("")
    o.append(
        f"Machine noise: load average {meta['loadavg_start']:.2f} at start, "
        f"{meta['loadavg_end']:.2f} at end; other processes kept "
        f"{meta['background_cores_start']:.2f} cores busy in 3 s with no benchmark running before, "
        f"{meta['background_cores_end']:.2f} after (of {os.cpu_count()}). 'foreign CPU' below is "
        "the machine's busy time not used by the server or wrk: other jobs, plus interrupt "
        "and softirq time the kernel charges to no process."
    )
    o.append("")
    o.append(
        f"### 1. asgid, {WORKERS} workers, under load: reloads and recycling "
        f"({meta['resilience_duration']} s per run, {meta['resilience_rounds']} run(s) each)"
    )
    o.append("")
    o.append(
        md_row(
            "run", "requests", "req/s (median)", "p50 ms", "p99 ms (median)", "p99 each run",
            "max ms", "p99 / steady", "non-2xx", "socket errors c/r/w/t", "events",
            "server CPU", "wrk CPU", "max foreign CPU",
        )
    )  # fmt: skip
    o.append("|---|---:|---:|---:|---:|---|---:|---:|---:|---|---|---:|---:|---:|")
    for kind, r in s["resilience"].items():
        se = r["socket_errors"]
        if kind == "reload":
            ev = (
                f"{r['reloads_completed']}/{r['reloads_sent']} reloads done "
                f"({r['reloads_completed_in_window']} inside wrk window, "
                f"{r['reloads_finished_logged']} 'reload finished' logged), "
                f"{r['worker_replacements']} new worker pids"
            )
        elif kind == "max-requests":
            ev = (
                f"{r['recycles_logged']} recycles (master log), "
                f"{r['worker_replacements']} new worker pids seen"
            )
        else:
            ev = f"{r['worker_replacements']} worker changes"
        ratio = r.get("p99_vs_steady")
        o.append(
            md_row(
                kind,
                f"{r['requests']:,}",
                f"{r['rps_median']:,.0f}",
                f"{r['p50_ms_median']:.2f}",
                f"{r['p99_ms_median']:.2f}",
                ", ".join(f"{x:.2f}" for x in r["p99_ms_each"]),
                f"{r['max_ms_max']:.1f}",
                "-" if ratio is None else f"{ratio:.2f}",
                str(r["non_2xx"]),
                f"{se['connect']}/{se['read']}/{se['write']}/{se['timeout']}",
                ev,
                f"{r['server_cpu_median']:.2f}",
                f"{r['client_cpu_median']:.2f}",
                f"{r['foreign_cpu_max']:.2f}",
            )
        )
    if "reload" in s["resilience"]:
        r = s["resilience"]["reload"]
        if r["reload_s"]:
            o.append("")
            o.append(
                f"SIGHUP until every worker pid had changed: median {median(r['reload_s']):.2f} s, "
                f"max {max(r['reload_s']):.2f} s over {len(r['reload_s'])} reloads; "
                f"p99 reload/steady paired by round: "
                f"{', '.join(f'{x:.2f}' for x in r.get('p99_vs_steady_by_round', []))}."
            )
    o.append("")
    o.append("Each resilience run, in the order run:")
    o.append("")
    o.append(
        md_row(
            "round", "run", "req/s", "p99 ms", "max ms", "errors", "reloads/recycles",
            "server CPU", "foreign CPU",
        )
    )  # fmt: skip
    o.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in res:
        if "wrk" not in r:
            continue
        lc = r["log_counts"]
        o.append(
            md_row(
                str(r["round"]),
                r["kind"],
                f"{r['wrk']['rps']:,.0f}",
                f"{r['wrk']['latency_ms']['99']:.2f}",
                f"{r['wrk']['latency_ms'].get('max', 0.0):.1f}",
                str(r["wrk"]["non_2xx"] + sum(r["wrk"]["errors"].values())),
                str(lc["reload finished"] or lc["due for replacement"]),
                f"{r['cpu']['server_cpu']:.2f}",
                f"{r['cpu']['foreign_cpu']:.2f}",
            )
        )
    o.append("")
    o.append("CPU columns are in cores (2.0 = both cores of the machine).")
    o.append("")
    o.append(
        f"### 2. Throughput, {WORKERS} workers each, GET /plaintext "
        f"({meta['rounds']} rounds x {meta['duration']} s, interleaved)"
    )
    o.append("")
    o.append(
        md_row(
            "server", "req/s (median)", "req/s min-max", "p99 ms (median)", "req/s / uvicorn",
            "req/s / gunicorn", "req per server CPU-s", "/ uvicorn", "/ gunicorn", "server CPU",
            "wrk CPU", "max foreign CPU", "errors",
        )
    )  # fmt: skip
    o.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def rt(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:.2f}" if key in row else "-"

    for name, row in s["throughput"].items():
        o.append(
            f"| {name} | {row['rps_median']:,.0f} | {row['rps_min']:,.0f}-{row['rps_max']:,.0f} "
            f"| {row['p99_ms_median']:.2f} | {rt(row, 'rps_vs_uvicorn')} "
            f"| {rt(row, 'rps_vs_gunicorn')} "
            f"| {row['per_cpu_s_median']:,.0f} | {rt(row, 'per_cpu_s_vs_uvicorn')} "
            f"| {rt(row, 'per_cpu_s_vs_gunicorn')} | {row['server_cpu_median']:.2f} "
            f"| {row['client_cpu_median']:.2f} | {row['foreign_cpu_max']:.2f} | {row['errors']} |"
        )
    o.append("")
    o.append("Each throughput run, in the order run (foreign CPU shows how busy the machine was):")
    o.append("")
    o.append(md_row("round", "server", "req/s", "p99 ms", "server CPU", "wrk CPU", "foreign CPU"))
    o.append("|---:|---|---:|---:|---:|---:|---:|")
    for r in thr:
        if "wrk" in r:
            o.append(
                md_row(
                    str(r["round"]),
                    r["server"],
                    f"{r['wrk']['rps']:,.0f}",
                    f"{r['wrk']['latency_ms']['99']:.2f}",
                    f"{r['cpu']['server_cpu']:.2f}",
                    f"{r['cpu']['client_cpu']:.2f}",
                    f"{r['cpu']['foreign_cpu']:.2f}",
                )
            )
    o.append("")
    o.append("### 3. Memory after warm-up (RSS; USS = pages no other process shares)")
    o.append("")
    o.append(
        "| server | parent/master RSS MiB | each worker RSS MiB (median) | whole tree RSS MiB |"
    )
    o.append("|---|---:|---:|---:|")
    for name, row in s["throughput"].items():
        o.append(
            f"| {name} | {mib(row['mem_master_rss_median'])} | {mib(row['mem_worker_rss_median'])} "
            f"| {mib(row['mem_tree_rss_median'])} |"
        )
    o.append("")
    o.append(
        md_row(
            "asgid snapshot", "master RSS MiB (MB)", "master USS MiB", "master PSS MiB",
            "workers RSS MiB", "workers USS MiB",
        )
    )  # fmt: skip
    o.append("|---|---:|---:|---:|---|---|")
    for x in s["memory"]["asgid_snapshots"]:
        o.append(
            f"| {x['when']} | {mib(x['master_rss'])} ({(x['master_rss'] or 0) / MB:.1f}) "
            f"| {mib(x['master_uss'])} | {mib(x['master_pss'])} "
            f"| {', '.join(mib(v) for v in x['workers_rss'])} "
            f"| {', '.join(mib(v) for v in x['workers_uss'])} |"
        )
    o.append("")
    o.append("### Targets")
    o.append("")
    o.append("| target | value | |")
    o.append("|---|---:|---|")
    t = s["targets"]
    if "zero_errors_reload_and_recycle" in t:
        x = t["zero_errors_reload_and_recycle"]
        o.append(
            md_row(
                "0 non-2xx + socket errors across reloads and max-requests recycling",
                str(x["value"]),
                yes(x["met"]),
            )
        )
    if "reload_p99_below_2x_steady" in t:
        x = t["reload_p99_below_2x_steady"]
        o.append(
            md_row(
                "p99 during reloads < 2x steady p99 (medians)", f"{x['value']:.2f}x", yes(x["met"])
            )
        )
    if "master_rss_below_30MB" in t:
        x = t["master_rss_below_30MB"]
        o.append(
            md_row(
                "asgid master RSS after warm-up < 30 MB",
                f"{x['value'] / MB:.1f} MB ({x['value'] / MiB:.1f} MiB)",
                yes(x["met"]),
            )
        )
    failed = [r for r in res + thr if "error" in r]
    if failed:
        o.append("")
        o.append("Failed runs:")
        for r in failed:
            o.append(f"- {r.get('kind', r.get('server'))} round {r['round']}: {r['error']}")
    findings = [
        (r.get("kind", r.get("server")), r["round"], line)
        for r in res + thr
        for line in r.get("log_findings", [])
    ]
    if findings:
        o.append("")
        o.append("Log lines worth a look (error/warning/killed/failed...):")
        o.append("")
        o.append("```")
        for what, rnd, line in findings[:40]:
            o.append(f"[{what} r{rnd}] {line}")
        o.append("```")
    return "\n".join(o)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=3, help="throughput rounds (default 3)")
    p.add_argument("--duration", type=int, default=5, help="seconds per throughput run (default 5)")
    p.add_argument(
        "--warmup", type=int, default=1, help="seconds of unmeasured load first (default 1)"
    )
    p.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    p.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    p.add_argument(
        "--resilience-duration", type=int, default=20,
        help="seconds per steady/reload/max-requests run (default 20)",
    )  # fmt: skip
    p.add_argument(
        "--resilience-rounds", type=int, default=3,
        help="how many steady, reload and max-requests runs (default 3)",
    )  # fmt: skip
    p.add_argument("--reloads", type=int, default=10, help="SIGHUPs per reload run (default 10)")
    p.add_argument(
        "--reload-interval", type=float, default=1.5, help="seconds between SIGHUPs (default 1.5)"
    )
    p.add_argument(
        "--reload-margin", type=float, default=1.5,
        help="send no SIGHUP later than this many seconds before wrk ends (default 1.5)",
    )  # fmt: skip
    p.add_argument(
        "--max-requests", type=int, default=1000, help="--limit-max-requests (default 1000)"
    )
    p.add_argument("--skip-resilience", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--out", type=Path, default=BENCH / "results", help="results directory")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = args.out / f"supervisor-{stamp}-logs"
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_state(),
        "machine": machine(),
        "versions": package_versions(
            ("asgid", "uvicorn", "gunicorn", "uvicorn-worker", "uvloop", "httptools", "psutil")
        ),
        "loadavg_start": os.getloadavg()[0],
        "background_cores_start": background_load(),
        "threads": args.threads,
        "connections": args.connections,
        "rounds": args.rounds,
        "duration": args.duration,
        "warmup": args.warmup,
        "resilience_duration": args.resilience_duration,
        "resilience_rounds": args.resilience_rounds,
        "reloads": args.reloads,
        "reload_interval": args.reload_interval,
        "max_requests": args.max_requests,
        "commands": {
            **{f"throughput {n}": server_command(n, 0, THROUGHPUT_EXTRA) for n in SERVERS},
            "steady/reload": server_command("asgid", 0, RESILIENCE_EXTRA),
            "max-requests": server_command(
                "asgid", 0, [*RESILIENCE_EXTRA, "--limit-max-requests", str(args.max_requests)]
            ),
        },
    }
    res: list[dict[str, Any]] = []
    thr: list[dict[str, Any]] = []
    t_start = time.monotonic()
    try:
        if not args.skip_resilience:
            for rnd in range(args.resilience_rounds):
                kinds = ["steady", "reload"] if rnd % 2 == 0 else ["reload", "steady"]
                for kind in [*kinds, "max-requests"]:
                    print(
                        f"[{time.monotonic() - t_start:6.1f}s] resilience round {rnd}: {kind}",
                        file=sys.stderr,
                    )
                    res.append(resilience_run(kind, rnd, args, log_dir))
                    if "error" in res[-1]:
                        print(f"  failed: {res[-1]['error']}", file=sys.stderr)
        if not args.skip_throughput:
            for rnd in range(args.rounds):
                order = list(SERVERS[rnd % len(SERVERS) :] + SERVERS[: rnd % len(SERVERS)])
                for name in order:
                    print(
                        f"[{time.monotonic() - t_start:6.1f}s] throughput round {rnd}: {name}",
                        file=sys.stderr,
                    )
                    thr.append(throughput_run(name, rnd, args, log_dir))
                    if "error" in thr[-1]:
                        print(f"  failed: {thr[-1]['error']}", file=sys.stderr)
    finally:
        for server in list(LIVE_SERVERS):
            server.stop()
    meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
    meta["loadavg_end"] = os.getloadavg()[0]
    meta["background_cores_end"] = background_load()
    summary = summarize(res, thr)
    report = render(summary, meta, res, thr)
    print(report)
    path = args.out / f"supervisor-{stamp}.json"
    path.write_text(
        json.dumps(
            {"meta": meta, "summary": summary, "resilience_runs": res, "throughput_runs": thr},
            indent=2,
            default=str,
        )
    )
    print(f"\nresults: {path}\nlogs: {log_dir}\nelapsed: {meta['elapsed_s']} s", file=sys.stderr)
    if any("error" in r for r in res + thr):
        return 1
    if not all(t["met"] for t in summary["targets"].values()):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
