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
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from helpers import StartServer, wait_until
from supervision import (
    APP,
    FAST,
    ClientLoop,
    alive,
    answering_pids,
    get,
    get_pid,
    wait_for_log,
    wait_for_workers,
    worker_pids,
    write_app,
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
    wait_until(lambda: not alive(hung), 2 + 3 + 3)  # timeout + kill grace + a margin
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
        (new,) = wait_for_workers(server, 1, unlike={worker})
        assert get_pid(server) == new
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
    assert not any(alive(pid) for pid in workers)


def test_sigint_stops_gracefully(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "2", *FAST)
    workers = wait_for_workers(server, 2)
    server.signal(signal.SIGINT)
    assert server.wait(15) == 0
    assert not any(alive(pid) for pid in workers)


def test_killing_the_master_stops_every_worker(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "3", *FAST)
    workers = wait_for_workers(server, 3)
    os.kill(server.pid, signal.SIGKILL)
    server.wait(5)
    try:
        wait_until(lambda: not any(alive(pid) for pid in workers), 10)
    except TimeoutError:
        raise AssertionError(f"workers still running: {[p for p in workers if alive(p)]}") from None


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
