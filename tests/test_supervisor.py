"""The supervisor, black-box: real masters, real workers, real signals, real sockets.

Every server runs ``python -m asgid`` in its own process group on 127.0.0.1
(the ``start_server`` fixture) and serves ``tests/apps/supervised.py`` unless a
test writes its own app into ``tmp_path``. Workers are found as the master's
children (psutil) and through ``/pid``, which answers the serving worker's pid.
Every wait has a deadline and every client loop a bound on count and time.
"""

from __future__ import annotations

import os
import re
import signal
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Set
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import Server, StartServer, raw_request, wait_until

APP = "supervised:app"
FAST = ("--timeout-graceful-shutdown", "5", "--timeout", "5", "--no-access-log")


# -- helpers ---------------------------------------------------------------------------


def worker_pids(server: Server) -> set[int]:
    """The master's live workers (draining ones included; not --reload's watcher)."""
    try:
        children = psutil.Process(server.pid).children()
    except psutil.NoSuchProcess:
        return set()
    return {c.pid for c in children if _alive(c.pid) and not _is_watcher(c)}


def _is_watcher(process: psutil.Process) -> bool:
    try:
        return "asgid: watcher" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def get(server: Server, path: str = "/", timeout: float = 5.0) -> str:
    """The body of a 200 response to ``GET path`` on a new connection."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    response = raw_request(server, request.encode(), timeout=timeout)
    assert response.status == 200, response.head
    return response.body.decode()


def get_pid(server: Server) -> int:
    """The pid of the worker that serves one request on a new connection."""
    return int(get(server, "/pid"))


def answering_pids(server: Server, attempts: int = 20) -> set[int]:
    """Pids of the workers that answered ``attempts`` requests on new connections.

    All workers accept on one shared socket, so which one answers is up to
    the kernel: on an idle server it is often the same one every time.
    """
    return {get_pid(server) for _ in range(attempts)}


def ready_pids(server: Server) -> set[int]:
    """The workers the master has logged as ready."""
    return {int(pid) for pid in re.findall(r"\(pid (\d+)\) ready", server.output())}


def wait_for_workers(
    server: Server, count: int, *, unlike: Set[int] = frozenset(), timeout: float = 15.0
) -> set[int]:
    """Wait until the master has exactly ``count`` workers, none of them in
    ``unlike``, each of them ready, and the server answers."""

    def settled() -> bool:
        pids = worker_pids(server)
        return len(pids) == count and not pids & unlike and pids <= ready_pids(server)

    try:
        wait_until(settled, timeout)
    except TimeoutError:
        raise AssertionError(
            f"wanted {count} ready workers not in {sorted(unlike)}, "
            f"have {sorted(worker_pids(server))}"
        ) from None
    pids = worker_pids(server)
    assert answering_pids(server, 5) <= pids
    return pids


def wait_for_log(server: Server, pattern: str, *, count: int = 1, timeout: float = 15.0) -> str:
    """Wait until ``pattern`` (a regex) occurs ``count`` times in the server's output."""
    try:
        wait_until(lambda: len(re.findall(pattern, server.output())) >= count, timeout)
    except TimeoutError:
        raise AssertionError(f"{pattern!r} not logged {count} time(s)") from None
    return server.output()


