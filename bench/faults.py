#!/usr/bin/env python3
"""Fault benchmark: what clients see while workers die, block, reload, recycle and
scale, and while the server stops, for asgid, uvicorn and gunicorn (2 workers each).

    python bench/faults.py                            # 3 servers x 7 scenarios x 20 s, ~8 min
    python bench/faults.py --servers asgid --scenarios kill --seconds 5

Every server serves the same app (``bench.faults_app:app``) with 2 workers on
127.0.0.1 and a heartbeat timeout of 5 s where it has one:

    asgid:    python -m asgid APP --workers 2 --host H --port P --timeout 5 --log-level warning
    uvicorn:  python -m uvicorn APP --workers 2 --host H --port P --log-level warning
              [--timeout-worker-healthcheck 5, when the installed uvicorn has it]
    gunicorn: python -m gunicorn APP -k uvicorn_worker.UvicornWorker -w 2 -b H:P
              --timeout 5 --graceful-timeout 10 --log-level warning

For every (scenario, server) a fresh server starts in its own session, the script
waits (deadline 30 s) until ``GET /`` answers and 2 workers run, then starts the
load process. The load warms up for 1 s, then runs for the scenario's window
(``--seconds``, 20 by default) while the script injects the faults:

    steady   nothing (the baseline p99)
    kill     SIGKILL to the oldest worker every 2 s (so the two slots alternate)
    block    from 1 s on, every 5 s the script (outside the measured load) sends one
             ``GET /block``: the worker that takes it calls ``time.sleep(60)`` in its
             event loop; the server should kill it after its 5 s timeout
    reload   SIGHUP to the master every 4 s
    recycle  max-requests 300 (asgid/uvicorn ``--limit-max-requests``, gunicorn
             ``--max-requests``)
    scale    SIGTTIN and SIGTTOU in turn to the master every 3 s (2 -> 3 -> 2 workers)
    sigterm  load for min(5, seconds/2) s with 1-second requests in flight, SIGTERM to
             the master, load for as long again while the server drains and exits

The load is one asyncio process (uvloop, raw sockets parsed with httptools, the
``websockets`` client), paced so that it does not saturate the server: this
measures faults, not throughput. Its clients, each waiting 20 ms between requests:

    4 keep-alive clients   ``GET /`` in a loop on one connection (reopened after a
                           failure, or when the server closed it while idle)
    4 new-connection       ``GET /`` with ``Connection: close``, one connection each
    4 slow clients         ``GET /sleep`` (1 s each) on a keep-alive connection
    2 WebSocket clients    one message and its echo every 100 ms, reconnecting first
                           when the connection is closed or failed

Every request (and WebSocket round trip, including any reconnect it needs) has a
10 s client timeout and is recorded with its start, duration and outcome: ``ok``
(a 200 or the echo), or ``refused`` (ECONNREFUSED), ``reset`` (ECONNRESET, broken
pipe), ``eof`` (closed without an answer, incomplete answer, WebSocket closed
before the echo), ``timeout``, ``other`` (anything else, e.g. a 503; the text is
kept). The row of each run counts them, the answers over 1 s (over 2 s for
``/sleep``), and the p50/p99/max latency of the ``GET /`` answers (keep-alive and
new-connection clients, answered requests only). ``new pids`` counts the worker
processes that appeared during the window (replacements the server started).

Workers are found by polling the master's direct children (psutil): asgid's and
gunicorn's children are all workers. uvicorn's ``--workers`` uses
multiprocessing's *spawn* context, so its master has one more child,
multiprocessing's resource tracker (``-c from multiprocessing.resource_tracker
import main``); its workers are the children whose command line runs
``spawn_main``. Once ready, the script checks that each worker it found holds
the listening socket, and records that.

A scenario a server does not support is shown as n/a, never emulated: the
script checks the installed uvicorn's and gunicorn's supervisors for the
signal handlers and the worker restart a scenario needs. For ``sigterm`` a
second table splits the outcomes: requests in flight when SIGTERM was sent that
were lost (target 0), and the new-connection clients' requests during the drain
by outcome (refused at once is fine; a connection that hangs and is then reset
is not), with how long the failed ones took.

If the machine has 2 or more cores the servers run under ``taskset -c 0`` and the
load (and this script) on core 1. Every server and the load run in their own
session/process group and are stopped by process group (SIGTERM, then SIGKILL
after 10 s), on errors too; every wait has a deadline. Only 127.0.0.1 is used.
The tables go to stdout, every number (every request's record included) to
bench/results/faults-<time>.json, server logs to bench/results/faults-<time>-logs/.
Exit status: 0 all runs completed and asgid met its targets (no more failures
than the best peer, p99 under 2x its steady p99), 1 a run failed, 2 a target
was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import errno
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httptools
import psutil
import uvloop
from _common import (
    Process,
    free_port,
    git_state,
    http_get,
    machine,
    package_versions,
    pinned,
    server_and_client_cpus,
    wait_until,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage
from websockets.protocol import State

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"
APP = "bench.faults_app:app"
WORKERS = 2
HEARTBEAT_TIMEOUT = 5  # asgid --timeout, gunicorn --timeout, uvicorn's healthcheck
MAX_REQUESTS = 300

READY_TIMEOUT = 30.0  # first good answer and all workers up
STOP_TIMEOUT = 10.0  # SIGTERM to the group, then SIGKILL
LOAD_BOOT_TIMEOUT = 20.0  # the load process reports its start time
REQUEST_TIMEOUT = 10.0  # every client request or WebSocket round trip
WARMUP = 1.0  # unmeasured load before the window
POLL = 0.05
PID_POLL = 0.2  # worker pid tracking

PACE = 0.020  # each client's wait between requests
WS_PACE = 0.100
CLIENTS = {"keepalive": 4, "newconn": 4, "sleep": 4, "ws": 2}
ROOT_CLIENTS = ("keepalive", "newconn")  # their GET / answers make the latency columns
SLOW = {"sleep": 2.0}  # answers over this many seconds count as slow; others over 1 s
KINDS = ("refused", "reset", "eof", "timeout", "other")

P99_RATIO_TARGET = 2.0
SERVERS = ("asgid", "uvicorn", "gunicorn")


@dataclass(frozen=True)
class Scenario:
    name: str
    first: float = 0.0  # first fault, seconds into the window
    every: float = 0.0  # then every this many seconds (0: no periodic faults)


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("steady"),
        Scenario("kill", 2.0, 2.0),
        Scenario("block", 1.0, 5.0),
        Scenario("reload", 4.0, 4.0),
        Scenario("recycle"),
        Scenario("scale", 3.0, 3.0),
        Scenario("sigterm"),
    )
}


# -- servers ------------------------------------------------------------------------


def uvicorn_has_healthcheck_flag() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    ).stdout
    return "--timeout-worker-healthcheck" in out


# What a peer's supervisor class must have for a scenario to be itself, not emulated.
PEER_NEEDS: dict[str, dict[str, list[str]]] = {
    "uvicorn": {  # uvicorn.supervisors.multiprocess.Multiprocess
        "kill": ["keep_subprocess_alive"],  # restarts a dead worker
        "block": ["keep_subprocess_alive"],
        "recycle": ["keep_subprocess_alive"],  # an exited (recycled) worker too
        "reload": ["handle_hup"],
        "scale": ["handle_ttin", "handle_ttou"],
    },
    "gunicorn": {  # gunicorn.arbiter.Arbiter
        "reload": ["handle_hup"],
        "scale": ["handle_ttin", "handle_ttou"],
    },
}


def unsupported(server: str, scenario: str) -> str | None:
    """Why ``server`` cannot run ``scenario`` as itself, or None when it can."""
    needs = PEER_NEEDS.get(server, {}).get(scenario, [])
    if not needs:
        return None
    supervisor: type
    try:
        if server == "uvicorn":
            from uvicorn.supervisors.multiprocess import Multiprocess

            supervisor = Multiprocess
        else:
            from gunicorn.arbiter import Arbiter

            supervisor = Arbiter
    except ImportError as exc:
        return f"{server} cannot be imported: {exc}"
    missing = [m for m in needs if not hasattr(supervisor, m)]
    if missing:
        return f"{server}'s {supervisor.__name__} has no {', '.join(missing)}"
    return None


def server_command(name: str, port: int, scenario: str, uvicorn_healthcheck: bool) -> list[str]:
    py = sys.executable
    recycle = scenario == "recycle"
    if name == "asgid":
        return [
            py, "-m", "asgid", APP, "--workers", str(WORKERS), "--host", HOST,
            "--port", str(port), "--timeout", str(HEARTBEAT_TIMEOUT), "--log-level", "warning",
            *(["--limit-max-requests", str(MAX_REQUESTS)] if recycle else []),
        ]  # fmt: skip
    if name == "uvicorn":
        return [
            py, "-m", "uvicorn", APP, "--workers", str(WORKERS), "--host", HOST,
            "--port", str(port), "--log-level", "warning",
            *(["--timeout-worker-healthcheck", str(HEARTBEAT_TIMEOUT)]
              if uvicorn_healthcheck else []),
            *(["--limit-max-requests", str(MAX_REQUESTS)] if recycle else []),
        ]  # fmt: skip
    if name == "gunicorn":
        return [
            py, "-m", "gunicorn", APP, "-k", "uvicorn_worker.UvicornWorker",
            "-w", str(WORKERS), "-b", f"{HOST}:{port}", "--timeout", str(HEARTBEAT_TIMEOUT),
            "--graceful-timeout", "10", "--log-level", "warning",
            *(["--max-requests", str(MAX_REQUESTS)] if recycle else []),
        ]  # fmt: skip
    raise ValueError(name)


def _alive(p: psutil.Process) -> bool:
    try:
        return bool(p.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


class Server:
    """One server's process group."""

    def __init__(self, name: str, cmd: list[str], port: int, cpu: int | None, log: Path) -> None:
        self.name = name
        self.cmd = cmd
        self.port = port
        self.log_path = log
        self.process = Process(pinned(cpu, cmd), log=log, cwd=ROOT)
        self.proc = self.process.proc
        self.root = psutil.Process(self.proc.pid)

    def log_tail(self, lines: int = 30) -> str:
        return self.process.tail(lines)

    def workers(self) -> list[psutil.Process]:
        """The live worker processes, oldest first (see the module docstring)."""
        try:
            kids = self.root.children(recursive=False)
        except psutil.NoSuchProcess:
            return []
        out = []
        for p in kids:
            with contextlib.suppress(psutil.Error):
                if not _alive(p):
                    continue
                if self.name == "uvicorn" and "spawn_main" not in " ".join(p.cmdline()):
                    continue  # multiprocessing's resource tracker
                out.append((p.create_time(), p.pid, p))
        return [p for _, _, p in sorted(out, key=lambda t: (t[0], t[1]))]

    def worker_pids(self) -> set[int]:
        return {p.pid for p in self.workers()}

    def workers_listening(self) -> dict[int, bool]:
        """For each worker, whether it holds a listening socket on our port."""
        out = {}
        for p in self.workers():
            try:
                out[p.pid] = any(
                    c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == self.port
                    for c in p.net_connections("tcp")
                )
            except psutil.Error:
                out[p.pid] = False
        return out

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
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
                    status, body = http_get(self.port, "/")
                except (OSError, ValueError, IndexError) as exc:
                    last = exc
                    time.sleep(POLL)
                    continue
                if status != 200 or body != b"ok":
                    raise RuntimeError(f"{self.name} answered {status} {body[:200]!r}")
                answered = True
            if len(self.worker_pids()) == WORKERS:
                return
            time.sleep(POLL)
        raise TimeoutError(
            f"{self.name} not ready within {timeout}s (answered={answered}, {last!r}, "
            f"workers={sorted(self.worker_pids())}):\n{self.log_tail()}"
        )

    def stop(self) -> None:
        self.process.stop(STOP_TIMEOUT)


