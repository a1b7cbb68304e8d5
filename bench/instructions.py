#!/usr/bin/env python3
"""Cost per request that a noisy machine cannot move: instructions and system calls.

    python bench/instructions.py                           # starlette, fastapi, plaintext, close
    python bench/instructions.py --scenarios json,upload --servers asgid,uvicorn

bench/http_bench.py measures CPU time, and on a shared machine the same
server's CPU per request moves by half between runs. This script counts
instead, for asgid (1 worker), uvicorn and granian serving the same
scenarios (bench/http_bench.py's apps, commands and scenarios):

* **Instructions per request** executed in user space by the whole server
  tree, counted by valgrind's callgrind (``--trace-children=yes``, so the
  master, the worker and granian's Rust threads all count). Each server runs
  twice, once with ``--requests`` and once with ``--requests`` + ``--extra``
  requests; the difference over ``--extra`` is the cost of a request, with
  start-up, import and shutdown cancelled out. Repeat runs agree within ~1%.
* **System calls per request**, from ``strace -c -f`` attached to the tree
  (server running at full speed, after a warm-up), over ``--strace-requests``.

Instructions leave out the kernel's share, which the system calls stand for:
a ``write()`` to a socket costs the kernel far more than the instructions
around it. Read the two columns together, and take wall-clock CPU from
http_bench.py on a quiet machine.

The load comes from this script: ``--connections`` threads, each with its
own keep-alive connection (a new connection per request for ``close``),
sending one request at a time and reading the whole response. Under valgrind
the server is ~50x slower than the client, so every connection always has a
request waiting: the count is that of a saturated server.

Only 127.0.0.1; every server runs in its own session (tests/harness.py's
``Process``) and is stopped by process group; every wait has a deadline.
Needs valgrind and strace (Debian: apt-get install valgrind strace).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from _common import HOST, Process, free_port, git_state, machine, package_versions
from http_bench import SCENARIOS, SERVERS, Scenario, server_command

BENCH = Path(__file__).resolve().parent

READY_TIMEOUT = 180.0  # seconds a server under valgrind may take to answer (FastAPI imports)
STOP_TIMEOUT = 120.0  # callgrind writes its counts while the server exits
IO_TIMEOUT = 60.0  # one socket operation, with the server under valgrind
SUMMARY_RE = re.compile(r"^(?:summary|totals): (\d+)", re.M)


# -- load ---------------------------------------------------------------------------


def request_bytes(scenario: Scenario, port: int) -> bytes:
    head = f"{scenario.method} {scenario.path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
    if scenario.body:
        head += f"Content-Length: {len(scenario.body)}\r\n"
    if scenario.new_connection:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + scenario.body


def exchange(sock: socket.socket, request: bytes, buffered: bytes) -> bytes:
    """Send one request, read its response (framed by Content-Length); return what follows."""
    sock.sendall(request)
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"unexpected response: {head[:200]!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the response body")
        rest += chunk
    return rest[length:]


def load(port: int, scenario: Scenario, requests: int, connections: int) -> None:
    """``requests`` requests over ``connections`` threads; raises if any failed."""
    request = request_bytes(scenario, port)
    errors: list[BaseException] = []

    def one_connection(count: int) -> None:
        try:
            if scenario.new_connection:
                for _ in range(count):
                    with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as sock:
                        exchange(sock, request, b"")
                return
            with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as sock:
                buffered = b""
                for _ in range(count):
                    buffered = exchange(sock, request, buffered)
        except (OSError, RuntimeError) as exc:
            errors.append(exc)

    shares = [requests // connections + (i < requests % connections) for i in range(connections)]
    threads = [threading.Thread(target=one_connection, args=(n,)) for n in shares if n]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(IO_TIMEOUT * 10)
    if errors or any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"{scenario.name}: load failed: {errors[:3]!r}")


def wait_answering(process: Process, port: int, scenario: Scenario, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{process.tail()}")
        try:
            load(port, scenario, 1, 1)
            return
        except (OSError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# -- instructions -------------------------------------------------------------------


def callgrind_total(
    server: str, scenario: Scenario, requests: int, args: argparse.Namespace
) -> int:
    """User-space instructions of the whole server tree, start to exit, for ``requests``."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="asgid-callgrind-") as out:
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=yes",
            f"--callgrind-out-file={out}/cg.%p",
            *server_command(server, scenario.app, port),
        ]
        process = Process(cmd, log=Path(out) / "server.log")
        try:
            wait_answering(process, port, scenario, READY_TIMEOUT)
            load(port, scenario, requests, args.connections)
        finally:
            process.stop(STOP_TIMEOUT)
        if process.returncode == -signal.SIGKILL:
            raise RuntimeError(f"{server} did not exit on SIGTERM: its counts are lost")
        total = 0
        for path in Path(out).glob("cg.*"):
            match = SUMMARY_RE.search(path.read_text(errors="replace"))
            total += int(match.group(1)) if match else 0
        return total