class ClientLoop:
    """Two client threads, one opening a new connection per request and one
    reusing a keep-alive connection, each bounded in requests and seconds.

    Every failed request (connection error, timeout, non-200) is recorded.
    """

    def __init__(self, url: str, *, max_requests: int = 20_000, max_seconds: float = 60.0):
        self.url = url + "/pid"
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.errors: list[str] = []
        self.pids: Counter[int] = Counter()
        self.done = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(keep_alive,), daemon=True)
            for keep_alive in (False, True)
        ]

    def __enter__(self) -> ClientLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def _run(self, keep_alive: bool) -> None:
        deadline = time.monotonic() + self.max_seconds
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        with httpx.Client(timeout=10.0, limits=limits) as client:
            for _ in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    break
                try:
                    response = client.get(self.url)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(f"keep_alive={keep_alive}: {exc!r}")
                    continue
                with self._lock:
                    if response.status_code == 200:
                        self.done += 1
                        self.pids[int(response.text)] += 1
                    else:
                        self.errors.append(f"keep_alive={keep_alive}: {response.status_code}")

    def join(self) -> None:
        """Wait until both threads have made their requests (or run out of time)."""
        for thread in self._threads:
            thread.join(self.max_seconds + 15)
            assert not thread.is_alive(), "client thread did not stop"

    def wait_for(self, requests: int, timeout: float = 15.0) -> None:
        """Wait until ``requests`` more requests have been answered."""

        def answered() -> int:
            return self.done + len(self.errors)

        target = answered() + requests
        wait_until(lambda: answered() >= target, timeout)


def write_app(path: Path, body: str) -> None:
    """An app in ``path`` answering ``body`` (text) on every request."""
    path.write_text(
        textwrap.dedent(
            f"""\
            import os

            BODY = {body!r}


            async def app(scope, receive, send):
                if scope["type"] == "lifespan":
                    while True:
                        message = await receive()
                        await send({{"type": message["type"] + ".complete"}})
                        if message["type"] == "lifespan.shutdown":
                            return
                if scope["path"] == "/pid":
                    text = str(os.getpid())
                else:
                    text = BODY
                await send({{"type": "http.response.start", "status": 200, "headers": []}})
                await send({{"type": "http.response.body", "body": text.encode()}})
            """
        )
    )


# -- workers ------------------------------------------------------------------------------


def test_configured_number_of_workers_serve(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "3", *FAST)
    workers = wait_for_workers(server, 3)
    assert len(workers) == 3
    assert all(psutil.Process(pid).ppid() == server.pid for pid in workers)


def test_killed_worker_is_replaced(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "2", *FAST)
    workers = wait_for_workers(server, 2)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    # Every request from now on is answered: connections that land on the dead
    # worker's socket wait in its queue for the replacement.
    for _ in range(20):
        assert get_pid(server) != victim
    wait_for_workers(server, 2, unlike={victim})
    assert f"(pid {victim}) died (signal SIGKILL)" in server.output()


def test_sigttin_and_sigttou_change_the_worker_count(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "2", *FAST)
    wait_for_workers(server, 2)
    server.signal(signal.SIGTTIN)
    wait_for_workers(server, 3)
    server.signal(signal.SIGTTOU)
    wait_for_workers(server, 2)
    server.signal(signal.SIGTTOU)
    workers = wait_for_workers(server, 1)
    server.signal(signal.SIGTTOU)  # never below one worker
    wait_for_log(server, "not scaling below 1 worker")
    assert worker_pids(server) == workers


# -- reloads ----------------------------------------------------------------------------


def test_reloads_drop_no_request_and_replace_every_worker(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "2", *FAST)
    first = wait_for_workers(server, 2)
    with ClientLoop(server.url) as client:
        client.wait_for(50)
        workers = first
        for _ in range(3):
            server.signal(signal.SIGHUP)
            workers = wait_for_workers(server, 2, unlike=workers)
            client.wait_for(50)
    assert client.errors == []
    assert not workers & first
    assert len(client.pids) >= 2 * 4, client.pids  # every generation served requests
    assert client.pids.keys() >= first | workers


def test_reload_serves_the_new_code(start_server: StartServer, tmp_path: Path) -> None:
    write_app(tmp_path / "live.py", "version one")
    server = start_server("live:app", "--workers", "2", *FAST, app_dir=tmp_path)
    workers = wait_for_workers(server, 2)
    assert get(server) == "version one"
    write_app(tmp_path / "live.py", "the second version")
    server.signal(signal.SIGHUP)
    wait_for_workers(server, 2, unlike=workers)
    assert {get(server) for _ in range(20)} == {"the second version"}