# -- the load process -----------------------------------------------------------------
#
# Runs as ``python bench/faults.py --load-config FILE`` in its own process group. It
# prints "START <monotonic>" (the window's start: the clock is shared by all processes)
# once its clients run, and writes its records as JSON to the file named in the config.


class _Eof(Exception):
    """The server closed the connection before a whole answer."""


class _Response:
    """httptools callbacks: only completion matters (bodies are tiny)."""

    def __init__(self) -> None:
        self.done = False

    def on_message_complete(self) -> None:
        self.done = True


def classify(exc: BaseException) -> tuple[str, str]:
    """A failure kind from KINDS and its text, looking through the exception chain."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    text = "; ".join(f"{type(e).__name__}: {e}" for e in seen)[:200]
    for e in seen:
        if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
            return "timeout", f"no answer within {REQUEST_TIMEOUT:g} s"
        if isinstance(e, ConnectionClosed) and e.rcvd is not None:
            return "eof", text  # the server closed (close frame) before the echo
        if isinstance(e, ConnectionRefusedError):
            return "refused", text
        if isinstance(e, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return "reset", text
        if isinstance(e, OSError) and e.errno in (errno.ECONNREFUSED,):
            return "refused", text
        if isinstance(e, OSError) and e.errno in (errno.ECONNRESET, errno.EPIPE):
            return "reset", text
    for e in seen:
        if isinstance(e, (_Eof, EOFError, asyncio.IncompleteReadError, ConnectionClosed)):
            return "eof", text
        if isinstance(e, InvalidMessage):  # handshake answer missing or cut
            return "eof", text
    return "other", text


class Load:
    def __init__(self, port: int, window: float, warmup: float) -> None:
        self.port = port
        self.window = window
        self.warmup = warmup
        self.start_at = 0.0
        self.end_at = 0.0
        self.records: list[list[Any]] = []
        self.warmup_counts: Counter[str] = Counter()
        host = f"Host: {HOST}:{port}\r\n"
        self.req_keep = f"GET / HTTP/1.1\r\n{host}\r\n".encode()
        self.req_close = f"GET / HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode()
        self.req_sleep = f"GET /sleep HTTP/1.1\r\n{host}\r\n".encode()

    def record(self, client: str, t0: float, outcome: str, detail: str) -> None:
        now = time.monotonic()
        if t0 < self.start_at:
            self.warmup_counts[outcome] += 1
            return
        self.records.append(
            [client, round(t0 - self.start_at, 4), round(now - t0, 4), outcome, detail]
        )

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[int, bool]:
        writer.write(request)
        await writer.drain()
        resp = _Response()
        parser = httptools.HttpResponseParser(resp)
        got = 0
        while not resp.done:
            data = await reader.read(65536)
            if not data:
                raise _Eof(f"closed after {got} bytes of the answer")
            got += len(data)
            parser.feed_data(data)
        return parser.get_status_code(), parser.should_keep_alive()

    async def http_client(self, client: str, request: bytes, keep_alive: bool) -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

        async def attempt() -> int:
            nonlocal conn
            if conn is not None:
                reader, writer = conn
                # The server closed it while idle: a client opens a new one, as httpcore does.
                if reader.at_eof() or reader.exception() is not None or writer.is_closing():
                    writer.close()
                    conn = None
            if conn is None:
                conn = await asyncio.open_connection(HOST, self.port)
            status, keep = await self._exchange(*conn, request)
            if not (keep and keep_alive):
                conn[1].close()
                conn = None
            return status

        while time.monotonic() < self.end_at:
            t0 = time.monotonic()
            try:
                status = await asyncio.wait_for(attempt(), REQUEST_TIMEOUT)
            except Exception as exc:
                kind, text = classify(exc)
                self.record(client, t0, kind, text)
                if conn is not None:
                    conn[1].close()
                    conn = None
            else:
                if status == 200:
                    self.record(client, t0, "ok", "")
                else:
                    self.record(client, t0, "other", f"HTTP {status}")
            await asyncio.sleep(PACE)
        if conn is not None:
            conn[1].close()

    async def ws_client(self) -> None:
        ws: ClientConnection | None = None
        n = 0

        async def attempt() -> bool:
            nonlocal ws
            if ws is not None and ws.state is not State.OPEN:
                ws.transport.abort()  # closed by the server while idle: reconnect
                ws = None
            if ws is None:
                ws = await connect(
                    f"ws://{HOST}:{self.port}/ws",
                    open_timeout=None,
                    ping_interval=None,
                    close_timeout=1,
                )
            message = f"m{n}"
            await ws.send(message)
            return await ws.recv() == message

        while time.monotonic() < self.end_at:
            t0 = time.monotonic()
            n += 1
            try:
                echoed = await asyncio.wait_for(attempt(), REQUEST_TIMEOUT)
            except Exception as exc:
                kind, text = classify(exc)
                self.record("ws", t0, kind, text)
                if ws is not None:
                    ws.transport.abort()
                    ws = None
            else:
                self.record("ws", t0, "ok" if echoed else "other", "" if echoed else "bad echo")
            await asyncio.sleep(WS_PACE)
        if ws is not None:
            ws.transport.abort()

    async def run(self) -> None:
        now = time.monotonic()
        self.start_at = now + self.warmup
        self.end_at = self.start_at + self.window
        clients: list[Callable[[], Any]] = []
        clients += [lambda: self.http_client("keepalive", self.req_keep, True)] * CLIENTS[
            "keepalive"
        ]
        clients += [lambda: self.http_client("newconn", self.req_close, False)] * CLIENTS["newconn"]
        clients += [lambda: self.http_client("sleep", self.req_sleep, True)] * CLIENTS["sleep"]
        clients += [self.ws_client] * CLIENTS["ws"]

        async def staggered(i: int, make: Callable[[], Any]) -> None:
            await asyncio.sleep(i * PACE / len(clients))  # not all in lockstep
            await make()

        tasks = [asyncio.ensure_future(staggered(i, c)) for i, c in enumerate(clients)]
        print(f"START {self.start_at!r}", flush=True)
        # Each client stops at end_at; its last request has REQUEST_TIMEOUT at most.
        _, pending = await asyncio.wait(
            tasks, timeout=self.end_at + REQUEST_TIMEOUT + 5 - time.monotonic()
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def load_main(config_path: str) -> int:
    cfg = json.loads(Path(config_path).read_text())
    load = Load(cfg["port"], cfg["window"], cfg["warmup"])
    uvloop.run(load.run())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(cfg["out"]).write_text(
        json.dumps(
            {
                "start_at": load.start_at,
                "records": load.records,
                "warmup": dict(load.warmup_counts),
                "cpu_s": usage.ru_utime + usage.ru_stime,
            }
        )
    )
    return 0


class LoadProcess:
    """The load process of one run, in its own process group."""

    def __init__(self, port: int, window: float, cpu: int | None, tmp: Path) -> None:
        self.window = window
        self.out = tmp / "load.json"
        config = tmp / "load-config.json"
        config.write_text(
            json.dumps({"port": port, "window": window, "warmup": WARMUP, "out": str(self.out)})
        )
        self.process = Process(
            pinned(
                cpu, [sys.executable, str(Path(__file__).resolve()), "--load-config", str(config)]
            ),
            log=tmp / "load.log",  # its "START" line and anything on stderr
            cwd=ROOT,
        )
        self.proc = self.process.proc
        self.start_at = 0.0

    def wait_start(self) -> float:
        """The window's start (monotonic), as the load process reports it.

        The line comes before the warm-up (WARMUP s) that precedes the window, so
        polling the log for it costs no part of the window.
        """
        started: list[float] = []

        def start_line() -> bool:
            for line in self.process.output().splitlines():
                if line.startswith("START "):
                    started.append(float(line.split()[1]))
                    return True
            if self.proc.poll() is not None:
                raise RuntimeError(f"the load process exited:\n{self.stderr()}")
            return False

        try:
            wait_until(start_line, LOAD_BOOT_TIMEOUT, interval=0.01)
        except TimeoutError:
            raise RuntimeError(f"the load process did not start:\n{self.stderr()}") from None
        self.start_at = started[0]
        return self.start_at

    def stderr(self) -> str:
        """The end of the load process's output (stdout and stderr)."""
        return self.process.output()[-3000:]

    def wait(self) -> dict[str, Any]:
        timeout = self.start_at + self.window + REQUEST_TIMEOUT + 15 - time.monotonic()
        try:
            self.proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the load process overran:\n{self.stderr()}") from None
        if self.proc.returncode != 0:
            raise RuntimeError(
                f"the load process failed ({self.proc.returncode}):\n{self.stderr()}"
            )
        result: dict[str, Any] = json.loads(self.out.read_text())
        return result

    def stop(self) -> None:
        self.process.stop(STOP_TIMEOUT)


