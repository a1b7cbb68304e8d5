#!/usr/bin/env python3
"""HTTP throughput: asgid against uvicorn and granian, measured in one run.

    python bench/http_bench.py --rounds 3 --duration 5

Every (round, scenario, server) run starts a fresh server pinned to one core,
checks that it answers the scenario correctly, measures the idle RSS of the
process that serves requests, warms it up with a short wrk run, then measures
it with wrk pinned to another core. Servers are interleaved within each round
and their order rotates between rounds, so slow drift on the machine (another
job starting, thermal or noisy neighbours) spreads over all servers instead of
landing on one. The report is the median over rounds; see bench/README.md.

Every server runs in its own session/process group (tests/harness.py's
``Process``) and is stopped by process group (SIGTERM, then SIGKILL after a
deadline); every wait has a deadline and every wrk run a fixed duration. Only
127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from _common import (
    Process,
    cpu_seconds,
    free_port,
    git_state,
    machine,
    median,
    package_versions,
    pinned,
)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"
UPLOAD_SIZE = 65536
MiB = 1024 * 1024

READY_TIMEOUT = 30.0  # seconds a server may take to answer its first request
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
WRK_GRACE = 30.0  # seconds a wrk run may overrun its --duration before it is killed
REQUEST_TIMEOUT = 5.0  # one check request


# -- scenarios and servers ----------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    app: str  # module:attribute, served unchanged by every server
    path: str
    method: str = "GET"
    lua: str | None = None  # wrk script under bench/
    body: bytes = b""
    expect: Callable[[bytes], bool] = lambda body: True
    what: str = ""
    new_connection: bool = False  # each request on a connection of its own


def _is_hello_json(body: bytes) -> bool:
    try:
        return bool(json.loads(body) == {"message": "Hello, world!"})
    except ValueError:
        return False


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "plaintext",
            "bench.apps:app",
            "/plaintext",
            expect=lambda b: b == b"Hello, world!",
            what="raw ASGI, GET, 13-byte text/plain",
        ),
        Scenario(
            "json",
            "bench.apps:app",
            "/json",
            expect=_is_hello_json,
            what="raw ASGI, GET, json.dumps per request",
        ),
        Scenario(
            "upload",
            "bench.apps:app",
            "/upload",
            method="POST",
            lua="upload.lua",
            body=b"x" * UPLOAD_SIZE,
            expect=lambda b: b == str(UPLOAD_SIZE).encode(),
            what="raw ASGI, POST 64 KiB, app reads the whole body",
        ),
        Scenario(
            "starlette",
            "bench.apps:starlette_app",
            "/json",
            expect=_is_hello_json,
            what="Starlette route, JSONResponse",
        ),
        Scenario(
            "fastapi",
            "bench.apps:fastapi_app",
            "/json",
            expect=_is_hello_json,
            what="FastAPI async path operation returning a dict",
        ),
        Scenario(
            "close",
            "bench.apps:app",
            "/plaintext",
            lua="close.lua",
            new_connection=True,
            expect=lambda b: b == b"Hello, world!",
            what="raw ASGI plaintext, a new connection per request (Connection: close)",
        ),
    )
}


def server_command(name: str, app: str, port: int) -> list[str]:
    py = sys.executable
    bind = ["--host", HOST, "--port", str(port)]
    if name == "asgid":
        return [
            py, "-m", "asgid", app, *bind,
            "--workers", "1", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    if name == "uvicorn":
        return [
            py, "-m", "uvicorn", app, *bind,
            "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    if name == "granian":
        return [
            py, "-m", "granian", "--interface", "asgi", *bind,
            "--workers", "1", "--http", "1", "--no-ws", "--loop", "uvloop",
            "--no-access-log", "--log-level", "warning", app,
        ]  # fmt: skip
    raise ValueError(name)


SERVERS = ("asgid", "uvicorn", "granian")


# -- small HTTP client (stdlib only, one request per connection) --------------


def http_request(
    port: int, method: str, path: str, body: bytes = b"", timeout: float = REQUEST_TIMEOUT
) -> tuple[int, dict[str, str], bytes]:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n"
        + (
            f"Content-Length: {len(body)}\r\nContent-Type: application/octet-stream\r\n"
            if body
            else ""
        )
        + "\r\n"
    ).encode()
    deadline = time.monotonic() + timeout
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(head + body)
        chunks = []
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        payload = _unchunk(payload)
    return status, headers, payload


def _unchunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(data[:size])
        data = data[size + 2 :]
    return b"".join(out)


@contextlib.contextmanager
def keep_alive_connection(port: int, path: str) -> Iterator[socket.socket]:
    """An open keep-alive connection that has had one response (for ownership)."""
    sock = socket.create_connection((HOST, port), timeout=REQUEST_TIMEOUT)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
        deadline = time.monotonic() + REQUEST_TIMEOUT
        data = b""
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        yield sock
    finally:
        sock.close()


# -- processes ----------------------------------------------------------------


class Server:
    """One server process group, started pinned to ``cpu``."""

    def __init__(self, name: str, app: str, cpu: int, log_dir: Path) -> None:
        self.name = name
        self.app = app
        self.port = free_port()
        self.cmd = server_command(name, app, self.port)
        self.log_path = log_dir / f"{name}.log"
        # taskset execs the server: same PID, same group
        self.process = Process(pinned(cpu, self.cmd), log=self.log_path, cwd=ROOT)
        self.proc = self.process.proc

    def log_tail(self, lines: int = 30) -> str:
        return self.process.tail(lines)

    def wait_ready(self, scenario: Scenario, timeout: float = READY_TIMEOUT) -> dict[str, str]:
        """Poll until the scenario's request succeeds; return the response headers."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                status, headers, body = http_request(
                    self.port, scenario.method, scenario.path, scenario.body
                )
            except OSError as exc:
                last = exc
                time.sleep(0.05)
                continue
            if status != 200 or not scenario.expect(body):
                raise RuntimeError(
                    f"{self.name} answered {scenario.method} {scenario.path} with "
                    f"{status} {body[:200]!r}"
                )
            return headers
        raise TimeoutError(
            f"{self.name} did not answer within {timeout}s ({last!r}):\n{self.log_tail()}"
        )

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def serving_processes(self, path: str) -> list[psutil.Process]:
        """The process(es) of this server's tree that hold a client connection.

        A keep-alive connection is opened and answered; the process whose open
        sockets include the server side of that connection is the one that
        serves requests (granian's worker child, asgid's/uvicorn's worker).
        Falls back to the leaves of the process tree.
        """
        tree = self.tree()
        with keep_alive_connection(self.port, path) as sock:
            client_port = sock.getsockname()[1]
            owners = []
            for proc in tree:
                with contextlib.suppress(psutil.Error):
                    for conn in proc.net_connections(kind="tcp"):
                        if (
                            conn.laddr
                            and conn.raddr
                            and conn.laddr.port == self.port
                            and conn.raddr.port == client_port
                        ):
                            owners.append(proc)
                            break
        if owners:
            return owners
        pids = {p.pid for p in tree}
        leaves = []
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                if not any(c.pid in pids for c in proc.children()):
                    leaves.append(proc)
        return leaves

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after a deadline, reap the leader."""
        running = self.proc.poll() is None
        self.process.stop(STOP_TIMEOUT)
        if running and self.proc.returncode == -signal.SIGKILL:
            print(f"  ! {self.name} ignored SIGTERM for {STOP_TIMEOUT}s; SIGKILL", flush=True)


def describe(proc: psutil.Process, root_pid: int) -> str:
    """``"<process title> (server's own process|child of the server process)"``."""
    role = "the process started" if proc.pid == root_pid else "child of the process started"
    with contextlib.suppress(psutil.Error):
        words = " ".join(proc.cmdline()).replace(sys.executable, "python").split()
        if words[:2] == ["python", "-m"]:
            words = words[:4]  # python -m <server> <app>
        return f"{' '.join(words) or proc.name()} ({role})"
    return f"pid {proc.pid} ({role})"


def rss_of(procs: list[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def pids_alive(procs: list[psutil.Process]) -> bool:
    try:
        return all(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)
    except psutil.Error:
        return False


# -- wrk ------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_PCT_RE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_TOTAL_RE = re.compile(r"^\s+(\d+) requests in ([\d.]+)(us|ms|s|m),", re.M)
_ERRORS_RE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M
)
_NON2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_TAIL_RE = re.compile(r"^tail-latency-us p99.9 (\d+) p99.99 (\d+) max (\d+)$", re.M)


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    requests: int
    socket_errors: int
    non_2xx: int
    client_cpu_s: float
    output: str = field(repr=False)


def run_wrk(
    port: int,
    scenario: Scenario,
    *,
    cpu: int,
    duration: int,
    connections: int,
    threads: int,
) -> WrkResult:
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    # wrk takes one script: the scenario's, with the tail-latency report after it.
    script = (BENCH / scenario.lua).read_text() if scenario.lua else ""
    script += (BENCH / "latency.lua").read_text()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="wrk-") as lua:
        lua.write(script)
        lua.flush()
        cmd += ["-s", lua.name, f"http://{HOST}:{port}{scenario.path}"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(
            pinned(cpu, cmd),
            capture_output=True,
            text=True,
            timeout=duration + WRK_GRACE,
            start_new_session=True,
            check=False,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = proc.stdout + proc.stderr
    rps = _RPS_RE.search(out)
    pcts = {m.group(1): float(m.group(2)) * _UNITS_MS[m.group(3)] for m in _PCT_RE.finditer(out)}
    tail = _TAIL_RE.search(out)
    if proc.returncode != 0 or rps is None or "99" not in pcts or tail is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{out}")
    total = _TOTAL_RE.search(out)
    errors = _ERRORS_RE.search(out)
    non2xx = _NON2XX_RE.search(out)
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=pcts["50"],
        p99_ms=pcts["99"],
        p999_ms=int(tail.group(1)) / 1000,
        requests=int(total.group(1)) if total else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        client_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        output=out,
    )


def core_busy(before: Any, after: Any) -> float:
    """Busy fraction of one CPU between two psutil per-cpu cpu_times samples."""
    b, a = before._asdict(), after._asdict()
    idle = (a["idle"] - b["idle"]) + (a.get("iowait", 0) - b.get("iowait", 0))
    total = sum(a.values()) - sum(b.values())
    # guest time is already counted in user on Linux
    total -= (a.get("guest", 0) - b.get("guest", 0)) + (
        a.get("guest_nice", 0) - b.get("guest_nice", 0)
    )
    return 0.0 if total <= 0 else max(0.0, min(1.0, 1.0 - idle / total))


# -- one measured run ---------------------------------------------------------


@dataclass
class Run:
    round: int
    scenario: str
    server: str
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    requests: int
    socket_errors: int
    non_2xx: int
    idle_rss: int  # bytes, serving process(es), after boot + one request
    loaded_rss: int  # bytes, same processes right after the measured run
    tree_idle_rss: int  # bytes, whole process tree
    measured: list[str]  # which processes idle_rss is of
    server_cpu: float  # CPU-seconds per second used by the server tree during the run
    client_cpu: float  # same for wrk
    foreign_server_core: float  # busy fraction of the server core not explained by the server
    foreign_client_core: float
    loadavg: float
    response_headers: list[str]
    stop_s: float = 0.0  # SIGTERM to the group until the started process exited


def measure(
    round_no: int, scenario: Scenario, server_name: str, args: argparse.Namespace, log_dir: Path
) -> Run:
    server = Server(
        server_name, scenario.app, args.server_cpu, log_dir / f"r{round_no}-{scenario.name}"
    )
    try:
        headers = server.wait_ready(scenario)
        time.sleep(args.settle)
        serving = server.serving_processes(scenario.path)
        tree = server.tree()
        idle_rss = rss_of(serving)
        tree_idle_rss = rss_of(tree)
        if args.warmup > 0:
            run_wrk(
                server.port,
                scenario,
                cpu=args.client_cpu,
                duration=args.warmup,
                connections=args.connections,
                threads=args.threads,
            )
        loadavg = os.getloadavg()[0]
        tree = server.tree()
        tree_pids = {p.pid for p in tree}
        cpu_before = cpu_seconds(tree)
        cores_before = psutil.cpu_times(percpu=True)
        t0 = time.monotonic()
        result = run_wrk(
            server.port,
            scenario,
            cpu=args.client_cpu,
            duration=args.duration,
            connections=args.connections,
            threads=args.threads,
        )
        elapsed = time.monotonic() - t0
        cores_after = psutil.cpu_times(percpu=True)
        cpu_after = cpu_seconds(tree)
        # A server process that died or was replaced mid-run makes the numbers
        # meaningless (and on this shared machine it has happened): reject the run.
        if not pids_alive(serving) or {p.pid for p in server.tree()} != tree_pids:
            raise RuntimeError(
                f"{server_name}: a server process exited or was replaced during the run "
                f"(before: {sorted(tree_pids)}, after: {sorted(p.pid for p in server.tree())}); "
                f"log {server.log_path}:\n{server.log_tail()}"
            )
        server_cpu = sum(t - cpu_before.get(pid, t) for pid, t in cpu_after.items()) / elapsed
        client_cpu = result.client_cpu_s / elapsed
        loaded_rss = rss_of(serving)

        def foreign(cpu: int, own: float) -> float:
            if cpu >= len(cores_after):
                return 0.0
            return max(0.0, core_busy(cores_before[cpu], cores_after[cpu]) - own)

        run = Run(
            round=round_no,
            scenario=scenario.name,
            server=server_name,
            rps=result.rps,
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            p999_ms=result.p999_ms,
            requests=result.requests,
            socket_errors=result.socket_errors,
            non_2xx=result.non_2xx,
            idle_rss=idle_rss,
            loaded_rss=loaded_rss,
            tree_idle_rss=tree_idle_rss,
            measured=[describe(p, server.proc.pid) for p in serving],
            server_cpu=server_cpu,
            client_cpu=client_cpu,
            foreign_server_core=foreign(args.server_cpu, server_cpu),
            foreign_client_core=foreign(args.client_cpu, client_cpu),
            loadavg=loadavg,
            response_headers=sorted(headers),
        )
    finally:
        t0 = time.monotonic()
        server.stop()
        stop_s = time.monotonic() - t0
    run.stop_s = stop_s
    return run


# -- report ---------------------------------------------------------------------


def summarize(runs: list[Run], servers: list[str], scenarios: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for sc in scenarios:
        per: dict[str, Any] = {}
        for sv in servers:
            rs = [r for r in runs if r.scenario == sc and r.server == sv]
            if not rs:
                continue
            per[sv] = {
                "rounds": len(rs),
                "rps_median": median([r.rps for r in rs]),
                "rps_min": min(r.rps for r in rs),
                "rps_max": max(r.rps for r in rs),
                "p99_ms_median": median([r.p99_ms for r in rs]),
                "p999_ms_median": median([r.p999_ms for r in rs]),
                "p50_ms_median": median([r.p50_ms for r in rs]),
                "errors": sum(r.socket_errors + r.non_2xx for r in rs),
                "idle_rss_median": median([float(r.idle_rss) for r in rs]),
                "loaded_rss_median": median([float(r.loaded_rss) for r in rs]),
                "tree_idle_rss_median": median([float(r.tree_idle_rss) for r in rs]),
                "server_cpu_median": median([r.server_cpu for r in rs]),
                "client_cpu_median": median([r.client_cpu for r in rs]),
                # requests per CPU-second of the server: robust to CPU stolen by others
                "per_cpu_s_median": median([r.rps / r.server_cpu for r in rs if r.server_cpu > 0]),
                # the same, as server CPU microseconds per request: what the issues quote
                "cpu_us_median": median([1e6 * r.server_cpu / r.rps for r in rs if r.rps > 0]),
                "foreign_load_max": max(
                    max(r.foreign_server_core, r.foreign_client_core) for r in rs
                ),
                "measured": rs[-1].measured,
                "stop_s_max": max(r.stop_s for r in rs),
                "response_headers": rs[-1].response_headers,
            }
        for row in per.values():
            for peer in ("uvicorn", "granian"):
                if peer in per:
                    row[f"rps_vs_{peer}"] = row["rps_median"] / per[peer]["rps_median"]
                    row[f"p99_vs_{peer}"] = row["p99_ms_median"] / per[peer]["p99_ms_median"]
                    # > 1: asgid uses less CPU per request than the peer
                    row[f"cpu_us_vs_{peer}"] = per[peer]["cpu_us_median"] / row["cpu_us_median"]
                    row[f"per_cpu_s_vs_{peer}"] = (
                        row["per_cpu_s_median"] / per[peer]["per_cpu_s_median"]
                    )
        summary[sc] = per
    return summary


def _ratio(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return "-" if value is None else f"{value:.2f}"


def render(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    out = []
    out.append(
        f"{meta['date']} · asgid {meta['versions']['asgid']} ({meta['git']}) · "
        f"{meta['machine']} · {meta['rounds']} rounds x {meta['duration']} s · "
        f"wrk -t{meta['threads']} -c{meta['connections']} · server on CPU {meta['server_cpu']}, "
        f"wrk on CPU {meta['client_cpu']}"
    )
    out.append("")
    out.append(
        "Server CPU per request (whole server tree, median over rounds; lower is better) "
        "and latency under wrk's load. `cpu x` is the peer's CPU per request over asgid's "
        "(> 1: asgid uses less)."
    )
    out.append("")
    out.append(
        "| scenario | server | CPU µs/req | cpu x uvicorn | cpu x granian | req/s (median) "
        "| req/s min-max | p50 ms | p99 ms | p99.9 ms | p99 / uvicorn | p99 / granian |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for sc, per in summary.items():
        for sv, row in per.items():
            flag = " (!)" if row["errors"] else ""
            out.append(
                f"| {sc} | {sv}{flag} | {row['cpu_us_median']:.1f} | "
                f"{_ratio(row, 'cpu_us_vs_uvicorn')} | {_ratio(row, 'cpu_us_vs_granian')} | "
                f"{row['rps_median']:,.0f} | "
                f"{row['rps_min']:,.0f}-{row['rps_max']:,.0f} | {row['p50_ms_median']:.2f} | "
                f"{row['p99_ms_median']:.2f} | {row['p999_ms_median']:.2f} | "
                f"{_ratio(row, 'p99_vs_uvicorn')} | {_ratio(row, 'p99_vs_granian')} |"
            )
    out.append("")
    out.append(
        "Idle RSS of the serving process (after boot and one request; median over rounds), "
        "and the same process right after a measured run:"
    )
    out.append("")
    out.append(
        "| server | app | idle RSS MiB | after-load RSS MiB | whole tree idle MiB "
        "| process measured |"
    )
    out.append("|---|---|---:|---:|---:|---|")
    seen = set()
    for sc, per in summary.items():
        app = SCENARIOS[sc].app
        for sv, row in per.items():
            key = (sv, app)
            if key in seen:
                continue
            seen.add(key)
            out.append(
                f"| {sv} | {app.split(':')[1]} | {row['idle_rss_median'] / MiB:.1f} | "
                f"{row['loaded_rss_median'] / MiB:.1f} | {row['tree_idle_rss_median'] / MiB:.1f} | "
                f"{'; '.join(row['measured'])} |"
            )
    out.append("")
    out.append(
        "Efficiency and noise: requests per CPU-second of the server (less sensitive to CPU "
        "taken by other jobs), the CPU share server and wrk used, and the largest share of "
        "a pinned core used by neither (other jobs on the machine):"
    )
    out.append("")
    out.append(
        "| scenario | server | req per server CPU-s | / uvicorn | / granian "
        "| server CPU | wrk CPU | max foreign load |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for sc, per in summary.items():
        for sv, row in per.items():
            out.append(
                f"| {sc} | {sv} | {row['per_cpu_s_median']:,.0f} | "
                f"{_ratio(row, 'per_cpu_s_vs_uvicorn')} | {_ratio(row, 'per_cpu_s_vs_granian')} | "
                f"{row['server_cpu_median']:.0%} | {row['client_cpu_median']:.0%} | "
                f"{row['foreign_load_max']:.0%} |"
            )
    for sc, per in summary.items():
        heads = {
            sv: [h for h in row["response_headers"] if h != "connection"] for sv, row in per.items()
        }
        if len({tuple(h) for h in heads.values()}) > 1:
            out.append("")
            out.append(
                f"Note: the servers' {sc} responses differ in headers: "
                + "; ".join(f"{sv}: {', '.join(h)}" for sv, h in heads.items())
            )
    errors = [
        f"{sv}/{sc}: {row['errors']}"
        for sc, per in summary.items()
        for sv, row in per.items()
        if row["errors"]
    ]
    if errors:
        out.append("")
        out.append("(!) socket errors or non-2xx responses: " + ", ".join(errors))
    return "\n".join(out)


# -- main -------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all servers (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured wrk run")
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of unmeasured wrk load first (0 = none)"
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument(
        "--threads", type=int, default=1, help="wrk threads (default 1: wrk has one core)"
    )
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help="comma-separated, of: " + ", ".join(SERVERS)
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated, of: " + ", ".join(SCENARIOS),
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU the server is pinned to")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU wrk is pinned to")
    parser.add_argument(
        "--settle", type=float, default=0.5, help="seconds between ready and idle RSS"
    )
    parser.add_argument(
        "--results", type=Path, default=BENCH / "results", help="where the JSON goes"
    )
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in args.servers:
        if s not in SERVERS:
            parser.error(f"unknown server {s!r}; choose from {', '.join(SERVERS)}")
    for s in args.scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    if args.rounds < 1 or args.duration <= 0 or args.connections < 1 or args.threads < 1:
        parser.error("--rounds, --duration, --connections and --threads must be positive")
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections")
    cpus = os.sched_getaffinity(0)
    for opt in ("server_cpu", "client_cpu"):
        if getattr(args, opt) not in cpus:
            parser.error(
                f"--{opt.replace('_', '-')} {getattr(args, opt)} is not one of CPUs {sorted(cpus)}"
            )
    if args.server_cpu == args.client_cpu:
        print(
            "warning: server and wrk share a CPU; numbers will not be comparable", file=sys.stderr
        )
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not on PATH")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM/SIGHUP end the run like Ctrl-C: the running server's group is stopped.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    started = dt.datetime.now(dt.timezone.utc).astimezone()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    args.results.mkdir(parents=True, exist_ok=True)
    log_dir = args.results / f"http-{stamp}-logs"
    meta = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": package_versions(
            ("asgid", "uvicorn", "granian", "starlette", "fastapi", "uvloop", "httptools", "psutil")
        ),
        "rounds": args.rounds,
        "duration": args.duration,
        "warmup": args.warmup,
        "connections": args.connections,
        "threads": args.threads,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "servers": args.servers,
        "scenarios": {name: SCENARIOS[name].what for name in args.scenarios},
        "commands": {
            sv: " ".join(server_command(sv, "APP", 0)).replace(sys.executable, "python")
            for sv in args.servers
        },
        "loadavg_start": os.getloadavg(),
        "git": git_state(),
    }
    total = args.rounds * len(args.servers) * len(args.scenarios)
    per_run = args.duration + args.warmup + 2
    print(
        f"{total} runs, about {total * per_run / 60:.1f} min; "
        f"logs in {log_dir.relative_to(ROOT) if log_dir.is_relative_to(ROOT) else log_dir}",
        flush=True,
    )
    runs: list[Run] = []
    failures: list[str] = []
    n = 0
    try:
        for rnd in range(args.rounds):
            k = rnd % len(args.servers)
            order = args.servers[k:] + args.servers[:k]  # rotate who goes first
            for sc in args.scenarios:
                for sv in order:
                    n += 1
                    try:
                        run = measure(rnd + 1, SCENARIOS[sc], sv, args, log_dir)
                    except (
                        RuntimeError,
                        TimeoutError,
                        OSError,
                        subprocess.TimeoutExpired,
                        psutil.Error,
                    ) as exc:
                        failures.append(f"round {rnd + 1} {sc} {sv}: {exc}")
                        lines = str(exc).strip().splitlines() or [repr(exc)]
                        brief = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
                        print(
                            f"[{n}/{total}] round {rnd + 1} {sc:9} {sv:8} FAILED: {brief}",
                            flush=True,
                        )
                        continue
                    runs.append(run)
                    warn = (
                        f"  ! {run.socket_errors} socket errors, {run.non_2xx} non-2xx"
                        if (run.socket_errors or run.non_2xx)
                        else ""
                    )
                    foreign = max(run.foreign_server_core, run.foreign_client_core)
                    print(
                        f"[{n}/{total}] round {rnd + 1} {sc:9} {sv:8} {run.rps:>10,.0f} req/s  "
                        f"{1e6 * run.server_cpu / run.rps:6.1f} µs/req  "
                        f"p99 {run.p99_ms:6.2f} ms  p99.9 {run.p999_ms:6.2f} ms  "
                        f"cpu {run.server_cpu:4.0%}  "
                        f"foreign {foreign:4.0%}{warn}",
                        flush=True,
                    )
    except KeyboardInterrupt:
        print("interrupted; reporting what was measured", file=sys.stderr)
    meta["loadavg_end"] = os.getloadavg()
    summary = summarize(runs, args.servers, args.scenarios)
    report = render(summary, meta)
    print()
    print(report)
    out = args.results / f"http-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "meta": meta,
                "summary": summary,
                "runs": [asdict(r) for r in runs],
                "failures": failures,
            },
            indent=2,
        )
    )
    print(f"\nraw results: {out}")
    if failures:
        print(f"{len(failures)} run(s) failed:", file=sys.stderr)
        for f in failures:
            print("  " + f.splitlines()[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
