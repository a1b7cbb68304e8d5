"""What scripts/autobahn and scripts/slowhttptest share: serving an app from
tests/apps with ``python -m asgid`` (or, to compare, ``python -m uvicorn``) on
127.0.0.1, waiting for it to listen, measuring its CPU time, and their
"<script>: ..." output.

Processes start and stop through tests/harness.py's ``Process`` (its own
session, output to a log file, ``stop()`` ends the whole group), the harness
the tests and bench/ use too; ``Process`` and ``free_port`` are re-exported.

Not a script itself: each of them imports it as ``_serve`` (Python puts a
script's own directory first on sys.path).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

# The process harness lives in tests/ (standard library only): put that folder on
# sys.path once, here, so the scripts that import _serve can use it.
_TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if _TESTS not in sys.path:
    sys.path.append(_TESTS)

from harness import ROOT as ROOT  # noqa: E402 - re-exported, after the sys.path entry
from harness import Process as Process  # noqa: E402
from harness import free_port as free_port  # noqa: E402


class Log:
    """Prints "<script>: <message>" lines, flushed at once."""

    def __init__(self, script: str) -> None:
        self.script = script

    def __call__(self, message: str) -> None:
        print(f"{self.script}: {message}", flush=True)

    def skip(self, why: str) -> int:
        """Say "<script>: SKIP: <why>"; the exit status for it (0)."""
        self(f"SKIP: {why}")
        return 0


def unwind_on_sigterm() -> None:
    """Killed (a CI or pytest timeout): unwind, so the finally blocks stop what we started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def server_python() -> str:
    """$PYTHON, else this interpreter (or .venv's python when this one is not a virtualenv)."""
    if os.environ.get("PYTHON"):
        return os.environ["PYTHON"]
    venv = ROOT / ".venv" / "bin" / "python"
    if sys.prefix == sys.base_prefix and venv.exists():
        return str(venv)
    return sys.executable


def start_asgid(app: str, port: int, log_path: Path, *options: str) -> Process:
    """`python -m asgid app` from tests/apps on 127.0.0.1:port, in a new process group.

    Its output goes to log_path; options are further asgid flags.
    """
    return _start_server("asgid", app, port, log_path, "--no-access-log", *options)


def start_uvicorn(app: str, port: int, log_path: Path, *options: str) -> Process:
    """`python -m uvicorn app` from tests/apps on 127.0.0.1:port, in a new process group.

    The same shape as start_asgid, for comparisons; options are further uvicorn flags.
    """
    return _start_server("uvicorn", app, port, log_path, *options)


def _start_server(module: str, app: str, port: int, log_path: Path, *options: str) -> Process:
    """The flags both servers spell alike: the app from tests/apps, 127.0.0.1:port, warnings."""
    apps = str(ROOT / "tests" / "apps")
    common = ["--app-dir", apps, "--host", "127.0.0.1", "--port", str(port)]
    return _spawn(["-m", module, app, *common, "--log-level", "warning", *options], log_path)


def _spawn(args: list[str], log_path: Path) -> Process:
    """server_python() with args, from ROOT, in a new session; output to log_path."""
    return Process(
        [server_python(), *args],
        log=log_path,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def cpu_seconds(proc: Process) -> float | None:
    """User+system CPU seconds of proc and all its descendants, live or reaped.

    Sample it before stop(): a stopped tree has nothing left to count. None
    where psutil is missing or proc is gone.
    """
    try:
        import psutil  # asgid depends on it; this interpreter may not have it
    except ImportError:
        return None
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for process in tree:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue  # exited between the listing and now
        # children_*: descendants it has reaped (recycled workers), no longer in the tree.
        total += times.user + times.system + times.children_user + times.children_system
    return total


def wait_listening(proc: Process, port: int, timeout: float) -> bool:
    """Whether 127.0.0.1:port accepts a connection within timeout (False once proc exits)."""
    try:
        proc.wait_listening(port, timeout=timeout)
    except (RuntimeError, TimeoutError):
        return False
    return True