# -- one run ----------------------------------------------------------------------------


class PidTracker:
    """Polls the server's workers: every pid seen, and the fewest alive at once."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.initial = server.worker_pids()
        self.seen = set(self.initial)
        self.fewest = len(self.initial)
        self.most = len(self.initial)
        self.next_at = 0.0

    def poll(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self.next_at:
            return
        self.next_at = now + PID_POLL
        if self.server.proc.poll() is not None:
            return
        cur = self.server.worker_pids()
        self.seen |= cur
        self.fewest = min(self.fewest, len(cur))
        self.most = max(self.most, len(cur))


def send_block(port: int) -> tuple[socket.socket | None, str]:
    """Open a connection and send GET /block; the socket stays open (never read)."""
    try:
        sock = socket.create_connection((HOST, port), timeout=2.0)
        sock.sendall(f"GET /block HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    except OSError as exc:
        return None, f"failed: {exc!r}"
    return sock, "sent"


def fault_times(scenario: Scenario, window: float) -> list[float]:
    if scenario.every <= 0:
        return []
    out = []
    t = scenario.first
    while t < window - 0.5:
        out.append(t)
        t += scenario.every
    return out


def sigterm_window(seconds: float) -> tuple[float, float]:
    before = min(5.0, seconds / 2)
    return before, before


def run_one(
    scenario: Scenario,
    name: str,
    args: argparse.Namespace,
    log_dir: Path,
    uvicorn_healthcheck: bool,
) -> dict[str, Any]:
    why = unsupported(name, scenario.name)
    if why:
        return {"scenario": scenario.name, "server": name, "status": "n/a", "why": why}
    port = free_port()
    cmd = server_command(name, port, scenario.name, uvicorn_healthcheck)
    if scenario.name == "sigterm":
        before, after = sigterm_window(args.seconds)
        window, plan = before + after, [before]
    else:
        window = float(args.seconds)
        plan = fault_times(scenario, window)
    run: dict[str, Any] = {
        "scenario": scenario.name,
        "server": name,
        "cmd": cmd,
        "window_s": window,
        "loadavg_1m": os.getloadavg()[0],
        "events": [],
    }
    blockers: list[socket.socket] = []
    tmp = Path(tempfile.mkdtemp(prefix="asgid-faults-"))
    server = Server(name, cmd, port, args.server_cpu, log_dir / f"{scenario.name}-{name}.log")
    load: LoadProcess | None = None
    try:
        server.wait_ready()
        run["workers_listening"] = {str(k): v for k, v in server.workers_listening().items()}
        tracker = PidTracker(server)
        load = LoadProcess(port, window, args.client_cpu, tmp)
        start = load.wait_start()
        stop_sent = drive(scenario.name, server, tracker, start, window, plan, run, blockers)
        result = load.wait()
        if stop_sent is not None:
            run["stop_at_s"] = round(stop_sent - start, 4)
            if "master_exit_s" not in run:
                # The master outlived the window: give it the stop deadline, then note it.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.proc.wait(timeout=STOP_TIMEOUT)
                exited = server.proc.poll() is not None
                run["master_exit_s"] = round(time.monotonic() - stop_sent, 3) if exited else None
        run["status"] = "ok"
        run["workers"] = {
            "initial": sorted(tracker.initial),
            "seen": sorted(tracker.seen),
            "new": len(tracker.seen - tracker.initial),
            "fewest_alive": tracker.fewest,
            "most_alive": tracker.most,
        }
        run["warmup"] = result["warmup"]
        run["load_cpu_s"] = round(result["cpu_s"], 3)
        run["stats"] = stats(result["records"], run.get("stop_at_s"))
        if stop_sent is not None:
            run["sigterm"] = sigterm_stats(result["records"], run["stop_at_s"])
        run["records"] = result["records"]
    except Exception as exc:
        run["status"] = "failed"
        run["error"] = f"{type(exc).__name__}: {exc}"
        run["traceback"] = traceback.format_exc()
        print(f"  {scenario.name}/{name} failed: {exc}", file=sys.stderr)
    finally:
        for sock in blockers:
            sock.close()
        try:
            if load is not None:
                load.stop()
        finally:
            server.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        run["log_tail"] = server.log_tail(40)
    return run


def drive(
    scenario: str,
    server: Server,
    tracker: PidTracker,
    start: float,
    window: float,
    plan: list[float],
    run: dict[str, Any],
    blockers: list[socket.socket],
) -> float | None:
    """Inject the planned faults until the window ends; when SIGTERM was sent."""
    end = start + window
    stop_sent: float | None = None
    i = 0
    while (now := time.monotonic()) < end:
        if i < len(plan) and now >= start + plan[i]:
            run["events"].append(fault(scenario, i, server, blockers, now - start))
            if scenario == "sigterm":
                stop_sent = time.monotonic()
            i += 1
        if stop_sent is None:
            tracker.poll()
        elif "master_exit_s" not in run and server.proc.poll() is not None:
            run["master_exit_s"] = round(time.monotonic() - stop_sent, 3)
        nxt = start + plan[i] if i < len(plan) else end
        time.sleep(max(0.0, min(POLL, nxt - time.monotonic())))
    tracker.poll(force=True)
    return stop_sent


def fault(
    scenario: str, i: int, server: Server, blockers: list[socket.socket], at: float
) -> dict[str, Any]:
    """Inject fault number ``i`` of ``scenario``; what was done, for the record."""
    master = server.proc.pid
    event: dict[str, Any] = {"at_s": round(at, 3)}
    if scenario == "kill":
        workers = server.workers()
        if not workers:
            event["action"] = "kill: no worker alive"
            return event
        victim = workers[0]  # the oldest: the two slots take turns
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim.pid, signal.SIGKILL)
        event["action"] = f"SIGKILL worker {victim.pid}"
    elif scenario == "block":
        sock, what = send_block(server.port)
        if sock is not None:
            blockers.append(sock)
        event["action"] = f"GET /block {what}"
    elif scenario == "reload":
        os.kill(master, signal.SIGHUP)
        event["action"] = "SIGHUP master"
    elif scenario == "scale":
        signum = signal.SIGTTIN if i % 2 == 0 else signal.SIGTTOU
        os.kill(master, signum)
        event["action"] = f"{signum.name} master"
    elif scenario == "sigterm":
        os.kill(master, signal.SIGTERM)
        event["action"] = "SIGTERM master"
    else:
        raise ValueError(scenario)
    return event


# -- numbers ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values``; nan when empty."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def stats(records: Iterable[list[Any]], stop_at: float | None = None) -> dict[str, Any]:
    """The row of one run. With ``stop_at`` (sigterm), connections refused after the
    stop are left out: they are the expected answer, counted by sigterm_stats."""
    outcomes: Counter[str] = Counter()
    by_client: dict[str, Counter[str]] = {}
    details: Counter[str] = Counter()
    slow = 0
    root: list[float] = []
    for client, t, dur, outcome, detail in records:
        if stop_at is not None and t >= stop_at and outcome == "refused":
            continue
        outcomes[outcome] += 1
        by_client.setdefault(client, Counter())[outcome] += 1
        if outcome == "ok":
            if dur > SLOW.get(client, 1.0):
                slow += 1
            if client in ROOT_CLIENTS:
                root.append(dur)
        else:
            details[f"{outcome}: {detail}"] += 1
    root.sort()
    sent = sum(outcomes.values())
    return {
        "sent": sent,
        "ok": outcomes["ok"],
        "failures": {k: outcomes[k] for k in KINDS},
        "failed": sent - outcomes["ok"],
        "slow": slow,
        "root_ms": {
            "n": len(root),
            "p50": percentile(root, 0.50) * 1000,
            "p99": percentile(root, 0.99) * 1000,
            "max": (root[-1] * 1000) if root else float("nan"),
        },
        "by_client": {c: dict(v) for c, v in sorted(by_client.items())},
        "failure_details": dict(details.most_common(15)),
    }


def sigterm_stats(records: list[list[Any]], stop_at: float) -> dict[str, Any]:
    in_flight = [r for r in records if r[1] < stop_at < r[1] + r[2]]
    lost = [r for r in in_flight if r[3] != "ok"]
    drain = [r for r in records if r[0] == "newconn" and r[1] >= stop_at]
    failed = sorted(r[2] for r in drain if r[3] != "ok")
    bad = [r for r in drain if r[3] not in ("ok", "refused")]
    others: dict[str, Counter[str]] = {}
    for r in records:
        if r[0] != "newconn" and r[1] >= stop_at:
            others.setdefault(r[0], Counter())[r[3]] += 1
    return {
        "refused_after_stop": sum(1 for r in records if r[1] >= stop_at and r[3] == "refused"),
        "in_flight": len(in_flight),
        "in_flight_lost": len(lost),
        "in_flight_lost_details": dict(Counter(f"{r[0]} {r[3]}: {r[4]}" for r in lost)),
        "drain_newconn": {k: sum(1 for r in drain if r[3] == k) for k in ("ok", *KINDS)},
        "drain_newconn_sent": len(drain),
        "drain_failed_ms": {
            "median": percentile(failed, 0.5) * 1000,
            "max": (failed[-1] * 1000) if failed else float("nan"),
        },
        "drain_bad": len(bad),
        "drain_other_clients": {c: dict(v) for c, v in sorted(others.items())},
    }


def bad_failures(run: dict[str, Any]) -> int:
    """The failures a scenario's verdict counts."""
    if "sigterm" in run:
        s = run["sigterm"]
        return int(s["in_flight_lost"] + s["drain_bad"])
    return int(run["stats"]["failed"])


