#!/usr/bin/env python3
"""What asgid's own HTTP/1.1 code costs per request, with no socket and no peer.

    python bench/inprocess.py                              # CPU µs per request, asgid and uvicorn
    python bench/inprocess.py --instructions               # callgrind instructions per request
    python bench/inprocess.py --bytecodes --app starlette  # bytecodes per request, by function
    python bench/inprocess.py --headers 12 --close         # a browser-sized head, a connection each

One request at a time goes through the server's protocol object on a uvloop
loop: ``data_received()`` with the request's bytes, then the loop runs until
the response is written to a stub transport that keeps nothing. There is no
kernel, no load generator and no other process, so what is left is the
server's Python (and the httptools and uvloop calls it makes): the part of
bench/instructions.py's counts that asgid's code decides.

* Default: CPU time per request, the best of 5 runs of ``--requests``.
* ``--instructions``: the script runs itself twice under valgrind's callgrind
  (``--requests`` and twice as many) and prints the difference per request;
  repeat runs agree to a few instructions (``PYTHONHASHSEED`` is fixed).
* ``--bytecodes``: Python bytecodes executed per request, by function and by
  line (``sys.settrace`` with opcode events): where the instructions go.

The request has a Host header and ``--headers`` more (``x-header-N: value``);
``--close`` adds ``Connection: close`` and builds a new protocol (connection)
per request.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvloop

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # asgid and bench.apps from this checkout

from http_bench import SCENARIOS  # noqa: E402 - after the checkout is on sys.path

# --app: bench/http_bench.py's scenarios that are one GET on a kept connection
# (--close gives each request a connection of its own).
APPS = {
    name: scenario
    for name, scenario in SCENARIOS.items()
    if scenario.method == "GET" and not scenario.new_connection
}


class NullTransport(asyncio.Transport):
    """Takes what the server writes and resolves ``written`` on each write."""

    def __init__(self) -> None:
        super().__init__()
        self.written: asyncio.Future[None] | None = None

    def write(self, data: Any) -> None:
        if self.written is not None and not self.written.done():
            self.written.set_result(None)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


def protocol_factory(server: str, app: Any, loop: asyncio.AbstractEventLoop) -> Callable[[], Any]:
    if server == "asgid":
        from asgid.config._load import load_config
        from asgid.worker._protocol import HttpProtocol
        from asgid.worker._state import ServerState

        config = load_config(None, {"logging.access_log": False, "app.target": "x:y"}, {})
        state = ServerState(config, app, loop)
        return lambda: HttpProtocol(state, server=("127.0.0.1", 8000))
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState as UvicornState

    uvicorn_config = Config(app, loop="uvloop", http="httptools", access_log=False, lifespan="off")
    uvicorn_config.load()
    uvicorn_state = UvicornState()
    return lambda: HttpToolsProtocol(uvicorn_config, uvicorn_state, app_state={}, _loop=loop)


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        scenario = APPS[args.app]
        module, _, attribute = scenario.app.partition(":")
        app = getattr(importlib.import_module(module), attribute)
        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.make = protocol_factory(args.server, app, self.loop)
        head = b"GET " + scenario.path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
        head += b"".join(b"x-header-%d: value %d\r\n" % (i, i) for i in range(args.headers))
        self.close = args.close
        self.request = head + (b"Connection: close\r\n" if args.close else b"") + b"\r\n"
        self.protocol, self.transport = self._connect()

    def _connect(self) -> tuple[Any, NullTransport]:
        protocol, transport = self.make(), NullTransport()
        protocol.connection_made(transport)
        return protocol, transport

    def run(self, requests: int) -> None:
        self.loop.run_until_complete(self._requests(requests))

    async def _requests(self, count: int) -> None:
        for _ in range(count):
            if self.close:
                self.protocol, self.transport = self._connect()
            self.transport.written = written = self.loop.create_future()
            self.protocol.data_received(self.request)
            await written
            await asyncio.sleep(0)  # the request's task ends
            if self.close:
                self.protocol.connection_lost(None)


def cpu_per_request(args: argparse.Namespace) -> None:
    driver = Driver(args)
    driver.run(args.requests // 4)  # warm up: imports, caches, specialised bytecode
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        driver.run(args.requests)
        best = min(best, (time.process_time() - start) / args.requests)
    print(f"{args.server} {args.app}: {best * 1e6:.2f} µs CPU per request (best of 5)")


def instructions(args: argparse.Namespace) -> None:
    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (Debian: apt-get install valgrind)")

    def count(requests: int) -> int:
        command = [
            *(sys.executable, __file__, "--once", "--requests", str(requests)),
            *("--server", args.server, "--app", args.app, "--headers", str(args.headers)),
        ]
        if args.close:
            command.append("--close")
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            check=True,
            timeout=900,
        ).stderr
        match = re.search(r"Collected : (\d+)", out)
        if match is None:
            sys.exit(f"callgrind printed no count:\n{out[-2000:]}")
        return int(match.group(1))

    base, more = count(args.requests), count(2 * args.requests)
    per_request = (more - base) / args.requests
    print(f"{args.server} {args.app}: {per_request:,.0f} instructions per request")


def bytecodes(args: argparse.Namespace) -> None:
    driver = Driver(args)
    driver.run(50)
    by_function: collections.Counter[str] = collections.Counter()
    by_line: collections.Counter[tuple[str, int]] = collections.Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            where = f"{code.co_qualname} ({Path(code.co_filename).name})"
            by_function[where] += 1
            by_line[where, frame.f_lineno or 0] += 1
        return trace

    sys.settrace(trace)
    try:
        driver.run(args.requests)
    finally:
        sys.settrace(None)
    n = args.requests
    print(f"{args.server} {args.app}: {sum(by_function.values()) / n:.0f} bytecodes per request")
    for where, count in by_function.most_common(args.top):
        print(f"{count / n:8.1f}  {where}")
    print("busiest lines:")
    for (where, line), count in by_line.most_common(args.top):
        print(f"{count / n:8.1f}  {where}:{line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("asgid", "uvicorn"), default="asgid")
    parser.add_argument("--app", choices=sorted(APPS), default="plaintext")
    parser.add_argument("--requests", type=int, default=2000, help="requests per measured run")
    parser.add_argument("--headers", type=int, default=0, help="request headers besides Host")
    parser.add_argument("--close", action="store_true", help="a new connection per request")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--instructions", action="store_true", help="count with callgrind")
    mode.add_argument("--bytecodes", action="store_true", help="bytecodes by function and line")
    mode.add_argument("--once", action="store_true", help=argparse.SUPPRESS)  # callgrind's run
    parser.add_argument("--top", type=int, default=25, help="rows of --bytecodes output")
    args = parser.parse_args()
    if args.once:
        Driver(args).run(args.requests)
    elif args.instructions:
        instructions(args)
    elif args.bytecodes:
        bytecodes(args)
    else:
        cpu_per_request(args)


if __name__ == "__main__":
    main()
