"""No connection waits on a worker that is missing, stuck or leaving.

Black-box tests of the promise in docs/deployment.md: whatever state a worker
is in (killed, blocked, draining, retired, failed to reload), a new connection
is answered by a healthy worker at once, and none is reset that the faulty
worker had not accepted. Each test runs a bounded client load on 127.0.0.1
(``Load``) while it does something to the server, then checks every answer.
"""

from __future__ import annotations

import errno
import http.client
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from helpers import Server, StartServer, free_port, wait_until
from supervision import (
    APP,
    FAST,
    alive,
    get_pid,
    wait_for_log,
    wait_for_workers,
    worker_pids,
)

SLOW = 1.0  # an answer slower than this waited on someone who could not serve it


@dataclass
class Outcome:
    started: float
    seconds: float
    result: str  # "ok", or the failure: "refused", "reset", "eof", "timeout", "error: ..."
    pid: int = 0


@dataclass
class Load:
    """Client threads sending ``GET /pid`` in a loop until stopped (or a deadline).

    ``fresh`` threads open a new connection per request; ``keepalive`` ones
    reuse theirs, reconnecting after a failure. Every request is recorded.
    """

    server: Server
    fresh: int = 2
    keepalive: int = 1
    limit: float = 30.0  # no load runs longer than this, whatever the test does
    pause: float = 0.005
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        kinds = [True] * self.fresh + [False] * self.keepalive
        self._threads = [threading.Thread(target=self._run, args=(k,)) for k in kinds]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _run(self, fresh: bool) -> None:
        deadline = time.monotonic() + self.limit
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            if conn is None:
                conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
            started = time.monotonic()
            outcome = Outcome(started, 0.0, "ok")
            try:
                conn.request("GET", "/pid", headers={"Connection": "close" if fresh else ""})
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    outcome.result = f"error: status {response.status}"
                else:
                    outcome.pid = int(body)
            except OSError as exc:
                outcome.result = _failure(exc)
            except http.client.HTTPException as exc:
                outcome.result = f"error: {exc!r}"
            outcome.seconds = time.monotonic() - started
            self.outcomes.append(outcome)
            if fresh or outcome.result != "ok":
                conn.close()
                conn = None
            self._stop.wait(self.pause)
        if conn is not None:
            conn.close()

    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result == "ok"]

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result != "ok"]

    def slow(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.seconds > SLOW]

    def report(self) -> str:
        kinds: dict[str, int] = {}
        for o in self.outcomes:
            kinds[o.result] = kinds.get(o.result, 0) + 1
        worst = max((o.seconds for o in self.outcomes), default=0.0)
        return f"{len(self.outcomes)} requests: {kinds}; slowest {worst * 1000:.0f} ms"


def _failure(exc: OSError) -> str:
    if isinstance(exc, http.client.RemoteDisconnected):
        return "eof"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if exc.errno == errno.ECONNREFUSED:
        return "refused"
    if exc.errno in (errno.ECONNRESET, errno.EPIPE):
        return "reset"
    return f"error: {exc!r}"


def served_for(load: Load, seconds: float) -> None:
    """Let ``load`` run ``seconds`` more, checking that it is answered meanwhile."""
    before = len(load.ok())
    deadline = time.monotonic() + seconds
    wait_until(lambda: time.monotonic() >= deadline, seconds + 1)
    assert len(load.ok()) > before, load.report()


# -- faults -----------------------------------------------------------------------------


def test_killed_workers_strand_no_connection(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "2", *FAST)
    wait_for_workers(server, 2)
    kills = 4
    with Load(server) as load:
        served_for(load, 0.5)
        for _ in range(kills):
            # The one that has served longest: past its boot window, so its
            # death is a crash (replaced at once), not a failure to boot.
            victim = min(worker_pids(server), key=lambda pid: psutil.Process(pid).create_time())
            os.kill(victim, signal.SIGKILL)
            served_for(load, 1.2)
    assert not load.slow(), load.report()
    # A killed worker takes with it what it had accepted (at most one per client).
    assert len(load.failed()) <= kills * 3, load.report()
    assert {o.result for o in load.failed()} <= {"reset", "eof"}, load.report()
    wait_for_workers(server, 2)
    assert "retrying in" not in server.output()


def test_a_blocked_worker_strands_no_connection(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "2", "--timeout", "3", "--no-access-log")
    workers = wait_for_workers(server, 2)
    blocker = http.client.HTTPConnection(server.host, server.port, timeout=10)
    blocker.request("GET", "/pid")
    stuck = int(blocker.getresponse().read())
    blocker.request("GET", "/block?60")  # same connection: the worker we know
    started = time.monotonic()
    with Load(server) as load:
        # Through "late" (a stand-in boots), the hang kill, and after it.
        served_for(load, 2.0)
        wait_until(lambda: not alive(stuck), 3 + 3 + 2)
        served_for(load, 0.5)
    blocker.close()
    assert time.monotonic() - started >= 3
    assert not load.slow(), load.report()
    assert stuck not in {o.pid for o in load.ok()}, "the stuck worker answered?"
    # Only a connection the stuck worker took in the very loop turn it blocked
    # in could be lost with it.
    assert len(load.failed()) <= 1, load.report()
    wait_for_workers(server, 2, unlike=workers & {stuck})
    output = server.output()
    assert "starting its replacement" in output
    assert f"(pid {stuck}) sent no heartbeat" in output