def test_reload_with_a_syntax_error_keeps_the_old_workers(
    start_server: StartServer, tmp_path: Path
) -> None:
    app = tmp_path / "live.py"
    write_app(app, "version one")
    server = start_server("live:app", "--workers", "2", *FAST, app_dir=tmp_path)
    workers = wait_for_workers(server, 2)
    app.write_text(app.read_text() + "\ndef broken(:\n")
    server.signal(signal.SIGHUP)
    output = wait_for_log(server, "reload failed")
    assert "SyntaxError" in output
    assert worker_pids(server) == workers
    assert answering_pids(server) <= workers
    assert {get(server) for _ in range(10)} == {"version one"}

    write_app(app, "version three, fixed")
    server.signal(signal.SIGHUP)
    wait_for_workers(server, 2, unlike=workers)
    assert {get(server) for _ in range(10)} == {"version three, fixed"}


def test_reload_with_a_broken_config_file_keeps_serving(
    start_server: StartServer, tmp_path: Path
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'[app]\ntarget = "{APP}"\n[workers]\ncount = 2\ngraceful_timeout = 5\n')
    server = start_server("-c", str(config))
    workers = wait_for_workers(server, 2)
    config.write_text("[workers]\ncount = = 3\n")
    server.signal(signal.SIGHUP)
    wait_for_log(server, "reload aborted")
    assert worker_pids(server) == workers
    assert answering_pids(server) <= workers

    config.write_text(f'[app]\ntarget = "{APP}"\n[workers]\ncount = 3\ngraceful_timeout = 5\n')
    server.signal(signal.SIGHUP)
    wait_for_workers(server, 3, unlike=workers)


# -- recycling ----------------------------------------------------------------------------


def test_max_requests_recycles_workers_without_dropping_requests(
    start_server: StartServer,
) -> None:
    server = start_server(APP, "--workers", "2", "--limit-max-requests", "50", *FAST)
    first = wait_for_workers(server, 2)
    with ClientLoop(server.url, max_requests=200, max_seconds=30) as client:
        client.join()
    assert client.errors == []
    assert client.done == 400
    assert len(client.pids) > 2, client.pids
    assert set(client.pids) - first
    assert "due for replacement: max_requests" in server.output()


def test_max_memory_recycles_a_big_worker(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "1", "--max-memory", "80MiB", *FAST)
    big = int(get(server, "/grow?100", timeout=10))
    wait_until(lambda: get_pid(server) != big, 15)  # sampled every 5 s
    wait_for_workers(server, 1, unlike={big})
    output = server.output()
    assert re.search(rf"\(pid {big}\) uses \d+ MiB, above max_memory 80 MiB", output)
    assert f"(pid {big}) is due for replacement: memory" in output


# -- failures -----------------------------------------------------------------------------


def test_blocked_worker_is_killed_with_a_stack_dump(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "1", *FAST, "--timeout", "2")
    (hung,) = wait_for_workers(server, 1)
    errors: list[BaseException] = []

    def block() -> None:
        try:
            httpx.get(server.url + "/block?60", timeout=30)
        except httpx.HTTPError as exc:
            errors.append(exc)

    blocker = threading.Thread(target=block, daemon=True)
    started = time.monotonic()
    blocker.start()
    wait_until(lambda: not _alive(hung), 2 + 3 + 3)  # timeout + kill grace + a margin
    killed_after = time.monotonic() - started
    blocker.join(10)
    assert errors, "the blocked request should fail when its worker is killed"
    wait_for_workers(server, 1, unlike={hung})
    output = server.output()
    assert f"(pid {hung}) sent no heartbeat" in output
    assert "Fatal Python error: Aborted" in output
    assert re.search(r'File ".*supervised\.py", line \d+ in app', output), output
    assert killed_after < 2 + 5


