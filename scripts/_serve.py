"""What scripts/autobahn and scripts/slowhttptest share: serving an app from
tests/apps with ``python -m asgid`` (or, to compare, ``python -m uvicorn``) on
127.0.0.1, waiting for it to listen, measuring its CPU time, stopping the
process groups they start, and their "<script>: ..." output.

Not a script itself: each of them imports it as ``_serve`` (Python puts a
script's own directory first on sys.path).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_asgid(app: str, port: int, log_path: Path, *options: str) -> subprocess.Popen[bytes]:
    """`python -m asgid app` from tests/apps on 127.0.0.1:port, in a new process group.

    Its output goes to log_path; options are further asgid flags.
    """
    return _start_server("asgid", app, port, log_path, "--no-access-log", *options)


def start_uvicorn(app: str, port: int, log_path: Path, *options: str) -> subprocess.Popen[bytes]:
    """`python -m uvicorn app` from tests/apps on 127.0.0.1:port, in a new process group.

    The same shape as start_asgid, for comparisons; options are further uvicorn flags.
    """
    return _start_server("uvicorn", app, port, log_path, *options)


def _start_server(
    module: str, app: str, port: int, log_path: Path, *options: str
) -> subprocess.Popen[bytes]:
    """The flags both servers spell alike: the app from tests/apps, 127.0.0.1:port, warnings."""
    apps = str(ROOT / "tests" / "apps")
    common = ["--app-dir", apps, "--host", "127.0.0.1", "--port", str(port)]
    return _spawn(["-m", module, app, *common, "--log-level", "warning", *options], log_path)


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """server_python() with args, from ROOT, in a new session; output to log_path."""
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            [server_python(), *args],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def cpu_seconds(proc: subprocess.Popen[bytes]) -> float | None:
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


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    """Whether 127.0.0.1:port accepts a connection within timeout (False once proc exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        time.sleep(0.05)
    return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process group the script started: SIGTERM, up to 10 s, then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