def test_sigterm_refuses_new_connections_at_once(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(APP, "--workers", "2", *FAST, env={"TEST_MARKERS": str(tmp_path)})
    wait_for_workers(server, 2)
    results: list[str] = []

    def slow() -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", "/slow?1.5")
        results.append(conn.getresponse().read().decode())
        conn.close()

    in_flight = [threading.Thread(target=slow) for _ in range(4)]
    for thread in in_flight:
        thread.start()
    wait_until(lambda: len(list(tmp_path.glob("slow-*"))) >= 1, 5)
    with Load(server, fresh=3, keepalive=0, pause=0.01) as load:
        served_for(load, 0.3)
        server.signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert server.wait(10) == 0
    for thread in in_flight:
        thread.join(10)
    assert results == ["slow done"] * 4  # in-flight requests finish
    after = [o for o in load.outcomes if o.started > stopped + 0.05]
    assert after, load.report()
    # New clients are refused at once (or served), never queued and then reset.
    assert {o.result for o in after} <= {"refused", "ok"}, load.report()
    assert not load.slow(), load.report()
    assert not [o for o in load.outcomes if o.result not in ("ok", "refused")], load.report()


# -- retiring slots, reloads ---------------------------------------------------------------


def write_config(path: Path, *, port: int, count: int, target: str = APP) -> None:
    path.write_text(
        f'[app]\ntarget = "{target}"\n'
        f'[server]\nbind = ["127.0.0.1:{port}"]\n'
        f"[workers]\ncount = {count}\ngraceful_timeout = 5\ntimeout = 5\n"
    )


def fresh_connections(server: Server, count: int = 30) -> list[float]:
    """Seconds each of ``count`` new connections took to be answered."""
    times = []
    for _ in range(count):
        started = time.monotonic()
        get_pid(server)
        times.append(time.monotonic() - started)
    return times


@pytest.mark.parametrize("how", ["reload", "sigttou"])
def test_fewer_workers_leave_no_dead_socket(
    start_server: StartServer, tmp_path: Path, how: str
) -> None:
    config = tmp_path / "server.toml"
    port = free_port()
    write_config(config, port=port, count=3)
    server = start_server("-c", str(config), port=port, no_bind=True)
    workers = wait_for_workers(server, 3)
    if how == "reload":
        write_config(config, port=port, count=1)
        server.signal(signal.SIGHUP)
        wait_for_workers(server, 1, unlike=workers)
    else:
        server.signal(signal.SIGTTOU)
        wait_for_workers(server, 2)
        server.signal(signal.SIGTTOU)
        wait_for_workers(server, 1)
    assert max(fresh_connections(server)) < SLOW


def test_a_failed_reload_keeps_the_old_listeners(start_server: StartServer, tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    old_port, new_port = free_port(), free_port()
    write_config(config, port=old_port, count=2)
    server = start_server("-c", str(config), port=old_port, no_bind=True)
    workers = wait_for_workers(server, 2)
    # A new address, and an app that cannot load: the reload must fail whole.
    write_config(config, port=new_port, count=2, target="no_such_module:app")
    server.signal(signal.SIGHUP)
    wait_for_log(server, "reload failed")
    victim = workers.pop()
    os.kill(victim, signal.SIGKILL)  # its replacement has the old configuration
    (replacement,) = wait_for_workers(server, 2, unlike={victim}) - workers
    assert max(fresh_connections(server)) < SLOW
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", new_port), timeout=2).close()
    assert f"(pid {replacement}) ready, generation 1" in server.output()


def test_a_failed_reload_keeps_the_old_logging_and_timeouts(
    start_server: StartServer, tmp_path: Path
) -> None:
    config = tmp_path / "server.toml"
    port = free_port()
    write_config(config, port=port, count=1)
    server = start_server("-c", str(config), port=port, no_bind=True)
    (worker,) = wait_for_workers(server, 1)
    text = config.read_text().replace("timeout = 5", "timeout = 60")
    config.write_text(text.replace(APP, "no_such_module:app") + '[logging]\nformat = "json"\n')
    server.signal(signal.SIGHUP)
    wait_for_log(server, "reload failed")
    os.kill(worker, signal.SIGKILL)
    (replacement,) = wait_for_workers(server, 1, unlike={worker})
    output = wait_for_log(server, rf"\(pid {replacement}\) ready")
    (line,) = [line for line in output.splitlines() if f"(pid {replacement}) ready" in line]
    assert not line.startswith("{"), line  # the master still logs text, not JSON
    # and still kills a blocked worker after the old timeout (5 s, not 60)
    blocker = http.client.HTTPConnection(server.host, server.port, timeout=30)
    blocker.request("GET", "/block?60")
    wait_until(lambda: not alive(replacement), 5 + 3 + 3)
    blocker.close()


def test_shutdown_delay_keeps_serving_while_readyz_says_no(start_server: StartServer) -> None:
    metrics_port = free_port()
    server = start_server(
        APP,
        "--workers",
        "2",
        *FAST,
        "--shutdown-delay",
        "2",
        "--metrics-bind",
        f"127.0.0.1:{metrics_port}",
    )
    wait_for_workers(server, 2)
    readyz = f"http://127.0.0.1:{metrics_port}/readyz"
    assert httpx.get(readyz, timeout=5).status_code == 200
    with Load(server, fresh=2, keepalive=1) as load:
        served_for(load, 0.3)
        server.signal(signal.SIGTERM)
        stopped = time.monotonic()
        wait_until(lambda: httpx.get(readyz, timeout=5).status_code == 503, 1)
        served_for(load, 1.0)  # still serving: the load balancer is told, not refused
        assert time.monotonic() - stopped < 2
        # A client that stops once readiness says so never fails.
    assert server.wait(15) == 0
    during = [o for o in load.outcomes if stopped <= o.started < stopped + 1.5]
    assert during, load.report()
    assert all(o.result == "ok" for o in during), load.report()
    assert not load.slow(), load.report()
    assert "graceful shutdown in 2s: not ready, still serving" in server.output()