# -- output -----------------------------------------------------------------------------


def fmt_ms(v: float) -> str:
    if math.isnan(v):
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def print_table(runs: list[dict[str, Any]]) -> None:
    head = (
        f"{'scenario':<9} {'server':<9} {'sent':>6} {'ok':>6} {'refused':>7} {'reset':>6} "
        f"{'eof':>5} {'timeout':>7} {'other':>6} {'>1s':>5} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'new pids':>8} {'min wk':>6}"
    )
    print(head)
    print("-" * len(head))
    last = None
    for run in runs:
        if last is not None and run["scenario"] != last:
            print()
        last = run["scenario"]
        label = f"{run['scenario']:<9} {run['server']:<9}"
        if run["status"] == "n/a":
            print(f"{label} {'n/a':>6}  ({run['why']})")
            continue
        if run["status"] != "ok":
            print(f"{label} {'FAILED':>6}  ({run['error'][:70]})")
            continue
        s = run["stats"]
        f = s["failures"]
        r = s["root_ms"]
        print(
            f"{label} {s['sent']:>6} {s['ok']:>6} {f['refused']:>7} {f['reset']:>6} "
            f"{f['eof']:>5} {f['timeout']:>7} {f['other']:>6} {s['slow']:>5} "
            f"{fmt_ms(r['p50']):>7} {fmt_ms(r['p99']):>7} {fmt_ms(r['max']):>7} "
            f"{run['workers']['new']:>8} {run['workers']['fewest_alive']:>6}"
        )


