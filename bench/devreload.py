#!/usr/bin/env python3
"""Development reload benchmark: how soon a saved edit is served, what clients see while
the server reloads, and what the file watcher costs while nothing happens, for
``asgid --reload`` and ``uvicorn --reload``.

    python bench/devreload.py                          # 2 apps x 3 servers, ~10 min
    python bench/devreload.py --edits 2 --idle-seconds 5 --servers asgid,uvicorn --apps raw

For every (app, server) the script writes the app as ``main.py`` into a fresh temporary
project directory, which is the server's working directory and ``--app-dir``, so that
it is all the server watches (neither server gets ``--reload-dir``). The apps:

    raw      a raw ASGI app (with lifespan) whose GET / body is the module constant VERSION
    fastapi  a FastAPI app with a few routes and pydantic models; GET / returns
             ``{"version": VERSION, ...}`` through a response model

and the servers, each started fresh in its own session on a free port of 127.0.0.1
(``python`` is the running interpreter; both with their default reload delay, 0.25 s):

    asgid     python -m asgid main:app --reload --workers 1 --app-dir TMP --host H --port P
              --no-access-log
    asgid-w2  the same with --workers 2 (an extra row: uvicorn --reload has one process)
    uvicorn   python -m uvicorn main:app --reload --app-dir TMP --host H --port P
              --no-access-log

Both run with PYTHONDONTWRITEBYTECODE=1 (no ``__pycache__`` in the watched directory, and
no stale .pyc: a .pyc is checked against the source's mtime in whole seconds and its size)
and PYTHONUNBUFFERED=1. The script reads their output as it comes and stamps each line.

Ready: asgid once GET / answers and the master logged "watching DIR for changes" (its
watcher is a separate process that says when its watches are in place) and all its
workers run; uvicorn once GET / answers (its watcher starts with the server, so there is
no line to wait for). Then 1 s more (SETTLE) in both cases, deadline 30 s in all.

Edits: a steady client thread sends ``GET /`` on a new connection (``Connection: close``)
every 10 ms, each with a 5 s timeout, from the end of the ready wait to the end of the
last edit. For each of ``--edits`` edits, the script rewrites ``main.py`` in place with a
new VERSION, takes the time the write returned, and polls ``GET /`` on new connections
every 10 ms (deadline 30 s) until an answer carries the new version: that is the **save
to new code** time. Then it waits SETTLE more before the next edit. Every steady request
is recorded (start, duration, outcome, which version answered) and counted in the window
of the edit it started after: ``ok``, or a failure: ``refused`` (ECONNREFUSED), ``reset``
(ECONNRESET, broken pipe), ``eof`` (closed without a whole answer), ``timeout`` (no
answer within 5 s), ``non-200``, ``other``. The table also shows the longest a steady
request waited, the steady and polling requests that got the *old* version after the new
one had been answered (``stale``), and when the server's log said it saw the change
(asgid: "changed: FILE; reloading"; uvicorn: "WatchFiles detected changes").

Idle: after the edits, with no requests and no edits, the script waits SETTLE and then
reads the CPU time and voluntary context switches (wake-ups) of each process of the server
over ``--idle-seconds``, summed over its threads (/proc/PID/task/*/schedstat, in ns):
asgid's watcher ("asgid: watcher [...]"), master and workers; uvicorn's reloader (the
parent process, which runs its watcher), its server process and multiprocessing's resource
tracker. CPU is shown as % of one core.

Targets, per app: asgid's median save-to-new-code no slower than uvicorn's; zero failed
requests for asgid (both rows); asgid's watcher under 1% of a core when idle.

If the machine has 2 or more cores the servers run under ``taskset -c 0`` and this script
(with its client threads) on core 1. Every server is stopped by process group (SIGTERM,
then SIGKILL after 10 s), on errors too; every wait has a deadline; only 127.0.0.1 is
used. The tables go to stdout, every number (every request's record too) to
bench/results/devreload-<time>.json, server logs to bench/results/devreload-<time>-logs/.
Exit status: 0 every run completed and asgid met its targets, 1 a run failed, 2 a target
was missed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import errno
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil
from _common import (
    Process,
    free_port,
    git_state,
    machine,
    median,
    package_versions,
    pinned,
    server_and_client_cpus,
)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"
MODULE = "main"

READY_TIMEOUT = 30.0  # the server answers and (asgid) watches
NEW_CODE_TIMEOUT = 30.0  # an edit is served
STOP_TIMEOUT = 10.0  # SIGTERM to the group, then SIGKILL
SETTLE = 1.0  # after ready, and after each edit is served
REQUEST_TIMEOUT = 5.0  # every client request
PACE = 0.010  # the steady client's and the poller's wait between requests
POLL = 0.05  # the script's own waits (log lines, processes)
KINDS = ("refused", "reset", "eof", "timeout", "non-200", "other")
WATCHER_IDLE_TARGET = 1.0  # % of one core

SERVERS = ("asgid", "asgid-w2", "uvicorn")
APPS = ("raw", "fastapi")

# The log line that says the server saw the change, and the one that says the new code is
# up (asgid: every worker of the new generation; uvicorn: the new server process).
CHANGE_LINE = {
    "asgid": re.compile(r"changed: .*; reloading"),
    "uvicorn": re.compile(r"(WatchFiles|StatReload|WatchGod) detected changes"),
}
DONE_LINE = {
    "asgid": re.compile(r"reload finished: generation \d+ serves"),
    "uvicorn": re.compile(r"Application startup complete"),
}
WATCHING_LINE = re.compile(r"watching .* for changes")


# -- the apps ---------------------------------------------------------------------------

RAW_APP = '''"""bench/devreload.py's raw ASGI app: GET / answers VERSION."""

