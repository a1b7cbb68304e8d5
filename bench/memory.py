#!/usr/bin/env python3
"""Idle memory of the whole process tree: asgid, uvicorn and gunicorn, 1 and 4 workers.

    python bench/memory.py                       # raw ASGI and FastAPI apps, 1 and 4 workers
    python bench/memory.py --apps app --workers 4

Each server starts on 127.0.0.1 serving an app from bench/apps.py, answers one
request per worker's worth of connections, settles, and then every process of
its tree is measured from /proc (psutil's memory_full_info): RSS, PSS
(shared pages divided among the processes that map them: what a container's
memory accounting adds up) and USS (pages only this process has). The table
gives whole-tree PSS and the master's and a worker's PSS and USS; the median
of ``--rounds`` interleaved rounds. Every server runs in its own session and
is stopped by it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psutil
from _common import HOST, Process, free_port, http_get, wait_until

BENCH = Path(__file__).resolve().parent
SERVERS = ("asgid", "uvicorn", "gunicorn")
MiB = 1 << 20


def command(server: str, app: str, port: int, workers: int) -> list[str]:
    py = sys.executable
    if server == "asgid":
        return [
            py, "-m", "asgid", f"apps:{app}", "--host", HOST, "--port", str(port),
            "--workers", str(workers), "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    if server == "uvicorn":
        return [
            py, "-m", "uvicorn", f"apps:{app}", "--host", HOST, "--port", str(port),
            "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    if server == "gunicorn":
        return [
            py, "-m", "gunicorn", f"apps:{app}", "-b", f"{HOST}:{port}", "-w", str(workers),
            "-k", "uvicorn_worker.UvicornWorker", "--log-level", "warning",
        ]  # fmt: skip
    raise ValueError(server)


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def measure(server: str, app: str, workers: int, log_dir: Path) -> dict[str, float]:
    port = free_port()
    path = "/json" if app != "app" else "/plaintext"
    process = Process(
        command(server, app, port, workers),
        log=log_dir / f"{server}-{app}-{workers}.log",
        cwd=BENCH,
    )
    try:
        process.wait_listening(port, timeout=60)
        # uvicorn with one worker serves in its own process; every other tree
        # is a master and its workers.
        expected = 1 if (server == "uvicorn" and workers == 1) else workers + 1
        wait_until(lambda: len(tree(process.pid)) >= expected, timeout=60)
        for _ in range(4 * workers):  # every worker has served (and imported what it needs)
            status, _ = http_get(port, path)
            assert status == 200, (server, app, status)
        time.sleep(1.0)  # let the last responses' buffers go (not a sync point: idle memory)
        rows = []
        for proc in tree(process.pid):
            info = proc.memory_full_info()
            rows.append((proc.pid, info.rss, info.pss, info.uss))
    finally:
        process.stop()
    master, *workers_rows = rows
    worker = workers_rows[0] if workers_rows else master
    return {
        "tree_pss": sum(r[2] for r in rows) / MiB,
        "master_pss": master[2] / MiB if workers_rows else 0.0,
        "master_uss": master[3] / MiB if workers_rows else 0.0,
        "worker_pss": worker[2] / MiB,
        "worker_uss": worker[3] / MiB,
        "processes": len(rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apps", default="app,fastapi_app", help="apps from bench/apps.py")
    parser.add_argument("--workers", default="1,4")
    parser.add_argument("--servers", default=",".join(SERVERS))
    args = parser.parse_args()
    log_dir = BENCH / "results" / f"memory-{time.strftime('%Y%m%d-%H%M%S')}-logs"
    cases = [
        (app, int(n), server)
        for app in args.apps.split(",")
        for n in args.workers.split(",")
        for server in args.servers.split(",")
    ]
    results: dict[tuple[str, int, str], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for case in cases:
            results.setdefault(case, []).append(measure(case[2], case[0], case[1], log_dir))
    print("| app | workers | server | tree PSS MiB | master PSS / USS | worker PSS / USS |")
    print("|---|---|---|---|---|---|")
    for (app, n, server), runs in results.items():

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(run[key] for run in runs)

        master = f"{med('master_pss'):.1f} / {med('master_uss'):.1f}" if med("master_pss") else "-"
        print(
            f"| {app} | {n} | {server} | {med('tree_pss'):.1f} | {master} | "
            f"{med('worker_pss'):.1f} / {med('worker_uss'):.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