def print_sigterm(runs: list[dict[str, Any]]) -> None:
    rows = [r for r in runs if r["scenario"] == "sigterm" and r["status"] == "ok"]
    if not rows:
        return
    print()
    print(
        "sigterm: requests in flight at SIGTERM (lost: target 0); new-connection clients' "
        "requests during the drain by outcome, and how long the failed ones took; "
        "connections refused after the stop (all clients, left out of the row above)"
    )
    head = (
        f"{'server':<9} {'in flight':>9} {'lost':>5} | {'drain':>5} {'ok':>5} {'refused':>7} "
        f"{'reset':>5} {'eof':>5} {'timeout':>7} {'other':>5} | {'failed ms med/max':>17} "
        f"{'master exit s':>13} {'refused after stop':>18}"
    )
    print(head)
    print("-" * len(head))
    for run in rows:
        s = run["sigterm"]
        d = s["drain_newconn"]
        ms = s["drain_failed_ms"]
        exit_s = run.get("master_exit_s")
        exit_text = "still up" if exit_s is None else f"{exit_s:.2f}"
        print(
            f"{run['server']:<9} {s['in_flight']:>9} {s['in_flight_lost']:>5} | "
            f"{s['drain_newconn_sent']:>5} {d['ok']:>5} {d['refused']:>7} {d['reset']:>5} "
            f"{d['eof']:>5} {d['timeout']:>7} {d['other']:>5} | "
            f"{fmt_ms(ms['median']) + '/' + fmt_ms(ms['max']):>17} {exit_text:>13} "
            f"{s['refused_after_stop']:>18}"
        )