def instructions_per_request(server: str, scenario: Scenario, args: argparse.Namespace) -> float:
    base = callgrind_total(server, scenario, args.requests, args)
    more = callgrind_total(server, scenario, args.requests + args.extra, args)
    return float(more - base) / args.extra


# -- system calls -------------------------------------------------------------------

STRACE_ROW_RE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)(?:\s+\d+)?\s+(\w+)\s*$", re.M)


def syscalls_per_request(
    server: str, scenario: Scenario, args: argparse.Namespace
) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="asgid-strace-") as out:
        process = Process(server_command(server, scenario.app, port), log=Path(out) / "server.log")
        try:
            wait_answering(process, port, scenario, 60.0)
            load(port, scenario, 200, args.connections)  # warm-up
            root = psutil.Process(process.pid)
            pids = [root.pid, *(child.pid for child in root.children(recursive=True))]
            report = Path(out) / "strace.txt"
            strace = subprocess.Popen(
                ["strace", "-c", "-f", "-o", str(report), *(f"-p{pid}" for pid in pids)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                time.sleep(1.0)  # strace attaches to every thread
                load(port, scenario, args.strace_requests, args.connections)
            finally:
                strace.send_signal(signal.SIGINT)
                strace.wait(30)
            text = report.read_text()
        finally:
            process.stop(10.0)
    calls = {name: int(count) / args.strace_requests for count, name in STRACE_ROW_RE.findall(text)}
    calls.pop("total", None)
    return calls


# -- main ---------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    server: str
    instructions: float
    syscalls: dict[str, float]


def render(results: list[Result], meta: dict[str, object]) -> str:
    out = [
        f"{meta['date']} · asgid ({meta['git']}) · {meta['machine']} · "
        f"{meta['extra']} requests counted per server, {meta['connections']} connections",
        "",
        "| scenario | server | instructions/req | x uvicorn | x granian "
        "| syscalls/req | most frequent |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for result in results:
        peers = {r.server: r.instructions for r in results if r.scenario == result.scenario}
        ratio = {
            peer: f"{peers[peer] / result.instructions:.2f}" if peer in peers else "-"
            for peer in ("uvicorn", "granian")
        }
        top = sorted(result.syscalls.items(), key=lambda kv: -kv[1])[:4]
        out.append(
            f"| {result.scenario} | {result.server} | {result.instructions:,.0f} | "
            f"{ratio['uvicorn']} | {ratio['granian']} | {sum(result.syscalls.values()):.2f} | "
            + ", ".join(f"{name} {count:.2f}" for name, count in top)
            + " |"
        )
    out += ["", "`x peer`: the peer's instructions per request over this server's (> 1: fewer)."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--scenarios", default="starlette,fastapi,plaintext,close")
    parser.add_argument("--requests", type=int, default=300, help="requests in the base run")
    parser.add_argument("--extra", type=int, default=2000, help="requests counted (default 2000)")
    parser.add_argument("--strace-requests", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    servers = [s for s in args.servers.split(",") if s]
    scenarios = [SCENARIOS[s] for s in args.scenarios.split(",") if s]
    for tool in ("valgrind", "strace"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found (Debian: apt-get install {tool})")
    results = []
    for scenario in scenarios:
        for server in servers:
            started = time.monotonic()
            result = Result(
                scenario.name,
                server,
                instructions_per_request(server, scenario, args),
                syscalls_per_request(server, scenario, args),
            )
            results.append(result)
            print(
                f"{scenario.name:10} {server:8} {result.instructions:>10,.0f} instructions/req  "
                f"{sum(result.syscalls.values()):5.2f} syscalls/req  "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )
    meta: dict[str, object] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "git": git_state(),
        "machine": machine(),
        "python": sys.version.split()[0],
        "versions": package_versions(["asgid", "uvicorn", "granian", "starlette", "fastapi"]),
        "extra": args.extra,
        "connections": args.connections,
    }
    print()
    print(render(results, meta))
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"instructions-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2))
    print(f"\nraw results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
