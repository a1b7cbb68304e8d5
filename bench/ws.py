#!/usr/bin/env python3
"""WebSocket echo: asgid against uvicorn and granian, measured in one run.

    python bench/ws.py --rounds 3 --duration 5

Each connection sends one 64-byte message, waits for the echo, sends the next
(one round trip in flight per connection), over 1 and over 50 connections.
The server is pinned to core 0 and this process, which is the load client, to
core 1. Every (round, connections, server) run starts a fresh server, checks
that it echoes, warms it up, then counts round trips for ``--duration``
seconds and reads the CPU time of the server's process tree (psutil
``cpu_times``) before and after, so the report has round trips/s and server
CPU microseconds per message. Servers are interleaved within each round and
their order rotates between rounds; the report is the median over rounds.

The client is a raw-socket asyncio (uvloop) protocol, not a WebSocket
library: it writes one precomputed masked frame per round trip and checks each
echo against the expected bytes, so it costs a few microseconds per message
and the server, not the client, is what is measured (the client core's busy
fraction is reported so that can be checked). It offers no extensions, so no
server compresses.

Servers (``python`` is this interpreter; APP is ``bench.ws_apps:app``):

    asgid:   python -m asgid APP --workers 1 --no-access-log --log-level warning
    uvicorn: python -m uvicorn APP --loop uvloop --http httptools
             --ws websockets-sansio --no-access-log --log-level warning
    uvicorn-default: the same with uvicorn's default --ws (auto: websockets)
    granian: python -m granian --interface asgi --workers 1 --loop uvloop
             --no-access-log --log-level warning APP

``--profile [SERVER]`` runs SERVER (default asgid) once more under cProfile
(bench/ws_apps.py profiles the worker from lifespan startup to shutdown) with
the largest --connections and prints the top functions.

Every process started here runs in its own session and is stopped by process
group; every wait has a deadline; each run is bounded by --duration and
--max-messages. Only 127.0.0.1 is used. Results go to stdout and, in full, to
bench/results/ws-<time>.json (bench/results/ is ignored by git).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import glob
import io
import json
import os
import platform
import pstats
import signal
import socket
import statistics
import struct
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from _common import Process, cpu_seconds, free_port, pinned

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"
PATH = "/echo"
READY_TIMEOUT = 30.0  # seconds a server may take to answer its first request
CONNECT_TIMEOUT = 10.0  # seconds for all connections to finish their handshake
STALL_TIMEOUT = 10.0  # a run with no round trip for this long fails
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
SERVERS = ("asgid", "uvicorn", "uvicorn-default", "granian")
APPS = {"raw": "bench.ws_apps:app", "starlette": "bench.ws_apps:starlette_app"}


def server_command(name: str, app: str, port: int) -> list[str]:
    py = sys.executable
    bind = ["--host", HOST, "--port", str(port)]
    quiet = ["--no-access-log", "--log-level", "warning"]
    if name == "asgid":
        return [py, "-m", "asgid", app, *bind, "--workers", "1", *quiet]
    if name == "uvicorn":
        return [
            py, "-m", "uvicorn", app, *bind, "--loop", "uvloop", "--http", "httptools",
            "--ws", "websockets-sansio", *quiet,
        ]  # fmt: skip
    if name == "uvicorn-default":
        return [py, "-m", "uvicorn", app, *bind, "--loop", "uvloop", "--http", "httptools", *quiet]
    if name == "granian":
        return [
            py, "-m", "granian", "--interface", "asgi", *bind, "--workers", "1",
            "--loop", "uvloop", *quiet, app,
        ]  # fmt: skip
    raise ValueError(name)


# -- the load client ------------------------------------------------------------------


def client_frame(opcode: int, payload: bytes, mask: bytes = b"\x1f\x2e\x3d\x4c") -> bytes:
    """One masked client frame (a fixed mask: servers must unmask, not judge it)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frame(opcode: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        return struct.pack("!BB", 0x80 | opcode, size) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


class ClientError(Exception):
    pass


class Load:
    """What all connections of one run share: the frames, the counters, the stop flag."""

    def __init__(self, opcode: int, payload: bytes, max_messages: int) -> None:
        self.opcode = opcode
        self.payload = payload
        self.frame = client_frame(opcode, payload)
        self.expected = server_frame(opcode, payload)
        self.max_messages = max_messages
        self.count = 0
        self.stopping = False
        self.error: BaseException | None = None
        self.opened = 0


class EchoConnection(asyncio.Protocol):
    """One WebSocket connection that keeps one round trip in flight."""

    def __init__(self, load: Load, port: int, ready: asyncio.Future[None]) -> None:
        self.load = load
        self.port = port
        self.ready = ready
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.buffer = b""
        self.closed: asyncio.Future[None] = ready.get_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET {PATH} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.load.stopping and self.load.error is None:
            self.load.error = ClientError(f"the server closed a connection ({exc!r})")
        if not self.ready.done():
            self.ready.set_exception(ClientError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.buffer += data
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ClientError(f"handshake refused: {head[:100]!r}"))
                return
            self.upgraded = True
            self.buffer = rest
            self.load.opened += 1
            self.ready.set_result(None)
            return
        if self.buffer:
            data = self.buffer + data
            self.buffer = b""
        load = self.load
        if data == load.expected:  # the usual case: exactly one echo
            self._echoed()
            return
        self._parse(data)

    def _echoed(self) -> None:
        load = self.load
        load.count += 1
        if load.count >= load.max_messages:
            load.stopping = True
        if not load.stopping:
            assert self.transport is not None
            self.transport.write(load.frame)
        else:
            self.close()

    def _parse(self, data: bytes) -> None:
        load = self.load
        while len(data) >= 2:
            size = data[1] & 0x7F
            start = 2
            if size == 126:
                if len(data) < 4:
                    break
                (size,) = struct.unpack_from("!H", data, 2)
                start = 4
            elif size == 127:
                if len(data) < 10:
                    break
                (size,) = struct.unpack_from("!Q", data, 2)
                start = 10
            end = start + size
            if len(data) < end:
                break
            opcode, payload = data[0] & 0x0F, data[start:end]
            data = data[end:]
            if opcode == load.opcode and payload == load.payload:
                self._echoed()
            elif opcode == 0x9:  # a keepalive ping: answer it
                assert self.transport is not None
                self.transport.write(client_frame(0xA, payload))
            elif opcode == 0x8 and load.stopping:
                assert self.transport is not None
                self.transport.close()
            else:
                load.error = ClientError(f"unexpected frame: opcode {opcode} {payload[:80]!r}")
                self.close()
                return
        self.buffer = data

    def start(self) -> None:
        assert self.transport is not None
        self.transport.write(self.load.frame)

    def close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(client_frame(0x8, struct.pack("!H", 1000)))


async def run_load(
    port: int,
    connections: int,
    *,
    payload: bytes,
    opcode: int,
    warmup: float,
    duration: float,
    max_messages: int,
    server_procs: list[psutil.Process],
    server_cpu: int,
    client_cpu: int,
) -> dict[str, Any]:
    """Open the connections, warm up, measure; return counts and CPU times."""
    loop = asyncio.get_running_loop()
    load = Load(opcode, payload, max_messages)
    conns: list[EchoConnection] = []
    readies = []
    for _ in range(connections):
        ready: asyncio.Future[None] = loop.create_future()
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                lambda ready=ready: EchoConnection(load, port, ready),  # type: ignore[misc]
                HOST,
                port,
            ),
            CONNECT_TIMEOUT,
        )
        conns.append(conn)
        readies.append(ready)
    await asyncio.wait_for(asyncio.gather(*readies), CONNECT_TIMEOUT)
    for conn in conns:
        conn.start()

    async def watch(seconds: float) -> None:
        """Sleep ``seconds``, failing on a client error or a stall."""
        end = loop.time() + seconds
        last, last_change = load.count, loop.time()
        while loop.time() < end:
            await asyncio.sleep(min(0.25, max(0.0, end - loop.time())))
            if load.error is not None:
                raise load.error
            if load.count != last:
                last, last_change = load.count, loop.time()
            elif loop.time() - last_change > STALL_TIMEOUT:
                raise ClientError(f"no round trip for {STALL_TIMEOUT:g}s")
            if load.stopping:
                break

    await watch(warmup)
    own = psutil.Process()
    cpu_before = cpu_seconds(server_procs)
    cores_before = psutil.cpu_times(percpu=True)
    client_before = own.cpu_times()
    count_before = load.count
    t0 = time.perf_counter()
    await watch(duration)
    elapsed = time.perf_counter() - t0
    count = load.count - count_before
    client_after = own.cpu_times()
    cores_after = psutil.cpu_times(percpu=True)
    cpu_after = cpu_seconds(server_procs)
    load.stopping = True
    # Every connection closes after its round trip in flight; then the rest is cut.
    for conn in conns:
        if conn.transport is not None and not conn.transport.is_closing():
            conn.close()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.closed for c in conns)), 3.0)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.abort()
    if load.error is not None:
        raise load.error
    server_cpu_s = sum(t - cpu_before.get(pid, t) for pid, t in cpu_after.items())
    client_cpu_s = (client_after.user + client_after.system) - (
        client_before.user + client_before.system
    )
    return {
        "messages": count,
        "elapsed": elapsed,
        "server_cpu_s": server_cpu_s,
        "client_cpu_s": client_cpu_s,
        "server_core_busy": _core_busy(cores_before, cores_after, server_cpu),
        "client_core_busy": _core_busy(cores_before, cores_after, client_cpu),
    }


