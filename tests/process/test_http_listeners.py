"""Listeners other than plain TCP: TLS, Unix sockets and inherited descriptors."""

from __future__ import annotations

import os
import socket
import stat

import httpx
import pytest
from helpers import RawConnection, client_context, wait_until


def test_tls(start_server, ca, tls_files):
    certfile, keyfile = tls_files
    server = start_server(
        "httpapp:app", "--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)
    )
    url = f"https://127.0.0.1:{server.port}"
    with httpx.Client(verify=client_context(ca)) as client:
        scope = client.get(url + "/scope").json()
        assert scope["scheme"] == "https"
        assert scope["server"] == ["127.0.0.1", server.port]
        body = os.urandom(300_000)
        assert client.post(url + "/echo", content=body).content == body
        streamed = client.get(url + "/stream")
        assert streamed.headers["transfer-encoding"] == "chunked"
        assert streamed.content == b"".join(b"chunk%d\n" % i for i in range(5))
    wait_until(lambda: "listening on https://" in server.output(), timeout=5)


def test_tls_pathsend(start_server, ca, tls_files, tmp_path):
    # pathsend cannot use sendfile(2) under TLS: the bytes must still arrive intact.
    certfile, keyfile = tls_files
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(2 * 1024 * 1024 + 3))
    server = start_server(
        "httpapp:app",
        "--ssl-certfile",
        str(certfile),
        "--ssl-keyfile",
        str(keyfile),
        env={"PATHSEND_FILE": str(data)},
    )
    with httpx.Client(verify=client_context(ca)) as client:
        response = client.get(f"https://127.0.0.1:{server.port}/pathsend")
    assert response.content == data.read_bytes()


def test_tls_plain_http_client_is_refused(start_server, tls_files):
    certfile, keyfile = tls_files
    server = start_server(
        "httpapp:app", "--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)
    )
    with RawConnection((server.host, server.port)) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = conn.read_until_closed()
    assert not data.startswith(b"HTTP/1.1 200")
    assert "CALL" not in server.output()
    assert "Traceback" not in server.output()


def test_tls_bad_key_fails_to_start(start_server, tls_files, tmp_path):
    certfile, _ = tls_files
    wrong = tmp_path / "wrong.pem"
    wrong.write_text("not a key")
    server = start_server(
        "httpapp:app",
        "--ssl-certfile",
        str(certfile),
        "--ssl-keyfile",
        str(wrong),
        wait=False,
    )
    assert server.wait(15) != 0


def start_uds(start_server, path, *args):
    server = start_server("httpapp:app", "--uds", str(path), *args, no_bind=True, wait=False)

    def ready() -> bool:
        if server.proc.poll() is not None:
            raise RuntimeError(server.output())
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(path))
        except OSError:
            return False
        return True

    wait_until(ready, timeout=15)
    return server


@pytest.fixture
def uds_path(tmp_path):
    # AF_UNIX paths are limited to ~100 bytes; pytest's tmp_path may be longer.
    path = f"/tmp/asgid-test-{os.getpid()}-{id(tmp_path)}.sock"
    yield path
    if os.path.exists(path):
        os.unlink(path)


def test_unix_socket(start_server, uds_path):
    server = start_uds(start_server, uds_path)
    with httpx.Client(transport=httpx.HTTPTransport(uds=uds_path)) as client:
        scope = client.get("http://localhost/scope").json()
        assert client.post("http://localhost/echo", content=b"over uds").content == b"over uds"
    assert scope["scheme"] == "http"
    assert scope["client"] is None
    assert scope["server"] == [uds_path, None]
    assert stat.S_ISSOCK(os.stat(uds_path).st_mode)
    # The access log names the transport instead of an address.
    wait_until(lambda: 'unix - "GET /scope HTTP/1.1" 200' in server.output(), timeout=5)


@pytest.mark.parametrize("mode", ["600", "660", "666"])
def test_unix_socket_mode(start_server, uds_path, mode):
    start_uds(start_server, uds_path, "--uds-mode", mode)
    assert stat.S_IMODE(os.stat(uds_path).st_mode) == int(mode, 8)


def test_unix_socket_replaces_a_stale_socket_file(start_server, uds_path):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(uds_path)
    stale.close()  # the file stays behind, like after a crash
    start_uds(start_server, uds_path)
    with httpx.Client(transport=httpx.HTTPTransport(uds=uds_path)) as client:
        assert client.get("http://localhost/").text == "Hello, world!"


def test_unix_socket_raw_bad_request(start_server, uds_path):
    start_uds(start_server, uds_path)
    with RawConnection(uds_path, family=socket.AF_UNIX) as conn:
        conn.send(b"GET / HTTP/1.1\r\n\r\n")  # no Host
        response = conn.read_response()
        assert response.status == 400
        assert conn.is_closed_by_server()


def test_inherited_fd(start_server):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        fd = listener.fileno()
        server = start_server(
            "httpapp:app", "--fd", str(fd), no_bind=True, wait=False, pass_fds=(fd,)
        )
        server.port = port
        server.wait_listening()
        # Served by asgid, not by our copy of the socket (which never accepts).
        scope = httpx.get(server.url + "/scope").json()
        assert scope["server"] == ["127.0.0.1", port]
        assert scope["path"] == "/scope"
    finally:
        listener.close()
