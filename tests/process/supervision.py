"""Watching a running master from outside: its workers, its log, a client load.

Workers are found as the master's children (psutil) and through ``/pid`` of
``tests/apps/supervised.py``, which answers the serving worker's pid. Every
wait has a deadline and every client loop a bound on count and time.
"""

from __future__ import annotations

import re
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Set
from pathlib import Path

import httpx
import psutil
from helpers import Server, raw_request, wait_until

APP = "supervised:app"
FAST = ("--timeout-graceful-shutdown", "5", "--timeout", "5", "--no-access-log")


def worker_pids(server: Server) -> set[int]:
    """The master's live workers (draining ones included; not --reload's watcher)."""
    try:
        children = psutil.Process(server.pid).children()
    except psutil.NoSuchProcess:
        return set()
    return {c.pid for c in children if alive(c.pid) and not _is_watcher(c)}


def _is_watcher(process: psutil.Process) -> bool:
    try:
        return "asgid: watcher" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def alive(pid: int) -> bool:
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