def verdicts(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scenario: asgid's failures against the best peer, its p99 against steady."""
    ok = {(r["scenario"], r["server"]): r for r in runs if r["status"] == "ok"}
    steady = ok.get(("steady", "asgid"))
    out = []
    for scenario in dict.fromkeys(r["scenario"] for r in runs):
        mine = ok.get((scenario, "asgid"))
        if mine is None:
            continue
        peers = {
            srv: bad_failures(run)
            for (sc, srv), run in ok.items()
            if sc == scenario and srv != "asgid"
        }
        failures = bad_failures(mine)
        best = min(peers.items(), key=lambda kv: kv[1]) if peers else None
        p99 = mine["stats"]["root_ms"]["p99"]
        base = steady["stats"]["root_ms"]["p99"] if steady else float("nan")
        ratio = p99 / base if base and not math.isnan(base) else float("nan")
        out.append(
            {
                "scenario": scenario,
                "failures": failures,
                "best_peer": best[0] if best else None,
                "best_peer_failures": best[1] if best else None,
                "failures_ok": best is None or failures <= best[1],
                "p99_ms": p99,
                "steady_p99_ms": base,
                "p99_ratio": ratio,
                # None: no steady asgid run in this invocation to compare with.
                "p99_ok": None if math.isnan(ratio) else bool(ratio < P99_RATIO_TARGET),
            }
        )
    return out


VERDICT = {True: "ok", False: "MISSED", None: "(no steady run)"}


def print_summary(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print()
    print(
        "summary (asgid): failures <= best peer's, and p99 of GET / < "
        f"{P99_RATIO_TARGET:g}x asgid's steady p99 (sigterm counts lost in-flight requests "
        "and drain failures other than refused)"
    )
    for v in rows:
        peer = (
            f"best peer {v['best_peer']} {v['best_peer_failures']}"
            if v["best_peer"]
            else "no peer measured"
        )
        ratio = "-" if math.isnan(v["p99_ratio"]) else f"{v['p99_ratio']:.2f}x"
        print(
            f"  {v['scenario']:<9} failures {v['failures']:>5} vs {peer:<22} "
            f"{VERDICT[v['failures_ok']]:<6}  p99 {fmt_ms(v['p99_ms']):>6} ms = "
            f"{ratio:>6} of steady {VERDICT[v['p99_ok']]}"
        )


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seconds", type=float, default=20.0, help="window per run")
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    parser.add_argument("--load-config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_config:
        return args
    args.servers = [s for s in args.servers.split(",") if s]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    for s in args.servers:
        if s not in SERVERS:
            parser.error(f"unknown server {s!r}; choose from {', '.join(SERVERS)}")
    for s in args.scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    if args.seconds < 2:
        parser.error("--seconds must be at least 2")
    args.server_cpu, args.client_cpu = server_and_client_cpus()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.load_config:
        return load_main(args.load_config)
    # SIGTERM/SIGHUP end the run like Ctrl-C: the running groups are stopped.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    started = dt.datetime.now(dt.timezone.utc).astimezone()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    args.results.mkdir(parents=True, exist_ok=True)
    log_dir = args.results / f"faults-{stamp}-logs"
    uvicorn_healthcheck = "uvicorn" in args.servers and uvicorn_has_healthcheck_flag()
    pinning = (
        f"servers on core {args.server_cpu}, load and driver on core {args.client_cpu} (taskset)"
        if args.server_cpu is not None
        else "not pinned (fewer than 2 cores or no taskset)"
    )
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_state(),
        "versions": package_versions(
            ["asgid", "uvicorn", "gunicorn", "uvicorn-worker", "uvloop", "httptools", "websockets"]
        ),
        "pinning": pinning,
        "seconds": args.seconds,
        "clients": CLIENTS,
        "pace_s": PACE,
        "ws_pace_s": WS_PACE,
        "request_timeout_s": REQUEST_TIMEOUT,
        "heartbeat_timeout_s": HEARTBEAT_TIMEOUT,
        "max_requests": MAX_REQUESTS,
        "uvicorn_timeout_worker_healthcheck": uvicorn_healthcheck,
    }
    print(f"faults: {meta['machine']}; asgid {meta['commit']}")
    print(f"pinning: {pinning}", flush=True)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if k != "wrk"))
    if "uvicorn" in args.servers and not uvicorn_healthcheck:
        print("uvicorn has no --timeout-worker-healthcheck: started without it")
    runs: list[dict[str, Any]] = []
    out_path = args.results / f"faults-{stamp}.json"
    try:
        for name in args.scenarios:
            for server in args.servers:
                print(f"  {name} / {server} ...", file=sys.stderr, flush=True)
                runs.append(run_one(SCENARIOS[name], server, args, log_dir, uvicorn_healthcheck))
    finally:
        summary = verdicts(runs)
        out_path.write_text(
            json.dumps({"meta": meta, "runs": runs, "summary": summary}, default=str) + "\n"
        )
    print()
    print_table(runs)
    print_sigterm(runs)
    print_summary(summary)

    def shown(path: Path) -> Path:
        return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path

    print(f"\nraw numbers: {shown(out_path)}")
    print(f"server logs: {shown(log_dir)}/")
    if any(r["status"] == "failed" for r in runs):
        return 1
    if any(v["failures_ok"] is False or v["p99_ok"] is False for v in summary):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