VERSION = {version!r}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            elif message["type"] == "lifespan.shutdown":
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    if scope["type"] != "http":
        return
    body = VERSION.encode()
    await send(
        {{
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }}
    )
    await send({{"type": "http.response.body", "body": body}})
'''

FASTAPI_APP = '''"""bench/devreload.py's FastAPI app: GET / answers {{"version": VERSION, ...}}."""

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

VERSION = {version!r}


class Item(BaseModel):
    id: int
    name: str = Field(min_length=1, max_length=100)
    price: float = Field(ge=0)
    tags: list[str] = []


class Info(BaseModel):
    version: str
    items: int


app = FastAPI(title="devreload")
ITEMS: dict[int, Item] = {{i: Item(id=i, name=f"item {{i}}", price=i * 1.5) for i in range(10)}}


@app.get("/", response_model=Info)
async def root() -> Info:
    return Info(version=VERSION, items=len(ITEMS))


@app.get("/items", response_model=list[Item])
async def list_items(limit: int = 10) -> list[Item]:
    return list(ITEMS.values())[:limit]


@app.get("/items/{{item_id}}", response_model=Item)
async def get_item(item_id: int) -> Item:
    if item_id not in ITEMS:
        raise HTTPException(status_code=404, detail="no such item")
    return ITEMS[item_id]


@app.post("/items", response_model=Item, status_code=201)
async def create_item(item: Item) -> Item:
    ITEMS[item.id] = item
    return item
