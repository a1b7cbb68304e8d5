"""Helpers every benchmark script shares: CPU accounting, run metadata, one GET.

The scripts run as ``python bench/<name>.py``, which puts bench/ on sys.path,
so they import this module as ``_common``. Processes are started and stopped
with tests/harness.py (``Process``: its own session, output to a log file, the
whole group stopped), the one harness the tests, bench/ and scripts/ share;
this module re-exports what the benchmarks use of it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import psutil

# The process harness lives in tests/ (standard library only): put that folder on
# sys.path once, here, so every benchmark that imports _common can import it.
_TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if _TESTS not in sys.path:
    sys.path.append(_TESTS)

from harness import HOST as HOST  # noqa: E402 - re-exported, after the sys.path entry
from harness import ROOT as ROOT  # noqa: E402
from harness import Process as Process  # noqa: E402
from harness import free_port as free_port  # noqa: E402
from harness import wait_until as wait_until  # noqa: E402


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    """CPU seconds (user + system) used so far, by PID."""
    times = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            times[proc.pid] = t.user + t.system
    return times


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of ``names``, and wrk's."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    if "asgid" in versions:
        from asgid._version import build  # what this checkout runs: compiled in place or not

        versions["asgid"] += f" ({build()} hot path)"
    try:
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
        versions["wrk"] = (wrk.stdout + wrk.stderr).split("Copyright")[0].strip()
    except (OSError, subprocess.TimeoutExpired):
        versions["wrk"] = "?"
    return versions


def git_state() -> str:
    """The commit asgid was measured at, with "+dirty" when the tree had changes."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "asgid"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return rev + ("+dirty" if dirty else "")


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def server_and_client_cpus() -> tuple[int | None, int | None]:
    """Cores 0 (server) and 1 (load generator) when both are ours and taskset
    exists; (None, None), meaning unpinned, otherwise."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) >= 2 and {0, 1} <= cpus and shutil.which("taskset"):
        return 0, 1
    return None, None


def pinned(cpu: int | None, cmd: list[str]) -> list[str]:
    """``cmd`` pinned to one core with taskset (which execs: the pid stays the same)."""
    return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET on its own connection; (status, body) — bodies here are small."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b"\r\n", 1)[0].split()[1]), body
