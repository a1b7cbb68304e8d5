"""Connection management: keep-alive, pipelining, HTTP/1.0, Connection: close."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest
from helpers import connect, only_worker, running_server, wait_until


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("connection")
    with running_server(log_dir, "httpapp:app", "--timeout-keep-alive", "5") as server:
        yield server


def test_keep_alive_reuses_the_connection(server):
    with connect(server) as conn:
        clients = set()
        for i in range(5):
            conn.send(b"GET /scope?%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            response = conn.read_response()
            assert response.status == 200
            assert response.header("connection") is None
            scope = json.loads(response.body)
            assert scope["query_string"] == str(i)
            clients.add(tuple(scope["client"]))
    assert len(clients) == 1


def test_httpx_client_reuses_the_connection(server):
    with httpx.Client() as client:
        ports = {client.get(server.url + "/scope").json()["client"][1] for _ in range(3)}
    assert len(ports) == 1


def test_pipelined_requests_are_answered_in_order(server):
    requests = b"".join(
        [
            b"GET /sleep?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /scope?last HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
    )
    with connect(server) as conn:
        conn.send(requests)
        assert conn.read_response().body == b"slept"
        assert conn.read_response().body == b"hello"
        assert conn.read_response().body == b"".join(b"chunk%d\n" % i for i in range(5))
        assert conn.read_response().body == b"abc"
        head = conn.read_response(head_request=True)
        assert head.status == 200
        assert head.header("content-length") == "13"
        assert json.loads(conn.read_response().body)["query_string"] == "last"
        # Nothing else arrives, and the connection is still open.
        conn.sock.settimeout(0.3)
        assert not conn.is_closed_by_server()


def test_pipelined_requests_run_one_at_a_time(server):
    with connect(server) as conn:
        conn.send(
            b"GET /sleep?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\nGET /scope HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert conn.read_response().body == b"slept"
        output = server.output()
        assert conn.read_response().status == 200
    # The second request was not started while the first was running.
    assert "CALL GET /scope" not in output or output.index("CALL GET /sleep") < output.index(
        "CALL GET /scope"
    )


def test_many_pipelined_requests(server):
    count = 200
    with connect(server, timeout=10) as conn:
        conn.send(b"".join(b"GET /scope?%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count)))
        for i in range(count):
            assert json.loads(conn.read_response().body)["query_string"] == str(i)


def test_pipelined_request_after_connection_close_is_not_served(server):
    with connect(server) as conn:
        conn.send(
            b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        response = conn.read_response()
        assert response.header("connection") == "close"
        assert conn.read_until_closed() == b""
    assert "CALL GET /first" in server.output()
    assert "CALL GET /second" not in server.output()


def test_connection_close_is_honoured(server):
    with connect(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200
        assert response.header("connection") == "close"
        assert response.body == b"Hello, world!"
        assert conn.is_closed_by_server()


def test_connection_close_with_streamed_response(server):
    with connect(server) as conn:
        conn.send(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = conn.read_response()
        assert response.header("connection") == "close"
        assert response.body.startswith(b"chunk0\n")
        assert conn.is_closed_by_server()


def test_app_connection_close_header_closes(server):
    with connect(server) as conn:
        conn.send(b"GET /headers?connection=close HTTP/1.1\r\nHost: x\r\n\r\n")
        response = conn.read_response()
        assert response.header("connection") == "close"
        assert conn.is_closed_by_server()


def test_http10_closes_by_default(server):
    with connect(server) as conn:
        conn.send(b"GET / HTTP/1.0\r\n\r\n")
        response = conn.read_response()
        assert response.version == "HTTP/1.1"
        assert response.status == 200
        assert response.body == b"Hello, world!"
        assert response.header("connection") == "close"
        assert conn.is_closed_by_server()


def test_http10_keep_alive(server):
    with connect(server) as conn:
        for _ in range(3):
            conn.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            response = conn.read_response()
            assert response.body == b"Hello, world!"
            # A 1.0 client only keeps the connection when the response says so.
            assert response.header("connection") == "keep-alive"
        conn.sock.settimeout(0.3)
        assert not conn.is_closed_by_server()


def test_http10_keep_alive_with_streamed_body_closes(server):
    # Without chunked coding the only framing left is the close.
    with connect(server) as conn:
        conn.send(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        response = conn.read_response()
        assert response.header("transfer-encoding") is None
        assert response.header("connection") == "close"
        assert response.body == b"".join(b"chunk%d\n" % i for i in range(5))


def test_half_closed_client_still_gets_its_answer(server):
    with connect(server) as conn:
        conn.send(b"GET /sleep?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.sock.shutdown(1)  # SHUT_WR
        response = conn.read_response()
        assert response.body == b"slept"
        assert conn.is_closed_by_server()


def test_half_closed_client_pipelined_requests_are_all_answered(server):
    with connect(server) as conn:
        conn.send(
            b"GET /sleep?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /scope?second HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        conn.sock.shutdown(1)
        assert conn.read_response().body == b"slept"
        assert json.loads(conn.read_response().body)["query_string"] == "second"
        assert conn.is_closed_by_server()


def test_idle_connections_close_on_shutdown(start_server):
    server = start_server("httpapp:app")
    with connect(server, timeout=10) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.read_response()
        server.stop()
        assert conn.is_closed_by_server()


def worker_process(server):
    return only_worker(server.pid)


def has_accepted(worker, conn) -> bool:
    local = conn.sock.getsockname()
    return any(tuple(c.raddr) == local for c in worker.net_connections())


def stopped_listening(worker) -> bool:
    import psutil

    try:
        return not any(c.status == psutil.CONN_LISTEN for c in worker.net_connections())
    except psutil.NoSuchProcess:
        return True  # gone altogether (which is the bug these tests catch)


def test_request_in_transit_when_draining_starts_is_served(start_server):
    """A connection the worker accepted before it began to drain gets its answer."""
    server = start_server("httpapp:app")
    assert httpx.get(server.url + "/").status_code == 200  # the worker is up
    worker = worker_process(server)
    with connect(server, timeout=10) as conn:
        conn.send(b"GET /in-transit HTTP/1.1\r\n")
        wait_until(lambda: has_accepted(worker, conn), timeout=5)
        server.signal(signal.SIGTERM)
        wait_until(lambda: stopped_listening(worker), timeout=5)  # it is draining
        conn.send(b"Host: x\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200
        assert response.header("connection") == "close"
        assert conn.is_closed_by_server()
    assert server.wait(10) == 0


def test_pipelined_requests_when_draining_starts_are_all_served(start_server):
    server = start_server("httpapp:app")
    with connect(server, timeout=10) as conn:
        conn.send(
            b"GET /sleep?s=1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        wait_until(lambda: "CALL GET /sleep" in server.output(), timeout=5)
        server.signal(signal.SIGTERM)
        responses = [conn.read_response() for _ in range(3)]
        assert [r.status for r in responses] == [200, 200, 200]
        assert [r.header("connection") for r in responses] == [None, None, "close"]
        assert conn.is_closed_by_server()
    assert server.wait(10) == 0
    output = server.output()
    assert output.index("CALL GET /second") < output.index("CALL GET /third")


def test_fresh_connection_when_draining_starts_is_served(start_server):
    server = start_server("httpapp:app")
    assert httpx.get(server.url + "/").status_code == 200
    worker = worker_process(server)
    with connect(server, timeout=10) as conn:
        wait_until(lambda: has_accepted(worker, conn), timeout=5)
        server.signal(signal.SIGTERM)
        wait_until(lambda: stopped_listening(worker), timeout=5)
        conn.send(b"GET /fresh HTTP/1.1\r\nHost: x\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200
        assert response.header("connection") == "close"
    assert server.wait(10) == 0


def test_idle_fresh_connection_does_not_hold_up_shutdown(start_server):
    server = start_server("httpapp:app", "--timeout-request-header", "30")
    assert httpx.get(server.url + "/").status_code == 200
    with connect(server, timeout=10) as conn:
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait(10) == 0
        assert time.monotonic() - started < 5
        assert conn.is_closed_by_server()


def test_no_request_is_dropped_while_workers_are_recycled(start_server):
    # Every worker is replaced after 15 requests: connections it accepted just
    # before it began to drain must still be answered.
    server = start_server("httpapp:app", "--workers", "1", "--limit-max-requests", "15")
    failures = []
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        # Until at least three workers have asked to be replaced (bounded in
        # count and time): how many requests that takes depends on boot speed.
        for i in range(2000):
            try:
                assert client.get(f"{server.url}/n{i}").status_code == 200
            except httpx.TransportError as exc:
                failures.append((i, exc))
            if i >= 100 and server.output().count("asking to be replaced") >= 3:
                break
            assert time.monotonic() < deadline
    assert failures == []
    assert server.output().count("asking to be replaced") >= 3