'''

APP_SOURCES = {"raw": RAW_APP, "fastapi": FASTAPI_APP}


def write_app(project: Path, app: str, version: str) -> None:
    """Rewrite main.py in place, as an editor that saves over the file does."""
    with open(project / f"{MODULE}.py", "w") as f:
        f.write(APP_SOURCES[app].format(version=version))


def new_version(edit: int) -> str:
    return f"v{edit:02d}-{secrets.token_hex(6)}"


# -- the client side ----------------------------------------------------------------------


@dataclass
class Answer:
    start: float  # monotonic
    end: float
    outcome: str  # "ok" or one of KINDS
    body: bytes = b""
    detail: str = ""


def http_get(port: int, timeout: float = REQUEST_TIMEOUT) -> Answer:
    """One ``GET /`` on its own connection, classified; never raises for the server's sake."""
    start = time.monotonic()
    deadline = start + timeout
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(
                f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            chunks = []
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except TimeoutError:
        return Answer(start, time.monotonic(), "timeout", detail=f"no answer in {timeout:g} s")
    except OSError as exc:
        end = time.monotonic()
        if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
            return Answer(start, end, "refused", detail=str(exc))
        if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return Answer(start, end, "reset", detail=str(exc))
        return Answer(start, end, "other", detail=f"{type(exc).__name__}: {exc}")
    end = time.monotonic()
    raw = b"".join(chunks)
    head, sep, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b"\r\n", 1)[0].split()[1])
    except (IndexError, ValueError):
        return Answer(start, end, "eof", detail=f"no whole answer: {raw[:80]!r}")
    if not sep:
        return Answer(start, end, "eof", detail=f"no whole answer: {raw[:80]!r}")
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if m and len(body) < int(m.group(1)):
        return Answer(start, end, "eof", body, f"{len(body)} of {m.group(1)} body bytes")
    if status != 200:
        return Answer(start, end, "non-200", body, f"status {status}")
    return Answer(start, end, "ok", body)


class Steady(threading.Thread):
    """``GET /`` on a new connection every PACE seconds until stopped; keeps every answer."""

    def __init__(self, port: int) -> None:
        super().__init__(name="steady", daemon=True)
        self.port = port
        self.answers: list[Answer] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.answers.append(http_get(self.port))
            self._stop_event.wait(PACE)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=REQUEST_TIMEOUT + 5)


# -- servers ----------------------------------------------------------------------------


def server_command(name: str, project: Path, port: int) -> list[str]:
    py = sys.executable
    common = [
        "--reload", "--app-dir", str(project), "--host", HOST, "--port", str(port),
        "--no-access-log",
    ]  # fmt: skip
    if name.startswith("asgid"):
        workers = 2 if name == "asgid-w2" else 1
        return [py, "-m", "asgid", f"{MODULE}:app", "--workers", str(workers), *common]
    if name == "uvicorn":
        return [py, "-m", "uvicorn", f"{MODULE}:app", *common]
    raise ValueError(name)


class Server:
    """One server's process group, and its output as stamped lines."""

    def __init__(self, name: str, project: Path, cpu: int | None, log: Path) -> None:
        self.name = name
        self.kind = "asgid" if name.startswith("asgid") else name
        self.workers = 2 if name == "asgid-w2" else 1
        self.port = free_port()
        self.cmd = server_command(name, project, self.port)
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log
        self._log: IO[str] = open(log, "w")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        # harness.Process sends the server's output to the file it is given; the
        # times of the lines are measurements, so that file is a FIFO read here as
        # the lines come (like a pipe), and the stamped lines go to ``log``.
        fifo = log.with_name(log.name + ".fifo")
        with contextlib.suppress(FileNotFoundError):
            fifo.unlink()
        os.mkfifo(fifo)
        try:
            # The read end first (non-blocking: no writer yet), so that opening the
            # write end does not block.
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            os.set_blocking(fd, True)
            self._out = os.fdopen(fd, "rb")
            try:
                self.process = Process(pinned(cpu, self.cmd), log=fifo, cwd=project, env=env)
            except BaseException:
                self._out.close()
                self._log.close()
                raise
        finally:
            fifo.unlink()  # both ends are open; Process.output() is not used here
        self.proc = self.process.proc
        self.root = psutil.Process(self.proc.pid)
        self._reader = threading.Thread(target=self._read, name=f"{name}-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # Ends once the group has exited and Process.stop() closed its write end.
        for raw in self._out:
            now = time.monotonic()
            line = raw.decode(errors="replace").rstrip("\n")
            with self._lock:
                self.lines.append((now, line))
            self._log.write(f"[{now:.3f}] {line}\n")
            self._log.flush()

    def first_line(
        self, pattern: re.Pattern[str], since: float, until: float = math.inf
    ) -> float | None:
        """When the first line matching ``pattern`` arrived in [since, until), or None."""
        with self._lock:
            for when, line in self.lines:
                if since <= when < until and pattern.search(line):
                    return when
        return None

    def log_tail(self, lines: int = 30) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.lines[-lines:])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with status {self.proc.returncode}:\n{self.log_tail()}"
            )

    def processes(self) -> dict[str, psutil.Process]:
        """The server's processes by role: asgid's master, watcher and worker N;
        uvicorn's reloader and server."""
        roles = {"master" if self.kind == "asgid" else "reloader": self.root}
        try:
            kids = sorted(self.root.children(recursive=False), key=lambda p: p.pid)
        except psutil.NoSuchProcess:
            return roles
        n = 0
        for p in kids:
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
                cmdline = " ".join(p.cmdline())
            except psutil.Error:
                continue
            if self.kind == "asgid":
                if "watcher" in cmdline or "supervisor._watch" in cmdline:
                    roles["watcher"] = p
                else:
                    roles[f"worker {n}"] = p
                    n += 1
            elif "resource_tracker" in cmdline:
                roles["resource tracker"] = p  # multiprocessing's, for the spawn context
            elif "spawn_main" in cmdline:
                roles["server"] = p
            else:
                roles[f"child {p.pid}"] = p
        return roles

    def wait_ready(self, version: str) -> float:
        """Wait until the server serves ``version`` and (asgid) watches; the ready time."""
        started = time.monotonic()
        deadline = started + READY_TIMEOUT
        answered = watching = False
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            if not answered:
                a = http_get(self.port, timeout=min(REQUEST_TIMEOUT, READY_TIMEOUT))
                if a.outcome == "ok" and version.encode() in a.body:
                    answered = True
                elif a.outcome == "ok":
                    raise RuntimeError(f"{self.name} answered {a.body[:200]!r}, not {version}")
                else:
                    last = f"{a.outcome}: {a.detail}"
            if self.kind == "asgid":
                watching = watching or self.first_line(WATCHING_LINE, 0.0) is not None
                workers = sum(r.startswith("worker") for r in self.processes())
                if answered and watching and workers == self.workers:
                    return time.monotonic()
            elif answered:
                return time.monotonic()
            time.sleep(POLL)
        raise TimeoutError(
            f"{self.name} not ready within {READY_TIMEOUT:g}s (answered={answered}, "
            f"watching={watching}, last={last!r}):\n{self.log_tail()}"
        )

    def stop(self) -> None:
        try:
            self.process.stop(STOP_TIMEOUT)
        finally:
            self._reader.join(timeout=STOP_TIMEOUT)
            if not self._reader.is_alive():
                self._out.close()
            self._log.close()


# -- one run ---------------------------------------------------------------------------


def sleep_checked(server: Server, seconds: float) -> None:
    """Sleep ``seconds``, failing early if the server exits."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        server.check_alive()
        time.sleep(min(POLL, left))


def wait_new_code(server: Server, version: str, old: str) -> dict[str, Any]:
    """Poll until ``version`` is answered (deadline NEW_CODE_TIMEOUT); what the polls saw."""
    deadline = time.monotonic() + NEW_CODE_TIMEOUT
    polls: Counter[str] = Counter()
    answered_at: float | None = None
    while time.monotonic() < deadline:
        server.check_alive()
        a = http_get(server.port, timeout=min(REQUEST_TIMEOUT, NEW_CODE_TIMEOUT))
        polls[a.outcome] += 1
        if a.outcome == "ok" and version.encode() in a.body:
            answered_at = a.end
            break
        if a.outcome == "ok" and old.encode() not in a.body:
            polls["unknown body"] += 1
        time.sleep(PACE)
    return {"answered_at": answered_at, "polls": dict(polls)}


def thread_stats(pid: int) -> dict[int, tuple[float, int]]:
    """Per thread (TID): CPU seconds (/proc/PID/task/TID/schedstat, ns) and voluntary
    context switches. /proc/PID/schedstat and /proc/PID/status count the main thread only,
    and a watcher may have more (watchfiles reads inotify in a thread of its own)."""
    out = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                task = Path(f"/proc/{pid}/task/{tid}")
                ns = int((task / "schedstat").read_text().split()[0])
                switches = 0
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        switches = int(line.split()[1])
                out[int(tid)] = (ns / 1e9, switches)
    return out


def idle_cpu(server: Server, seconds: float) -> dict[str, Any]:
    """CPU seconds and wake-ups (voluntary context switches) of each process over
    ``seconds``, summed over its threads; psutil's user + system (clock ticks, 10 ms,
    threads that exited included) as a cross-check."""
    procs = server.processes()

    def sample() -> tuple[dict[str, dict[int, tuple[float, int]]], dict[str, float]]:
        threads, ticks = {}, {}
        for role, p in procs.items():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                ticks[role] = float(t.user + t.system)
                threads[role] = thread_stats(p.pid)
        return threads, ticks

    (before, ticks0), t0 = sample(), time.monotonic()
    sleep_checked(server, seconds)
    (after, ticks1), t1 = sample(), time.monotonic()
    wall = t1 - t0
    still = server.processes()
    result = {}
    for role, p in procs.items():
        if role not in after or role not in ticks0:
            continue
        old = before.get(role, {})
        cpu = sum(c - old.get(tid, (0.0, 0))[0] for tid, (c, _) in after[role].items())
        wakeups = sum(w - old.get(tid, (0.0, 0))[1] for tid, (_, w) in after[role].items())
        result[role] = {
            "pid": p.pid,
            "threads": len(after[role]),
            "cpu_s": cpu,
            "cpu_s_ticks": ticks1[role] - ticks0[role],
            "percent_of_core": 100 * cpu / wall,
            "wakeups_per_s": wakeups / wall,
            "replaced": role not in still or still[role].pid != p.pid,
        }
    return {"seconds": wall, "processes": result}


def run_one(app: str, name: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    run: dict[str, Any] = {"app": app, "server": name, "status": "ok"}
    project = Path(tempfile.mkdtemp(prefix=f"devreload-{app}-"))
    server: Server | None = None
    steady: Steady | None = None
    try:
        versions = [new_version(0)]
        write_app(project, app, versions[0])
        server = Server(name, project, args.server_cpu, log_dir / f"{app}-{name}.log")
        run["command"] = server.cmd
        run["project"] = str(project)
        t_start = time.monotonic()
        t_ready = server.wait_ready(versions[0])
        run["ready_s"] = t_ready - t_start
        steady = Steady(server.port)
        steady.start()
        sleep_checked(server, SETTLE)  # the baseline: nothing should fail here either
        edits = []
        for i in range(1, args.edits + 1):
            versions.append(new_version(i))
            write_app(project, app, versions[i])
            t_write = time.monotonic()
            got = wait_new_code(server, versions[i], versions[i - 1])
            edit = {
                "edit": i,
                "version": versions[i],
                "t_write": t_write,
                "answered_at": got["answered_at"],
                "save_to_new_s": (
                    None if got["answered_at"] is None else got["answered_at"] - t_write
                ),
                "polls": got["polls"],
            }
            edits.append(edit)
            if got["answered_at"] is None:
                print(
                    f"    edit {i}: {versions[i]} not served within {NEW_CODE_TIMEOUT:g}s",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                print(
                    f"    edit {i}: new code after {1000 * edit['save_to_new_s']:.0f} ms",
                    file=sys.stderr,
                    flush=True,
                )
            sleep_checked(server, SETTLE)
        steady.stop()
        log_times(server, edits)
        run["edits"] = edits
        run["steady"] = steady_stats(steady.answers, edits, versions, t_ready)
        run["steady_records"] = [
            [
                round(a.start - t_ready, 4),
                round(1000 * (a.end - a.start), 2),
                a.outcome,
                next((j for j, v in enumerate(versions) if v.encode() in a.body), None),
                a.detail,
            ]
            for a in steady.answers
        ]
        sleep_checked(server, SETTLE)
        print(f"    idle for {args.idle_seconds:g}s ...", file=sys.stderr, flush=True)
        run["idle"] = idle_cpu(server, args.idle_seconds)
        run["log_lines"] = [[round(t - t_start, 3), line] for t, line in server.lines]
    except Exception as exc:
        run["status"] = "failed"
        run["error"] = f"{type(exc).__name__}: {exc}"
        run["traceback"] = traceback.format_exc()
        print(f"    FAILED: {run['error']}", file=sys.stderr, flush=True)
    finally:
        try:
            if steady is not None and steady.is_alive():
                steady.stop()
        finally:
            if server is not None:
                server.stop()
            shutil.rmtree(project, ignore_errors=True)
    return run


def log_times(server: Server, edits: list[dict[str, Any]]) -> None:
    """Add when the server logged that it saw each change, and that the reload was done."""
    for i, edit in enumerate(edits):
        t_write = edit["t_write"]
        until = edits[i + 1]["t_write"] if i + 1 < len(edits) else math.inf
        change_at = server.first_line(CHANGE_LINE[server.kind], t_write, until)
        done_at = (
            None
            if change_at is None
            else server.first_line(DONE_LINE[server.kind], change_at, until)
        )
        edit["change_logged_s"] = None if change_at is None else change_at - t_write
        edit["done_logged_s"] = None if done_at is None else done_at - t_write


def steady_stats(
    answers: list[Answer], edits: list[dict[str, Any]], versions: list[str], t_ready: float
) -> dict[str, Any]:
    """The steady client's answers, counted per edit window (from one write to the next)."""
    windows: list[dict[str, Any]] = []
    starts = [e["t_write"] for e in edits]
    buckets: list[list[Answer]] = [[] for _ in range(len(edits) + 1)]  # [0]: before edit 1
    for a in answers:
        i = sum(1 for s in starts if a.start >= s)
        buckets[i].append(a)
    for i, bucket in enumerate(buckets):
        outcomes = Counter(a.outcome for a in bucket)
        stale = 0
        if i > 0 and edits[i - 1]["answered_at"] is not None:
            new_at = edits[i - 1]["answered_at"]
            old = versions[i - 1].encode()
            stale = sum(1 for a in bucket if a.start > new_at and old in a.body)
        windows.append(
            {
                "window": "before edits" if i == 0 else f"edit {i}",
                "sent": len(bucket),
                "ok": outcomes["ok"],
                "failures": {k: outcomes[k] for k in KINDS},
                "max_ms": max((1000 * (a.end - a.start) for a in bucket), default=0.0),
                "stale_after_new": stale,
                "failure_details": sorted({a.detail for a in bucket if a.outcome != "ok"})[:10],
            }
        )
    reload_windows = windows[1:]
    return {
        "windows": windows,
        "sent": sum(w["sent"] for w in reload_windows),
        "failures": {k: sum(w["failures"][k] for w in reload_windows) for k in KINDS},
        "failed": sum(sum(w["failures"].values()) for w in reload_windows),
        "failed_before_edits": sum(windows[0]["failures"].values()),
        "max_ms": max((w["max_ms"] for w in reload_windows), default=0.0),
        "stale_after_new": sum(w["stale_after_new"] for w in reload_windows),
    }


# -- output ------------------------------------------------------------------------------


def fmt_ms(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "-"
    return f"{v:.0f}"


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    edits = run["edits"]
    served = [1000 * e["save_to_new_s"] for e in edits if e["save_to_new_s"] is not None]
    logged = [1000 * e["change_logged_s"] for e in edits if e["change_logged_s"] is not None]
    done = [1000 * e["done_logged_s"] for e in edits if e["done_logged_s"] is not None]
    return {
        "edits": len(edits),
        "served": len(served),
        "median_ms": median(served),
        "max_ms": max(served) if served else float("nan"),
        "change_logged_median_ms": median(logged),
        "done_logged_median_ms": median(done),
        "poll_failures": sum(n for e in edits for k, n in e["polls"].items() if k in KINDS),
    }


def print_app_table(app: str, runs: list[dict[str, Any]]) -> None:
    print(f"\n### app: {app}\n")
    print(
        "| server | edits served | save to new code ms, median / max | change logged ms "
        "| reload done ms | failed during reloads | refused | reset | eof | timeout | non-200 "
        "| other | steady requests | longest wait ms | stale after new |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        if run["status"] != "ok":
            print(f"| {run['server']} | FAILED: {run['error'][:100]} |" + " |" * 13)
            continue
        s = run["summary"]
        st = run["steady"]
        f = st["failures"]
        print(
            f"| {run['server']} | {s['served']}/{s['edits']} "
            f"| {fmt_ms(s['median_ms'])} / {fmt_ms(s['max_ms'])} "
            f"| {fmt_ms(s['change_logged_median_ms'])} | {fmt_ms(s['done_logged_median_ms'])} "
            f"| **{st['failed']}** "
            + " ".join(f"| {f[k]}" for k in KINDS)
            + f" | {st['sent']} | {fmt_ms(st['max_ms'])} | {st['stale_after_new']} |"
        )
    for run in runs:
        if run["status"] == "ok" and run["summary"]["poll_failures"]:
            print(
                f"\n{run['server']}: {run['summary']['poll_failures']} of the polling requests "
                "failed too (not in the table; see the JSON)"
            )
        if run["status"] == "ok" and run["steady"]["failed_before_edits"]:
            print(
                f"\n{run['server']}: {run['steady']['failed_before_edits']} steady requests "
                "failed before the first edit (counted in the failure target)"
            )


def print_idle_table(runs: list[dict[str, Any]], seconds: float) -> None:
    print(f"\n### idle CPU over {seconds:g} s (no requests, no edits)\n")
    print("| app | server | process | pid | threads | CPU s | % of one core | wake-ups/s |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        if run["status"] != "ok":
            continue
        for role, p in run["idle"]["processes"].items():
            mark = " (replaced!)" if p["replaced"] else ""
            name = f"**{role}**" if role in ("watcher", "reloader") else role
            print(
                f"| {run['app']} | {run['server']} | {name}{mark} | {p['pid']} | {p['threads']} "
                f"| {p['cpu_s']:.4f} | {p['percent_of_core']:.2f} | {p['wakeups_per_s']:.1f} |"
            )


def verdicts(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ok = {(r["app"], r["server"]): r for r in runs if r["status"] == "ok"}
    out: list[dict[str, Any]] = []
    for app in dict.fromkeys(r["app"] for r in runs):
        mine, peer = ok.get((app, "asgid")), ok.get((app, "uvicorn"))
        if mine and peer:
            a, u = mine["summary"]["median_ms"], peer["summary"]["median_ms"]
            out.append(
                {
                    "target": f"{app}: asgid median save-to-new-code <= uvicorn's",
                    "value": f"{fmt_ms(a)} ms vs {fmt_ms(u)} ms",
                    "met": bool(a <= u) and mine["summary"]["served"] == mine["summary"]["edits"],
                }
            )
        for name in ("asgid", "asgid-w2"):
            run = ok.get((app, name))
            if run is None:
                continue
            failed = run["steady"]["failed"] + run["steady"]["failed_before_edits"]
            out.append(
                {
                    "target": f"{app}: {name} failed requests == 0",
                    "value": str(failed),
                    "met": failed == 0,
                }
            )
            watcher = run["idle"]["processes"].get("watcher")
            pct = watcher["percent_of_core"] if watcher else float("nan")
            out.append(
                {
                    "target": f"{app}: {name} watcher idle CPU < {WATCHER_IDLE_TARGET:g}%",
                    "value": f"{pct:.2f}%",
                    "met": bool(pct < WATCHER_IDLE_TARGET),
                }
            )
    return out


def print_verdicts(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print("\n### targets\n")
    for v in rows:
        print(f"- {v['target']}: {v['value']} — {'ok' if v['met'] else 'MISSED'}")


# -- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, default=5, help="edits per (app, server)")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle CPU window")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--apps", default=",".join(APPS))
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    args.apps = [s for s in args.apps.split(",") if s]
    for s in args.servers:
        if s not in SERVERS:
            parser.error(f"unknown server {s!r}; choose from {', '.join(SERVERS)}")
    for a in args.apps:
        if a not in APPS:
            parser.error(f"unknown app {a!r}; choose from {', '.join(APPS)}")
    if args.edits < 1:
        parser.error("--edits must be at least 1")
    if args.idle_seconds <= 0:
        parser.error("--idle-seconds must be positive")
    args.server_cpu, args.client_cpu = server_and_client_cpus()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM/SIGHUP end the run like Ctrl-C: the running group is stopped.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    started = dt.datetime.now(dt.timezone.utc).astimezone()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    args.results.mkdir(parents=True, exist_ok=True)
    log_dir = args.results / f"devreload-{stamp}-logs"
    pinning = (
        f"servers on core {args.server_cpu}, this script and its clients on core "
        f"{args.client_cpu} (taskset / sched_setaffinity)"
        if args.server_cpu is not None
        else "not pinned (fewer than 2 cores or no taskset)"
    )
    versions = package_versions(
        ["asgid", "uvicorn", "watchfiles", "fastapi", "starlette", "pydantic", "uvloop"]
    )
    versions.pop("wrk", None)
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_state(),
        "versions": versions,
        "pinning": pinning,
        "edits": args.edits,
        "idle_seconds": args.idle_seconds,
        "settle_s": SETTLE,
        "pace_s": PACE,
        "request_timeout_s": REQUEST_TIMEOUT,
        "new_code_timeout_s": NEW_CODE_TIMEOUT,
    }
    print(f"devreload: {meta['machine']}; asgid {meta['commit']}")
    print(f"pinning: {pinning}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    runs: list[dict[str, Any]] = []
    out_path = args.results / f"devreload-{stamp}.json"
    try:
        for app in args.apps:
            for name in args.servers:
                print(f"  {app} / {name} ...", file=sys.stderr, flush=True)
                run = run_one(app, name, args, log_dir)
                if run["status"] == "ok":
                    run["summary"] = summarize(run)
                runs.append(run)
    finally:
        summary = verdicts(runs)
        out_path.write_text(
            json.dumps({"meta": meta, "runs": runs, "targets": summary}, default=str) + "\n"
        )
    for app in args.apps:
        print_app_table(app, [r for r in runs if r["app"] == app])
    print(
        "\nsave to new code: from the write of main.py to the first GET / (new connection, "
        f"polled every {1000 * PACE:g} ms) that answers the new version; change logged: to "
        "the server's log line that it saw the change. failed during reloads: the steady "
        f"client's GET / (new connection every {1000 * PACE:g} ms, {REQUEST_TIMEOUT:g} s "
        "timeout) from the first edit on; stale after new: its answers with the old version "
        "that started after the new one had been answered; reload done: asgid's \"reload "
        'finished" log line (all workers new), uvicorn\'s "Application startup complete" '
        "(the new server process). Medians over the edits."
    )
    print_idle_table(runs, args.idle_seconds)
    print_verdicts(summary)

    def shown(path: Path) -> Path:
        return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path

    print(f"\npinning: {pinning}")
    print(f"raw numbers: {shown(out_path)}")
    print(f"server logs: {shown(log_dir)}/")
    if any(r["status"] != "ok" for r in runs):
        return 1
    if any(not v["met"] for v in summary):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