def test_crash_loop_backs_off(start_server: StartServer) -> None:
    # Workers that die right after they became ready are failing to boot.
    server = start_server(APP, "--workers", "1", *FAST)
    for crashes in (1, 2, 3):
        (worker,) = wait_for_workers(server, 1)
        assert get_pid(server) == worker  # it became ready and serves
        with pytest.raises((OSError, EOFError)):
            get(server, "/crash")
        wait_for_log(server, rf"\(pid {worker}\) died \(exit code 1\) 0\.\ds after it became")
        wait_for_workers(server, 1, unlike={worker})
        if crashes == 1:
            assert "retrying in" not in server.output()  # the first is immediate
    output = server.output()
    assert "worker 0 failed to boot 2 times in a row; retrying in 1.0s" in output
    assert "worker 0 failed to boot 3 times in a row; retrying in 2.0s" in output


def test_a_worker_that_served_is_replaced_without_backoff(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "1", *FAST)
    for _ in range(3):
        (worker,) = wait_for_workers(server, 1)
        deadline = time.monotonic() + 1.5  # past the boot window: it served
        while time.monotonic() < deadline:
            assert get_pid(server) == worker
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        (new,) = wait_for_workers(server, 1, unlike={worker})
        assert get_pid(server) == new
        assert time.monotonic() - killed < 2.0  # replaced at once, every time
    assert "retrying in" not in server.output()


@pytest.mark.parametrize(
    ("target", "code", "reason"),
    [
        ("failing_startup:app", 3, "database unreachable at db:5432"),
        ("no_such_module:app", 4, "could not import module 'no_such_module'"),
        ("supervised:nothing", 4, "attribute 'nothing' not found in module 'supervised'"),
    ],
)
def test_boot_failure_exits_with_the_reason(
    start_server: StartServer, target: str, code: int, reason: str
) -> None:
    server = start_server(target, "--workers", "2", wait=False)
    assert server.wait(20) == code
    output = server.output()
    assert reason in output
    assert "Traceback" not in output
    # The master's last word; the other worker's own lines may come after it.
    assert any(
        line.startswith("asgid: error: ") and reason in line for line in output.splitlines()
    ), output
    assert not worker_pids(server)


# -- stopping -------------------------------------------------------------------------------


def test_sigterm_finishes_requests_and_runs_lifespan_shutdown(
    start_server: StartServer, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    server = start_server(APP, "--workers", "2", *FAST, env={"TEST_MARKERS": str(markers)})
    workers = wait_for_workers(server, 2)
    result: list[httpx.Response | BaseException] = []

    def slow() -> None:
        try:
            result.append(httpx.get(server.url + "/slow?2", timeout=10))
        except httpx.HTTPError as exc:
            result.append(exc)

    client = threading.Thread(target=slow, daemon=True)
    client.start()
    wait_until(lambda: any(markers.glob("slow-*")), 5)
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    client.join(5)
    assert len(result) == 1
    response = result[0]
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 200
    assert response.text == "slow done"
    assert {p.name for p in markers.glob("shutdown-*")} == {f"shutdown-{p}" for p in workers}
    assert not any(_alive(pid) for pid in workers)


def test_sigint_stops_gracefully(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "2", *FAST)
    workers = wait_for_workers(server, 2)
    server.signal(signal.SIGINT)
    assert server.wait(15) == 0
    assert not any(_alive(pid) for pid in workers)


def test_killing_the_master_stops_every_worker(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "3", *FAST)
    workers = wait_for_workers(server, 3)
    os.kill(server.pid, signal.SIGKILL)
    server.wait(5)
    try:
        wait_until(lambda: not any(_alive(pid) for pid in workers), 10)
    except TimeoutError:
        raise AssertionError(
            f"workers still running: {[p for p in workers if _alive(p)]}"
        ) from None


def test_pidfile_is_written_and_removed(start_server: StartServer, tmp_path: Path) -> None:
    pidfile = tmp_path / "run" / "asgid.pid"
    pidfile.parent.mkdir()
    server = start_server(APP, "--workers", "1", "--pidfile", str(pidfile), *FAST)
    wait_until(pidfile.exists, 5)
    assert pidfile.read_text() == f"{server.pid}\n"
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    assert not pidfile.exists()
    assert list(pidfile.parent.iterdir()) == []
