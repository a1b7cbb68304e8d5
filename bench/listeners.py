#!/usr/bin/env python3
"""Steady-state cost of the listening-socket design: shared socket vs one per slot.

    python bench/listeners.py --ref b25282f --rounds 3 --duration 5

asgid serves every address from one socket that all workers share (so no
connection waits on a worker that cannot serve it). Until that change it
bound one SO_REUSEPORT socket per worker slot. This script measures what the
shared socket costs when nothing goes wrong: the working tree ("shared")
against ``--ref`` checked out in a temporary git worktree ("per-slot"), with
1, 2 and 4 workers, under two loads:

- ``keepalive``: wrk with 64 keep-alive connections;
- ``close``: wrk with 16 connections and ``Connection: close``, so every
  request is a new connection (accept() and the wake-ups it causes dominate).

Reported per (load, workers, design): req/s and server CPU per request (the
master and all workers, user + system) as medians over ``--rounds``
interleaved rounds, wrk's p99, and how the requests spread over the workers
(each worker counts what it served and writes the count at shutdown:
``max/mean`` of the counts, 1.00 is perfectly even).

The server is pinned to core 0 and wrk to core 1 (on a 2-core machine every
worker shares core 0: this measures CPU per request, not scaling). Every
server runs in its own process group and is stopped by it; every wait has a
deadline; only 127.0.0.1 is used. Raw numbers go to
bench/results/listeners-<time>.json, server logs to bench/results/listeners-<time>-logs/.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

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
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOADS = {
    "keepalive": ["-c", "64"],
    "close": ["-c", "16", "-H", "Connection: close"],
}


@dataclass
class Run:
    load: str
    workers: int
    design: str
    round: int
    rps: float
    cpu_us_per_request: float
    p99_ms: float
    spread: float  # max/mean of per-worker request counts
    per_worker: list[int]


def wait_answering(port: int, server: Process) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.returncode is not None:
            raise RuntimeError(f"server exited with {server.returncode}:\n{server.tail()}")
        url = f"http://{HOST}:{port}/"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            response.read()
            return
        time.sleep(0.05)
    raise RuntimeError("server did not answer in time")


def wait_workers(master: psutil.Process, count: int) -> list[psutil.Process]:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        children = master.children()
        if len(children) == count:
            return children
        time.sleep(0.05)
    raise RuntimeError(f"wanted {count} workers, have {len(master.children())}")


def wrk(port: int, load: str, duration: float) -> tuple[float, float]:
    """(req/s, p99 ms) of one wrk run pinned to core 1."""
    args = ["taskset", "-c", "1", "wrk", "-t1", "-d", f"{duration:g}s", "--latency"]
    args += [*LOADS[load], f"http://{HOST}:{port}/"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    match = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99 = float(match.group(1)) * scale[match.group(2)] if match else float("nan")
    return rps, p99


def measure(
    design: str, source: Path, load: str, workers: int, duration: float, rnd: int, log: Path
) -> Run:
    port = free_port()
    with tempfile.TemporaryDirectory() as counts:
        env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{BENCH}", "SPREAD_DIR": counts}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        cmd = [sys.executable, "-m", "asgid", "spread_app:app"]
        cmd += ["--workers", str(workers), "--host", HOST, "--port", str(port)]
        cmd += ["--log-level", "warning", "--no-access-log"]
        server = Process(pinned(0, cmd), log=log, env=env, cwd=source)
        try:
            wait_answering(port, server)
            master = psutil.Process(server.pid)
            procs = [master, *wait_workers(master, workers)]
            wrk(port, load, 1.0)  # warm-up
            for name in os.listdir(counts):  # count only the measured run
                os.unlink(os.path.join(counts, name))
            before = cpu_seconds(procs)
            rps, p99 = wrk(port, load, duration)
            after = cpu_seconds(procs)
        finally:
            server.stop(STOP_TIMEOUT)
        per_worker = sorted(int(Path(counts, name).read_text()) for name in os.listdir(counts))
    used = sum(after.get(pid, 0.0) - t for pid, t in before.items())
    total = rps * duration
    mean = sum(per_worker) / len(per_worker) if per_worker else float("nan")
    return Run(
        load=load,
        workers=workers,
        design=design,
        round=rnd,
        rps=rps,
        cpu_us_per_request=used / total * 1e6 if total else float("nan"),
        p99_ms=p99,
        spread=max(per_worker) / mean if per_worker and mean else float("nan"),
        per_worker=per_worker,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default="b25282f", help="the per-slot design's commit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--loads", default=",".join(LOADS))
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    loads = args.loads.split(",")

    results = BENCH / "results"
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = results / f"listeners-{stamp}-logs"
    old = Path(tempfile.mkdtemp(prefix="asgid-per-slot-"))
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old), args.ref],
        check=True,
        timeout=60,
    )
    designs = {"shared": ROOT, "per-slot": old}
    runs: list[Run] = []
    try:
        for rnd in range(args.rounds):
            for load in loads:
                for workers in counts:
                    order = list(designs) if rnd % 2 == 0 else list(reversed(designs))
                    for design in order:
                        log = log_dir / f"r{rnd}-{load}-w{workers}-{design}.log"
                        run = measure(
                            design, designs[design], load, workers, args.duration, rnd, log
                        )
                        runs.append(run)
                        print(
                            f"round {rnd} {load:9} {workers} worker(s) {design:8} "
                            f"{run.rps:9.0f} req/s {run.cpu_us_per_request:6.1f} us/req "
                            f"p99 {run.p99_ms:6.2f} ms spread {run.spread:.2f} {run.per_worker}",
                            flush=True,
                        )
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
            timeout=60,
            check=False,
        )

    print(f"\n{machine()}; asgid {git_state()} vs {args.ref}; medians of {args.rounds} rounds")
    print("| load | workers | design | req/s | CPU µs/req | p99 ms | spread max/mean |")
    print("|---|---|---|---|---|---|---|")
    for load in loads:
        for workers in counts:
            for design in designs:
                mine = [r for r in runs if (r.load, r.workers, r.design) == (load, workers, design)]
                print(
                    f"| {load} | {workers} | {design} | {median([r.rps for r in mine]):.0f} | "
                    f"{median([r.cpu_us_per_request for r in mine]):.1f} | "
                    f"{median([r.p99_ms for r in mine]):.2f} | "
                    f"{median([r.spread for r in mine]):.2f} |"
                )
    results.mkdir(exist_ok=True)
    out = results / f"listeners-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "machine": machine(),
                "asgid": git_state(),
                "ref": args.ref,
                "versions": package_versions(["uvloop", "httptools"]),
                "runs": [asdict(r) for r in runs],
            },
            indent=1,
        )
    )
    print(f"raw numbers: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