def _core_busy(before: Any, after: Any, cpu: int) -> float:
    if cpu >= len(after):
        return 0.0
    b, a = before[cpu]._asdict(), after[cpu]._asdict()
    idle = (a["idle"] - b["idle"]) + (a.get("iowait", 0) - b.get("iowait", 0))
    total = sum(a.values()) - sum(b.values())
    total -= (a.get("guest", 0) - b.get("guest", 0)) + (
        a.get("guest_nice", 0) - b.get("guest_nice", 0)
    )
    return 0.0 if total <= 0 else max(0.0, min(1.0, 1.0 - idle / total))


def run_client(coro: Any) -> Any:
    """Run the client on uvloop (as cheap per message as the client can be)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# -- server processes -----------------------------------------------------------------------


class Server:
    """One server process group, started pinned to ``cpu``."""

    def __init__(
        self, name: str, app: str, cpu: int, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.port = free_port()
        self.cmd = server_command(name, app, self.port)
        self.log_path = log_path
        self.process = Process(
            pinned(cpu, self.cmd),  # taskset execs: same PID and group
            log=log_path,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        self.proc = self.process.proc

    def log_tail(self, lines: int = 30) -> str:
        return self.process.tail(lines)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.returncode}):\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((HOST, self.port), timeout=2) as sock,
            ):
                sock.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                if sock.recv(4096).startswith(b"HTTP/1.1 200"):
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not answer within {timeout:g}s:\n{self.log_tail()}")

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        running = self.proc.poll() is None
        self.process.stop(STOP_TIMEOUT)
        if running and self.proc.returncode == -signal.SIGKILL:
            print(f"  ! {self.name} ignored SIGTERM for {STOP_TIMEOUT:g}s; SIGKILL", flush=True)


# -- runs ------------------------------------------------------------------------------------


@dataclass
class Run:
    round: int
    connections: int
    server: str
    messages: int
    rtt_per_s: float
    server_cpu_us_per_msg: float
    server_cpu: float  # CPU-seconds per second of the server's process tree
    client_cpu: float  # same for this client
    server_core_busy: float
    client_core_busy: float
    processes: int  # processes in the server's tree that were measured


def measure(
    round_no: int, server_name: str, connections: int, args: argparse.Namespace, log_dir: Path
) -> Run:
    server = Server(
        server_name,
        APPS[args.app],
        args.server_cpu,
        log_dir / f"r{round_no}-c{connections}-{server_name}.log",
    )
    try:
        server.wait_ready()
        tree = server.tree()
        result = run_client(
            run_load(
                server.port,
                connections,
                payload=args.payload,
                opcode=args.opcode,
                warmup=args.warmup,
                duration=args.duration,
                max_messages=args.max_messages,
                server_procs=tree,
                server_cpu=args.server_cpu,
                client_cpu=args.client_cpu,
            )
        )
        if {p.pid for p in server.tree()} != {p.pid for p in tree}:
            raise RuntimeError(f"{server_name}: a server process exited or was replaced mid-run")
    except BaseException:
        print(f"  ! {server_name} failed; log {server.log_path}:\n{server.log_tail()}", flush=True)
        raise
    finally:
        server.stop()
    messages, elapsed = result["messages"], result["elapsed"]
    return Run(
        round=round_no,
        connections=connections,
        server=server_name,
        messages=messages,
        rtt_per_s=messages / elapsed,
        server_cpu_us_per_msg=result["server_cpu_s"] / max(1, messages) * 1e6,
        server_cpu=result["server_cpu_s"] / elapsed,
        client_cpu=result["client_cpu_s"] / elapsed,
        server_core_busy=result["server_core_busy"],
        client_core_busy=result["client_core_busy"],
        processes=len(tree),
    )


def summarize(runs: list[Run], servers: list[str], conns: list[int]) -> list[dict[str, Any]]:
    rows = []
    for c in conns:
        for s in servers:
            mine = [r for r in runs if r.server == s and r.connections == c]
            if not mine:
                continue
            rows.append(
                {
                    "connections": c,
                    "server": s,
                    "rounds": len(mine),
                    "rtt_per_s": statistics.median(r.rtt_per_s for r in mine),
                    "rtt_spread": (min(r.rtt_per_s for r in mine), max(r.rtt_per_s for r in mine)),
                    "cpu_us": statistics.median(r.server_cpu_us_per_msg for r in mine),
                    "server_cpu": statistics.median(r.server_cpu for r in mine),
                    "client_cpu": statistics.median(r.client_cpu for r in mine),
                    "client_core_busy": statistics.median(r.client_core_busy for r in mine),
                    "server_core_busy": statistics.median(r.server_core_busy for r in mine),
                }
            )
    return rows


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [
        f"WebSocket echo, {meta['payload_size']}-byte {meta['kind']} messages, "
        f"app {meta['app']}, median of {meta['rounds']} round(s) x {meta['duration']:g}s; "
        f"server on core {meta['server_cpu']}, client on core {meta['client_cpu']}",
        "",
        "| conns | server | round trips/s (min-max) | server CPU us/msg | server CPU "
        "| server core busy | client CPU / core busy | asgid vs this (rt/s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        asgid = next(
            (r for r in rows if r["server"] == "asgid" and r["connections"] == row["connections"]),
            None,
        )
        ratio = (
            f"{asgid['rtt_per_s'] / row['rtt_per_s']:.2f}x" if asgid and row["rtt_per_s"] else ""
        )
        lo, hi = row["rtt_spread"]
        out.append(
            f"| {row['connections']} | {row['server']} | {row['rtt_per_s']:,.0f} "
            f"({lo:,.0f}-{hi:,.0f}) | {row['cpu_us']:.1f} | {row['server_cpu']:.0%} "
            f"| {row['server_core_busy']:.0%} "
            f"| {row['client_cpu']:.0%} / {row['client_core_busy']:.0%} | {ratio} |"
        )
    out.append("")
    out.append(f"versions: {meta['versions']}; uvicorn --ws: {meta['uvicorn_ws']}")
    return "\n".join(out)


def profile_server(name: str, args: argparse.Namespace, log_dir: Path, connections: int) -> str:
    """Run ``name`` once with its worker under cProfile; the top functions as text."""
    prefix = log_dir / f"{name}-profile"
    server = Server(
        name,
        APPS[args.app],
        args.server_cpu,
        log_dir / f"profile-{name}.log",
        env={"WS_BENCH_PROFILE": str(prefix)},
    )
    try:
        server.wait_ready()
        result = run_client(
            run_load(
                server.port,
                connections,
                payload=args.payload,
                opcode=args.opcode,
                warmup=0.5,
                duration=args.duration,
                max_messages=args.max_messages,
                server_procs=server.tree(),
                server_cpu=args.server_cpu,
                client_cpu=args.client_cpu,
            )
        )
    finally:
        server.stop()
    files = glob.glob(f"{prefix}.*")
    if not files:
        return "no profile written (did the worker run its lifespan shutdown?)"
    text = io.StringIO()
    stats = pstats.Stats(*files, stream=text)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)
    head = f"cProfile of {name}, {connections} connection(s), {result['messages']} messages"
    return head + "\n" + text.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--connections", default="1,50", help="comma-separated, e.g. 1,50")
    parser.add_argument("--servers", default="asgid,uvicorn,granian", help=f"of {SERVERS}")
    parser.add_argument("--app", choices=sorted(APPS), default="raw")
    parser.add_argument("--kind", choices=("text", "bytes"), default="text")
    parser.add_argument("--size", type=int, default=64, help="message size in bytes")
    parser.add_argument("--max-messages", type=int, default=20_000_000, help="per run")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument(
        "--profile",
        nargs="?",
        const="asgid",
        metavar="SERVER",
        help="then profile SERVER's worker (default asgid) with cProfile",
    )
    args = parser.parse_args()
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in servers:
        if s not in SERVERS:
            parser.error(f"unknown server {s!r}; choose from {', '.join(SERVERS)}")
    if args.profile and args.profile not in SERVERS:
        parser.error(f"unknown server {args.profile!r} for --profile")
    conns = [int(c) for c in args.connections.split(",")]
    args.payload = (b"0123456789abcdef" * (args.size // 16 + 1))[: args.size]
    args.opcode = 0x1 if args.kind == "text" else 0x2
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {args.client_cpu})  # this process is the client

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results_dir = BENCH / "results"
    log_dir = results_dir / f"ws-{stamp}-logs"
    versions = {}
    for package in ("asgid", "uvicorn", "granian", "websockets", "uvloop", "starlette"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    meta = {
        "payload_size": args.size,
        "kind": args.kind,
        "app": APPS[args.app],
        "rounds": args.rounds,
        "duration": args.duration,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "versions": versions,
        "uvicorn_ws": "websockets-sansio ('uvicorn'); auto = websockets ('uvicorn-default')",
        "python": platform.python_version(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
    }
    runs: list[Run] = []
    failures: list[str] = []
    for round_no in range(1, args.rounds + 1):
        shift = (round_no - 1) % len(servers)
        order = servers[shift:] + servers[:shift]
        for c in conns:
            for name in order:
                try:
                    run = measure(round_no, name, c, args, log_dir)
                except Exception as exc:
                    failures.append(f"round {round_no} {name} c={c}: {exc!r}")
                    print(f"  ! {failures[-1]}", flush=True)
                    continue
                runs.append(run)
                print(
                    f"round {round_no} c={c:<3} {name:<16} {run.rtt_per_s:>10,.0f} rt/s "
                    f"{run.server_cpu_us_per_msg:>7.1f} us/msg  server cpu "
                    f"{run.server_cpu:>4.0%}  client cpu {run.client_cpu:>4.0%} "
                    f"(core busy {run.client_core_busy:>4.0%})",
                    flush=True,
                )
    rows = summarize(runs, servers, conns)
    meta["loadavg_end"] = os.getloadavg()
    print()
    print(render(rows, meta))
    profile = ""
    if args.profile:
        profile = profile_server(args.profile, args, log_dir, max(conns))
        print()
        print(profile)
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"ws-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "meta": meta,
                "summary": rows,
                "runs": [asdict(r) for r in runs],
                "failures": failures,
                "profile": profile,
            },
            indent=2,
        )
    )
    print(f"\nresults: {out}")
    if failures:
        print("failures:\n  " + "\n  ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
