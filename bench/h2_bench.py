#!/usr/bin/env python3
"""HTTP/2 throughput: asgid against hypercorn and granian, and against its own HTTP/1.1.

    flock /tmp/bench-lock python bench/h2_bench.py --duration 5

Each (server, transport, app, streams) run starts a fresh server with one
worker pinned to one core, checks it answers over HTTP/2, and loads it with
``h2load`` (Debian's nghttp2-client) pinned to another core: 1 connection
with 1 or 64 concurrent streams, over TLS (ALPN h2) and cleartext (h2c with
prior knowledge). asgid is also measured over HTTP/1.1 (``h2load --h1``: 1
connection, or 64 connections for the 64-stream case) on the same apps.
Reported: requests/s and server CPU time per request (all processes of the
server's group, user + system), and asgid's idle memory per HTTP/2 and per
HTTP/1.1 connection. The report is printed and written, with every run, to
bench/results/h2-<time>.json.

Servers:
  asgid:     python -m asgid bench.apps:app --workers 1 [--http2-cleartext | --ssl-*]
  hypercorn: python -m hypercorn bench.apps:app --workers 1 --worker-class uvloop
             (h2c or TLS with ALPN h2; keep_alive_max_requests raised from 1000)
  granian:   python -m granian --interface asgi --http 2 --workers 1 [--ssl-*]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from _common import free_port, git_state, machine, package_versions, pinned, stop_group

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"
APP = "bench.apps:app"
PATHS = {"plaintext": "/plaintext", "json": "/json"}
READY_TIMEOUT = 30.0
# hypercorn closes a connection after 1000 requests by default, which h2load
# counts as failures; the other servers have no such limit.
HYPERCORN_TOML = str(BENCH / "results" / "hypercorn.toml")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame


def server_command(name: str, port: int, tls: tuple[Path, Path] | None) -> list[str]:
    py = sys.executable
    if name == "asgid":
        cmd = [py, "-m", "asgid", APP, "--host", HOST, "--port", str(port), "--workers", "1"]
        cmd += ["--no-access-log", "--log-level", "warning"]
        if tls:
            return [*cmd, "--ssl-certfile", str(tls[0]), "--ssl-keyfile", str(tls[1])]
        return [*cmd, "--http2-cleartext"]
    if name == "hypercorn":
        cmd = [py, "-m", "hypercorn", APP, "--bind", f"{HOST}:{port}", "--workers", "1"]
        cmd += ["--worker-class", "uvloop", "--log-level", "warning", "--config", HYPERCORN_TOML]
        if tls:
            return [*cmd, "--certfile", str(tls[0]), "--keyfile", str(tls[1])]
        return cmd
    if name == "granian":
        cmd = [py, "-m", "granian", "--interface", "asgi", "--host", HOST, "--port", str(port)]
        cmd += ["--workers", "1", "--http", "2", "--no-ws", "--loop", "uvloop"]
        cmd += ["--no-access-log", "--log-level", "warning"]
        if tls:
            cmd += ["--ssl-certificate", str(tls[0]), "--ssl-keyfile", str(tls[1])]
        return [*cmd, APP]
    raise ValueError(name)


@contextlib.contextmanager
def serving(
    name: str, tls: tuple[Path, Path] | None, cpu: int, log: Path
) -> Iterator[tuple[int, psutil.Process]]:
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            pinned(cpu, server_command(name, port, tls)),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not answers(port, tls is not None):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {log}")
            time.sleep(0.1)
        yield port, psutil.Process(proc.pid)
    finally:
        stop_group(proc)


def answers(port: int, tls: bool) -> bool:
    """Whether the server answers an HTTP/2 GET /json with 200 (h2 as the client)."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    try:
        sock: socket.socket = socket.create_connection((HOST, port), timeout=2)
    except OSError:
        return False
    try:
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["h2"])
            sock = context.wrap_socket(sock, server_hostname=HOST)
        conn.initiate_connection()
        headers = [(":method", "GET"), (":scheme", "https" if tls else "http")]
        conn.send_headers(1, [*headers, (":authority", HOST), (":path", "/json")], end_stream=True)
        sock.sendall(conn.data_to_send())
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                return False
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    return dict(event.headers).get(b":status") == b"200"
    except (OSError, ValueError, h2.exceptions.ProtocolError):
        return False
    finally:
        sock.close()
    return False


def cpu_of(root: psutil.Process) -> float:
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def h2load(
    port: int, tls: bool, path: str, streams: int, duration: int, cpu: int, http1: bool
) -> dict[str, float]:
    url = f"{'https' if tls else 'http'}://{HOST}:{port}{path}"
    # HTTP/1.1 has no streams: as many connections instead.
    args = ["--h1", "-c", str(streams), "-m", "1"] if http1 else ["-c", "1", "-m", str(streams)]
    cmd = pinned(cpu, ["h2load", *args, "-D", str(duration), "--warm-up-time", "1", url])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    rps = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    if not done or not rps:
        raise RuntimeError(f"h2load output not understood:\n{out}")
    protocol = re.search(r"Application protocol: (\S+)", out)
    return {
        "done": float(done.group(1)),
        "succeeded": float(done.group(2)),
        "rps": float(rps.group(1)),
        "negotiated": protocol.group(1) if protocol else "?",  # type: ignore[dict-item]
    }


