#!/usr/bin/env python3
"""Where asgid's worker spends its time on one scenario under wrk load.

    python bench/profile_asgid.py                      # py-spy, plaintext, 5 s
    python bench/profile_asgid.py --tool cprofile      # cProfile, in-process worker
    python bench/profile_asgid.py --scenario upload --duration 8

``--tool py-spy`` (needs ``pip install py-spy``) starts ``python -m asgid`` as
bench/http_bench.py does (server on CPU 0), finds the worker process, and samples it
with ``py-spy record --native`` (on CPU 1, beside wrk) while wrk loads it. Native
frames make uvloop/libuv, httptools/llhttp, the C ``_asyncio`` Task and the
syscalls visible next to asgid's Python code. Each sample is charged to its
innermost frame that belongs to a known part (CPython's own C frames, such as
``Py_DECREF`` or dict lookups, count towards whoever called them), and a few
operations are also reported inclusively (task creation, parsing, writing).
py-spy pauses the process for each sample, which inflates the share of samples
landing in syscalls; compare with the user/system split printed alongside.

``--tool cprofile`` runs ``asgid.run()`` (one in-process worker, the same
``HttpProtocol``/``Cycle`` code, no master) under cProfile and prints the
functions with the most own time and the call counts per request. cProfile
adds a fixed cost to every Python call, so it overstates small Python
functions against C; use it for call counts, py-spy for shares.

Only 127.0.0.1; the server and wrk run in their own process groups
(tests/harness.py's ``Process``) and are stopped by them; every wait has a deadline.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path.insert(0, _ROOT)  # bench.http_bench, next to asgid from this checkout

import argparse  # noqa: E402
import collections  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402
from _common import Process, pinned  # noqa: E402

from bench.http_bench import (  # noqa: E402
    HOST,
    READY_TIMEOUT,
    SCENARIOS,
    STOP_TIMEOUT,
    Scenario,
    Server,
    free_port,
    run_wrk,
)

# -- py-spy ------------------------------------------------------------------------

UVLOOP_FILES = {
    "loop.c", "core.c", "linux.c", "stream.c", "loop-watcher.c", "uv-common.c", "queue.h",
    "tcp.c", "timer.c", "async.c", "signal.c", "heap-inl.h", "process.c", "poll.c",
}  # fmt: skip
HTTPTOOLS_FILES = {"parser.c", "llhttp.c", "api.c", "http.c", "url_parser.c"}
SYSCALLS = {
    "read", "write", "writev", "readv", "recv", "send", "recvmsg", "sendmsg", "recvfrom",
    "sendto", "epoll_wait", "epoll_pwait", "epoll_ctl", "accept4", "close", "shutdown",
    "getsockopt", "setsockopt", "getpeername", "getsockname", "sendfile",
}  # fmt: skip


def frame_part(frame: str) -> str | None:
    """Which part a py-spy frame ``name (file:line)`` belongs to; None = CPython itself."""
    name, _, where = frame.rpartition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    if file.endswith(".py") or file.startswith("<frozen"):
        if "asgid/worker/_protocol.py" in file:
            return "asgid worker/_protocol.py"
        if "asgid/worker/_h1.py" in file:
            return "asgid worker/_h1.py"
        if "asgid/" in file:
            return "asgid (other)"
        if file.endswith("apps.py"):
            return "the app (bench/apps.py)"
        if "starlette/" in file:
            return "starlette"
        if "asyncio/" in file:
            return "asyncio (Python)"
        return "other Python"
    if file == "libc.so.6" or file.startswith("libc"):
        if name in SYSCALLS:
            return f"syscall: {name}"
        return "libc (user space)"
    if file in UVLOOP_FILES:
        return "uvloop + libuv (C)"
    if file in HTTPTOOLS_FILES:
        return "httptools + llhttp (C)"
    if file == "_asynciomodule.c":
        return "asyncio Task/Future (C)"
    return None


def owner(stack: list[str]) -> str:
    for frame in reversed(stack):
        part = frame_part(frame)
        if part is not None:
            return part
    return "CPython (unattributed)"


INCLUSIVE = {
    "task creation: loop.create_task()": lambda f: f.startswith("create_task (loop.c"),
    "transport.write() (uvloop, incl. the write syscall)": lambda f: f.startswith(
        "UVStream_write ("
    ),
    "httptools feed_data() (incl. asgid's parser callbacks)": lambda f: f.startswith(
        "feed_data (parser.c"
    ),
    "HttpProtocol.on_headers_complete (builds scope, Cycle, starts task)": lambda f: f.startswith(
        "HttpProtocol.on_headers_complete ("
    ),
    "Cycle.run (the task: app + send)": lambda f: f.startswith("Cycle.run ("),
    "Cycle.send": lambda f: f.startswith("Cycle.send ("),
    "Response.start + Response.body (_h1)": lambda f: f.startswith(
        ("Response.start (", "Response.body (")
    ),
    "check_head (_h1)": lambda f: f.startswith("check_head ("),
    "uv__read (read syscall + data_received and parser callbacks)": lambda f: f.startswith(
        "uv__read ("
    ),
}


def analyse_raw(path: Path, top: int, kernel_share: float) -> str:
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text().splitlines():
        body, _, count = line.rpartition(" ")
        if not body or not count.isdigit():
            continue
        stacks.append((body.split(";"), int(count)))
    # Waiting in epoll is the loop being idle (wrk had no request in flight), not work.
    idle = sum(
        c for st, c in stacks if owner(st) in ("syscall: epoll_wait", "syscall: epoll_pwait")
    )
    stacks = [
        (st, c)
        for st, c in stacks
        if owner(st) not in ("syscall: epoll_wait", "syscall: epoll_pwait")
    ]
    total = sum(c for _, c in stacks)
    if not total:
        return "no samples"
    parts: collections.Counter[str] = collections.Counter()
    asgid_funcs: collections.Counter[str] = collections.Counter()
    asgid_lines: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for stack, count in stacks:
        part = owner(stack)
        parts[part] += count
        if part.startswith("asgid worker/"):
            for frame in reversed(stack):
                if frame_part(frame) == part:
                    name, _, where = frame.rpartition(" (")
                    asgid_funcs[f"{name} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1]})"] += count
                    asgid_lines[frame] += count
                    break
        for label, match in INCLUSIVE.items():
            if any(match(f) for f in stack):
                inclusive[label] += count
    in_syscalls = sum(c for p, c in parts.items() if p.startswith("syscall:"))
    in_user = total - in_syscalls
    out = [
        f"{total} samples ({idle} more in epoll_wait, left out as idle)",
        "",
        "Own time by part (innermost frame that belongs to a part). py-spy stops the process "
        "for every sample, which over-counts syscalls; the last column rescales the samples "
        f"to the measured split of the worker's CPU time ({kernel_share:.0%} kernel):",
        "",
    ]
    out += ["| part | share of samples | est. share of worker CPU |", "|---|---:|---:|"]
    for part, count in parts.most_common():
        if part.startswith("syscall:"):
            est = kernel_share * count / max(in_syscalls, 1)
        else:
            est = (1 - kernel_share) * count / max(in_user, 1)
        out.append(f"| {part} | {count / total:.1%} | {est:.1%} |")
    out += ["", "Inclusive time of selected operations:", "", "| operation | share |", "|---|---:|"]
    for label in INCLUSIVE:
        out.append(f"| {label} | {inclusive[label] / total:.1%} |")
    out += ["", "Own time in asgid/worker/_protocol.py and _h1.py by function:", ""]
    out += ["| function | share |", "|---|---:|"]
    for func, count in asgid_funcs.most_common(top):
        out.append(f"| {func} | {count / total:.1%} |")
    out += ["", "... and by line:", "", "| line | share |", "|---|---:|"]
    for frame, count in asgid_lines.most_common(top):
        out.append(f"| {frame} | {count / total:.1%} |")
    return "\n".join(out)


def profile_py_spy(args: argparse.Namespace, scenario: Scenario, out_dir: Path) -> None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(py_spy):
        sys.exit("py-spy is not installed: pip install py-spy")
    server = Server("asgid", scenario.app, args.server_cpu, out_dir)
    try:
        server.wait_ready(scenario)
        workers = server.serving_processes(scenario.path)
        if len(workers) != 1:
            sys.exit(f"expected one worker process, found {workers}")
        worker = workers[0]
        print(f"worker pid {worker.pid}: {' '.join(worker.cmdline()).strip()}", flush=True)
        run_wrk(
            server.port,
            scenario,
            cpu=args.client_cpu,
            duration=1,
            connections=args.connections,
            threads=1,
        )
        raw = out_dir / "py-spy.raw"
        cpu0 = worker.cpu_times()
        # wrk runs one second longer than py-spy samples, so every sample is under load.
        wrk = Process(
            pinned(args.client_cpu, [
                "wrk", "-t1", f"-c{args.connections}", f"-d{args.duration + 1}s", "--latency",
                *(["-s", str(Path(_HERE) / scenario.lua)] if scenario.lua else []),
                f"http://{HOST}:{server.port}{scenario.path}",
            ]),
            log=out_dir / "wrk.log",
        )  # fmt: skip
        try:
            spy = subprocess.run(
                pinned(args.client_cpu, [
                    py_spy, "record", "--native", "--rate", str(args.rate), "--format", "raw",
                    "--duration", str(args.duration), "--pid", str(worker.pid), "-o", str(raw),
                ]),
                capture_output=True, text=True, timeout=args.duration + 60, check=False,
            )  # fmt: skip
            wrk.wait(timeout=args.duration + 60)
            wrk_out = wrk.output()
        finally:
            wrk.stop(timeout=10)
        cpu1 = worker.cpu_times()
        if spy.returncode != 0 or not raw.exists():
            sys.exit(f"py-spy failed ({spy.returncode}):\n{spy.stdout}{spy.stderr}")
        rps = [line for line in wrk_out.splitlines() if line.startswith("Requests/sec")]
        user, system = cpu1.user - cpu0.user, cpu1.system - cpu0.system
        print(f"under py-spy: {rps[0] if rps else wrk_out}")
        print(
            f"worker CPU while sampled: user {user:.2f}s, system {system:.2f}s "
            f"(kernel share {system / max(user + system, 1e-9):.0%})"
        )
        print()
        print(analyse_raw(raw, args.top, system / max(user + system, 1e-9)))
        print(f"\nraw stacks (flamegraph.pl / speedscope input): {raw}")
    finally:
        server.stop()


# -- cProfile -------------------------------------------------------------------------

CPROFILE_CHILD = """
import cProfile, sys
import asgid
port, out = int(sys.argv[1]), sys.argv[2]
app = sys.argv[3]
cProfile.run(
    "asgid.run(app, host='127.0.0.1', port=port, access_log=False, log_level='warning')", out
)
"""


def profile_cprofile(args: argparse.Namespace, scenario: Scenario, out_dir: Path) -> None:
    port = free_port()
    stats_path = out_dir / "cprofile.pstats"
    server = Process(
        pinned(args.server_cpu, [
            sys.executable, "-c", CPROFILE_CHILD, str(port), str(stats_path), scenario.app,
        ]),
        log=out_dir / "cprofile-server.log", cwd=Path(_ROOT),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        from bench.http_bench import http_request

        while True:
            if server.returncode is not None:
                sys.exit(f"server exited: {server.output()}")
            try:
                status, _, body = http_request(port, scenario.method, scenario.path, scenario.body)
                if status == 200 and scenario.expect(body):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit("server did not become ready")
            time.sleep(0.05)
        result = run_wrk(
            port,
            scenario,
            cpu=args.client_cpu,
            duration=args.duration,
            connections=args.connections,
            threads=1,
        )
        print(f"under cProfile: {result.rps:,.0f} req/s, {result.requests} requests")
    finally:
        server.stop(STOP_TIMEOUT + 20)  # cProfile writes its stats on the way out
    if not stats_path.exists():
        sys.exit("cProfile wrote no stats (did the server stop cleanly?)")
    stats = pstats.Stats(str(stats_path))
    requests = max(1, result.requests)
    by_part: collections.Counter[str] = collections.Counter()
    total = 0.0
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tt
        if "_protocol.py" in file:
            part = "asgid worker/_protocol.py"
        elif "_h1.py" in file:
            part = "asgid worker/_h1.py"
        elif "asgid/" in file:
            part = "asgid (other)"
        elif file.endswith("apps.py"):
            part = "the app"
        elif file == "~":
            if "uvloop" in func:
                part = "uvloop (C methods)"
            elif "httptools" in func:
                part = "httptools (C methods, excl. callbacks)"
            else:
                part = "other C builtins"
        elif "starlette" in file:
            part = "starlette"
        else:
            part = "other Python"
        by_part[part] += tt
        rows.append((tt, nc, ct, file, line, func))
    print("\nOwn time by part (cProfile tottime):\n")
    print("| part | share |\n|---|---:|")
    for part, tt in by_part.most_common():
        print(f"| {part} | {tt / total:.1%} |")
    print(f"\nTop {args.top} functions by own time (calls per request = ncalls / {requests}):\n")
    print("| own share | calls/request | cumulative share | function |\n|---:|---:|---:|---|")
    for tt, nc, ct, file, line, func in sorted(rows, reverse=True)[: args.top]:
        where = func if file == "~" else f"{func} ({file.rsplit('/', 2)[-2:][-1]}:{line})"
        print(f"| {tt / total:.1%} | {nc / requests:.2f} | {ct / total:.1%} | {where} |")
    print(f"\nstats: {stats_path} (python -m pstats)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tool", choices=("py-spy", "cprofile"), default="py-spy")
    parser.add_argument("--scenario", choices=list(SCENARIOS), default="plaintext")
    parser.add_argument("--duration", type=int, default=8, help="seconds sampled under load")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="directory for raw output")
    args = parser.parse_args()
    scenario = SCENARIOS[args.scenario]
    results = Path(_HERE) / "results"
    results.mkdir(exist_ok=True)
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="asgid-profile-", dir=results))
    out_dir.mkdir(parents=True, exist_ok=True)
    psutil.Process().cpu_affinity()  # fail early where affinity is not available
    if args.tool == "py-spy":
        profile_py_spy(args, scenario, out_dir)
    else:
        profile_cprofile(args, scenario, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
