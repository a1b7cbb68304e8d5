"""asgid in a container, black-box: a good PID 1, a subreaper, and honest readiness.

The master adopts and reaps orphans (``PR_SET_CHILD_SUBREAPER``, or as PID 1
in its own PID namespace), a worker's leftover subprocesses die with it, and
``/readyz`` says 503 for as long as a drain runs while ``/healthz`` stays 200.
The app is ``tests/apps/containers.py``; the PID 1 test needs ``unshare`` and
root, and is skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from harness import Process
from helpers import APPS, StartServer, base_env, free_port, wait_until
from supervision import FAST, alive, get, wait_for_workers

APP = "containers:app"


def gone(pid: int) -> bool:
    """Exited and reaped: not even a zombie is left."""
    return not psutil.pid_exists(pid)


def zombies(pid: int) -> list[int]:
    """The children of ``pid`` that have exited and wait to be reaped."""
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.status() == psutil.STATUS_ZOMBIE:
                found.append(child.pid)
    return found


def test_a_killed_workers_subprocess_dies_with_it(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "1", *FAST)
    (worker,) = wait_for_workers(server, 1)
    sleeper = int(get(server, "/spawn"))
    assert psutil.Process(sleeper).ppid() == worker
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: gone(sleeper), 5)  # killed with its group, then reaped
    wait_until(lambda: not zombies(server.pid), 5)
    wait_for_workers(server, 1, unlike={worker})


def ignored_signals(pid: int) -> set[signal.Signals]:
    """The signals ``pid`` ignores (SigIgn in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        mask = int(next(line for line in f if line.startswith("SigIgn:")).split()[1], 16)
    return {s for s in signal.Signals if s < 64 and mask & (1 << (s - 1))}


def test_the_apps_subprocesses_start_with_default_signal_actions(
    start_server: StartServer,
) -> None:
    # The worker leaves SIGTERM, SIGINT and SIGHUP to the master, but by
    # catching them: an ignored signal would stay ignored in what the app
    # starts, and a helper it stops with SIGTERM would never stop.
    server = start_server(APP, "--workers", "1", *FAST)
    wait_for_workers(server, 1)
    sleeper = int(get(server, "/spawn"))
    ignored = ignored_signals(sleeper)
    assert not ignored & {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2}, ignored
    os.kill(sleeper, signal.SIGTERM)
    wait_until(lambda: not alive(sleeper), 5)  # dead (its parent, the app, never waits)


def test_the_master_adopts_and_reaps_orphans(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "1", *FAST)
    (worker,) = wait_for_workers(server, 1)
    orphan = int(get(server, "/orphan"))
    # Its shell has exited: the orphan belongs to the master (a subreaper) now.
    wait_until(lambda: psutil.Process(orphan).ppid() == server.pid, 5)
    os.kill(orphan, signal.SIGKILL)  # it ignores SIGTERM, as the worker that started it does
    wait_until(lambda: gone(orphan), 5)
    assert not zombies(server.pid)
    assert wait_for_workers(server, 1) == {worker}  # no worker was confused with it
    assert get(server, "/pid") == str(worker)


def test_a_drained_workers_leftovers_are_stopped(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "1", *FAST)
    wait_for_workers(server, 1)
    sleeper = int(get(server, "/spawn"))
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    wait_until(lambda: not alive(sleeper), 5)


def test_readyz_is_503_for_the_whole_drain(start_server: StartServer, tmp_path: Path) -> None:
    metrics_port = free_port()
    markers = tmp_path / "markers"
    markers.mkdir()
    server = start_server(
        "supervised:app",
        "--workers",
        "1",
        *FAST,
        "--metrics-bind",
        f"127.0.0.1:{metrics_port}",
        env={"TEST_MARKERS": str(markers)},
    )
    wait_for_workers(server, 1)
    base = f"http://127.0.0.1:{metrics_port}"
    wait_until(lambda: httpx.get(base + "/readyz", timeout=5).status_code == 200, 10)
    results: list[object] = []

    def slow() -> None:
        try:
            results.append(httpx.get(server.url + "/slow?3", timeout=10).status_code)
        except httpx.HTTPError as exc:
            results.append(exc)

    client = threading.Thread(target=slow, daemon=True)
    client.start()
    wait_until(lambda: any(markers.glob("slow-*")), 5)
    server.signal(signal.SIGTERM)  # no shutdown_delay: the drain starts at once
    asked = 0
    while not results:  # the drain runs as long as the slow request does
        try:
            readyz = httpx.get(base + "/readyz", timeout=5)
            healthz = httpx.get(base + "/healthz", timeout=5)
        except httpx.TransportError:
            if results:  # the request finished, and the master with it
                break
            raise
        if results:
            break
        assert readyz.status_code == 503, readyz.text
        assert readyz.text == "shutting down\n"
        assert healthz.status_code == 200
        asked += 1
        client.join(0.05)
    assert asked > 3  # the drain took a while (the request sleeps 3 s), and was watched
    client.join(5)
    assert results == [200]
    assert server.wait(15) == 0


# -- as PID 1 --------------------------------------------------------------------------


@contextlib.contextmanager
def as_pid1(*args: str) -> Iterator[tuple[Process, int, int, Path]]:
    """``unshare --pid --fork --mount-proc python -m asgid ...``: asgid is PID 1 there.

    Yields the unshare process, asgid's pid as this test sees it, the port,
    and the output's path.
    """
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    if os.geteuid() != 0:
        pytest.skip("a new PID namespace needs root here (unshare --pid)")
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"asgid-pid1-{os.getpid()}-{port}.log"
    argv = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "asgid"]
    argv += [APP, "--app-dir", str(APPS), "--host", "127.0.0.1", "--port", str(port), *args]
    proc = Process(argv, log=log, env=base_env())
    try:

        def master() -> int:
            if proc.returncode is not None:
                raise AssertionError(f"unshare exited {proc.returncode}:\n{log.read_text()}")
            children = psutil.Process(proc.pid).children()
            return children[0].pid if children else 0

        wait_until(master, 10)
        yield proc, master(), port, log
    except BaseException:
        print(log.read_text(errors="replace"))
        raise
    finally:
        proc.stop(timeout=0)  # PID 1's death ends its namespace
        log.unlink(missing_ok=True)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_as_pid1_no_zombie_piles_up_and_a_signal_drains(signum: int) -> None:
    with as_pid1("--workers", "2", *FAST) as (proc, master, port, log):
        url = f"http://127.0.0.1:{port}"

        def serving() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url + "/pid", timeout=2).status_code == 200
            return False

        wait_until(serving, 15)
        assert "(pid 1)" in log.read_text()  # "master started (pid 1)"
        for _ in range(5):  # orphans that exit on their own, inside the namespace
            assert httpx.get(url + "/orphan?0.1", timeout=5).status_code == 200

        def settled() -> bool:  # every orphan has exited and been reaped
            names = []
            for child in psutil.Process(master).children():
                with contextlib.suppress(psutil.NoSuchProcess):
                    names.append(child.name())
            return not zombies(master) and "sleep" not in names

        wait_until(settled, 10)
        os.kill(master, signum)  # `docker stop`; ^C on `docker run -it`
        assert proc.wait(15) == 0, log.read_text()
        assert "graceful shutdown" in log.read_text()