def measure(
    name: str,
    tls: tuple[Path, Path] | None,
    app: str,
    streams: int,
    args: argparse.Namespace,
    log: Path,
    http1: bool = False,
) -> dict[str, Any]:
    with serving(name, tls, args.server_cpu, log) as (port, root):
        before = cpu_of(root)
        started = time.monotonic()
        result = h2load(
            port, tls is not None, PATHS[app], streams, args.duration, args.client_cpu, http1
        )
        wall = time.monotonic() - started
        used = cpu_of(root) - before
    # CPU was counted over the warm-up second too: charge it to all requests done.
    per_request = used / max(result["done"] * (wall / max(wall - 1.0, 0.001)), 1.0)
    return {
        "server": name,
        "protocol": "h1" if http1 else "h2",
        "tls": tls is not None,
        "app": app,
        "streams": streams,
        **result,
        "cpu_us_per_request": per_request * 1e6,
    }


def idle_memory(
    tls: tuple[Path, Path] | None, args: argparse.Namespace, log: Path
) -> dict[str, float]:
    """asgid's worker RSS growth per idle connection, HTTP/2 and HTTP/1.1 (cleartext)."""
    results = {}
    for protocol in ("h2", "h1"):
        with serving("asgid", None, args.server_cpu, log) as (port, root):
            worker = root.children()[0]  # the one worker
            time.sleep(0.5)
            base = worker.memory_info().rss
            socks = []
            try:
                for _ in range(args.idle_connections):
                    sock = socket.create_connection((HOST, port))
                    if protocol == "h2":
                        sock.sendall(PREFACE + SETTINGS)
                        sock.recv(65536)  # the server's SETTINGS: the connection is set up
                    else:
                        sock.sendall(b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n")
                        sock.recv(65536)  # the response: an idle keep-alive connection
                    socks.append(sock)
                time.sleep(0.5)
                grown = worker.memory_info().rss - base
            finally:
                for sock in socks:
                    sock.close()
        results[protocol] = grown / args.idle_connections
    return results


def certificate(folder: Path) -> tuple[Path, Path]:
    import trustme

    ca = trustme.CA()
    cert, key = folder / "cert.pem", folder / "key.pem"
    leaf = ca.issue_cert(HOST)
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def render(rows: list[dict[str, Any]], memory: dict[str, float]) -> str:
    def get(server: str, protocol: str, tls: bool, app: str, streams: int) -> dict[str, Any]:
        for row in rows:
            if (row["server"], row["protocol"], row["tls"], row["app"], row["streams"]) == (
                server,
                protocol,
                tls,
                app,
                streams,
            ):
                return row
        return {}

    lines = [
        "| transport | app | streams | asgid h2 req/s | hypercorn | granian | asgid h1 "
        "| asgid/hypercorn | asgid/granian | CPU µs/req asgid h2 / h1 (ratio) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tls in (True, False):
        for app in PATHS:
            for streams in (1, 64):
                a = get("asgid", "h2", tls, app, streams)
                h = get("hypercorn", "h2", tls, app, streams)
                g = get("granian", "h2", tls, app, streams)
                one = get("asgid", "h1", tls, app, streams)
                if not a:
                    continue

                def ratio(x: dict[str, Any], y: dict[str, Any], key: str = "rps") -> str:
                    return f"{x[key] / y[key]:.2f}x" if x and y and y[key] else "-"

                cpu = "-"
                if one:
                    cpu = (
                        f"{a['cpu_us_per_request']:.0f} / {one['cpu_us_per_request']:.0f} "
                        f"({a['cpu_us_per_request'] / one['cpu_us_per_request']:.2f})"
                    )
                lines.append(
                    f"| {'TLS' if tls else 'h2c'} | {app} | {streams} | {a['rps']:.0f} "
                    f"| {h.get('rps', 0):.0f} | {g.get('rps', 0):.0f} | {one.get('rps', 0):.0f} "
                    f"| {ratio(a, h)} | {ratio(a, g)} | {cpu} |"
                )
    lines.append("")
    lines.append(
        f"asgid idle memory per connection: HTTP/2 {memory.get('h2', 0) / 1024:.1f} KiB, "
        f"HTTP/1.1 {memory.get('h1', 0) / 1024:.1f} KiB"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--servers", default="asgid,hypercorn,granian")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--idle-connections", type=int, default=200)
    parser.add_argument("--transports", default="tls,h2c")
    parser.add_argument("--apps", default="plaintext,json")
    parser.add_argument("--streams", default="1,64")
    args = parser.parse_args(argv)
    servers = args.servers.split(",")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    Path(HYPERCORN_TOML).write_text("keep_alive_max_requests = 1000000000\n")
    log = results / f"h2-{stamp}.log"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        tls_files = certificate(Path(folder))
        transports = args.transports.split(",")
        for tls in [t for n, t in (("tls", tls_files), ("h2c", None)) if n in transports]:
            for app in args.apps.split(","):
                for streams in [int(n) for n in args.streams.split(",")]:
                    for name in servers:
                        try:
                            rows.append(measure(name, tls, app, streams, args, log))
                        except Exception as exc:  # one failed server does not end the run
                            print(f"{name} {app} {streams} tls={bool(tls)}: {exc}", file=sys.stderr)
                    if "asgid" in servers:
                        rows.append(measure("asgid", tls, app, streams, args, log, http1=True))
        memory = idle_memory(None, args, log)
    report = render(rows, memory)
    print(report)
    meta = {
        "machine": machine(),
        "commit": git_state(),
        "versions": package_versions(["asgid", "h2", "hypercorn", "granian"]),
        "h2load": subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout,
    }
    (results / f"h2-{stamp}.json").write_text(
        json.dumps({"meta": meta, "runs": rows, "idle_memory": memory, "report": report}, indent=1)
    )
    return 0 if all(r["succeeded"] == r["done"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