def signal_masks(pid: int) -> dict[str, int]:
    """SigBlk, SigIgn and SigCgt of /proc/PID/status, as bit masks."""
    with open(f"/proc/{pid}/status") as f:
        return {
            key: int(value, 16)
            for key, _, value in (line.partition(":") for line in f)
            if key in ("SigBlk", "SigIgn", "SigCgt")
        }


def test_as_pid1_a_sigterm_during_startup_is_not_lost() -> None:
    # PID 1 ignores signals it has no handler for. asgid blocks SIGTERM from
    # its first line until the master handles it, so the signal waits.
    with as_pid1("--workers", "1", *FAST) as (proc, master, _port, log):
        bit = 1 << (signal.SIGTERM - 1)
        first: dict[str, int] = {}

        def held_or_handled() -> bool:
            with contextlib.suppress(OSError, StopIteration):
                masks = signal_masks(master)
                if (masks["SigBlk"] | masks["SigCgt"]) & bit:
                    first.update(masks)
            return bool(first)

        wait_until(held_or_handled, 10, interval=0.001)
        # Blocked while the configuration loads and the sockets bind, before the
        # master's handler exists: a 1 ms poll finds it held and not yet caught.
        assert first["SigBlk"] & bit, first
        assert not first["SigCgt"] & bit, first
        os.kill(master, signal.SIGTERM)  # once, while it is held
        assert proc.wait(20) == 0, log.read_text()
        assert "graceful shutdown" in log.read_text()


def test_run_hands_the_process_back_no_longer_a_subreaper(tmp_path: Path) -> None:
    port = free_port()
    script = tmp_path / "script.py"
    script.write_text(
        "import ctypes, sys\n"
        "import asgid\n"
        "def subreaper():\n"
        "    flag = ctypes.c_int(-1)\n"
        "    ctypes.CDLL(None).prctl(37, ctypes.byref(flag), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER\n"
        "    return flag.value\n"
        f"asgid.run('{APP}', app_dir={str(APPS)!r}, port={port}, log_level='warning')\n"
        "print('subreaper after run():', subreaper(), flush=True)\n"
    )
    log = tmp_path / "script.log"
    proc = Process([sys.executable, str(script)], log=log, cwd=tmp_path, env=base_env())
    try:
        url = f"http://127.0.0.1:{port}/orphan"

        def answers() -> bool:
            if proc.returncode is not None:
                raise AssertionError(log.read_text())
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url, timeout=2).status_code == 200
            return False

        wait_until(answers, 15)
        orphan = int(httpx.get(url + "?0.1", timeout=5).text)
        wait_until(lambda: gone(orphan), 5)  # adopted and reaped while serving
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()
        assert "subreaper after run(): 0" in log.read_text()
    finally:
        proc.stop(timeout=0)
