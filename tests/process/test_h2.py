"""HTTP/2: negotiation, the ASGI cycle per stream, flow control, limits, drain, attacks.

Real clients on 127.0.0.1: httpx with ``http2=True`` over TLS (a trustme
certificate, ALPN) and with prior knowledge over cleartext, and a raw client on
the h2 library (tests/h2_client.py) for exact and hostile frames. Each attack
must end in a GOAWAY with its error code while another connection to the same
worker goes on being served, and the worker's file descriptors return to
their baseline.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h2.events
import httpx
import pytest
import trustme
from h2.errors import ErrorCodes
from h2_client import Load, RawH2
from helpers import (
    Server,
    ServerView,
    StartServer,
    client_context,
    free_port,
    only_worker,
    running_server,
    wait_until,
    write_cert,
)
from hpack import Encoder, NeverIndexedHeaderTuple
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    SettingsFrame,
)

APP = "httpapp:app"
QUIET = ("--no-access-log",)
FILE_SIZE = 1024 * 1024 + 17


@pytest.fixture(scope="module")
def module_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def files(module_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("h2files")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    write_cert(module_ca.issue_cert("127.0.0.1", "localhost"), certfile, keyfile)
    (folder / "ca.pem").write_bytes(module_ca.cert_pem.bytes())
    payload = folder / "payload.bin"
    payload.write_bytes(bytes(range(256)) * (FILE_SIZE // 256) + b"x" * (FILE_SIZE % 256))
    return {"cert": certfile, "key": keyfile, "payload": payload, "ca": folder / "ca.pem"}


@pytest.fixture(scope="module")
def tls_server(
    files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    args = ("--ssl-certfile", str(files["cert"]), "--ssl-keyfile", str(files["key"]))
    env = {"PATHSEND_FILE": str(files["payload"])}
    with running_server(tmp_path_factory.mktemp("tls"), APP, *args, *QUIET, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def h2c_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = ("--http2-cleartext", "--timeout-write", "2", "--max-body-size", "20MiB")
    with running_server(tmp_path_factory.mktemp("h2c"), APP, *args, *QUIET) as server:
        yield server


def tls_client(ca: trustme.CA, **kw: object) -> httpx.Client:
    return httpx.Client(http2=True, verify=client_context(ca), timeout=10, **kw)  # type: ignore[arg-type]


def h2c_client(**kw: object) -> httpx.Client:
    return httpx.Client(http1=False, http2=True, timeout=10, **kw)  # type: ignore[arg-type]


def alpn_context(ca: trustme.CA, protocols: list[str]) -> ssl.SSLContext:
    context = client_context(ca)
    context.set_alpn_protocols(protocols)
    return context


# -- negotiation -----------------------------------------------------------------


def test_tls_negotiates_h2_by_alpn(tls_server: Server, module_ca: trustme.CA) -> None:
    with tls_client(module_ca) as client:
        response = client.get(f"https://127.0.0.1:{tls_server.port}/scope?q=1")
    assert response.http_version == "HTTP/2"
    scope = response.json()
    assert scope["http_version"] == "2"
    assert scope["scheme"] == "https"
    assert scope["method"] == "GET"
    assert scope["path"] == "/scope"
    assert scope["query_string"] == "q=1"
    assert scope["headers"][0] == ["host", f"127.0.0.1:{tls_server.port}"]
    assert not any(name.startswith(":") for name, _ in scope["headers"])
    assert scope["state"]["greeting"] == "hello from lifespan"
    assert "http.response.pathsend" in scope["extensions"]
    assert "http.response.trailers" in scope["extensions"]
    assert response.headers["server"] == "asgid"
    assert "date" in response.headers


def test_tls_falls_back_to_http11(tls_server: Server, module_ca: trustme.CA) -> None:
    with RawTls(tls_server, alpn_context(module_ca, ["http/1.1"])) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
    with httpx.Client(verify=client_context(module_ca)) as client:
        response = client.get(f"https://127.0.0.1:{tls_server.port}/scope")
    assert response.http_version == "HTTP/1.1"
    assert response.json()["http_version"] == "1.1"


def test_http2_off_offers_http11_only(
    start_server: StartServer, files: dict[str, Path], module_ca: trustme.CA
) -> None:
    server = start_server(
        APP, "--ssl-certfile", str(files["cert"]), "--ssl-keyfile", str(files["key"]), "--no-http2"
    )
    with RawTls(server, alpn_context(module_ca, ["h2", "http/1.1"])) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
    with tls_client(module_ca) as client:
        response = client.get(f"https://127.0.0.1:{server.port}/scope")
    assert response.http_version == "HTTP/1.1"


def test_h2c_prior_knowledge_and_http11_share_the_port(h2c_server: Server) -> None:
    with h2c_client() as client:
        response = client.get(f"{h2c_server.url}/scope")
    assert response.http_version == "HTTP/2"
    assert response.json()["scheme"] == "http"
    assert response.json()["http_version"] == "2"
    with httpx.Client() as client:
        response = client.get(f"{h2c_server.url}/scope")
    assert response.http_version == "HTTP/1.1"
    assert response.json()["http_version"] == "1.1"


def test_h2c_is_off_by_default(start_server: StartServer) -> None:
    server = start_server(APP, *QUIET)
    with RawH2(server.host, server.port) as client:
        client.wait_closed(5)
        assert not any(isinstance(e, h2.events.RemoteSettingsChanged) for e in client.events)
    with h2c_client() as client, pytest.raises(httpx.RemoteProtocolError):
        client.get(f"{server.url}/")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_over_tls_and_h2c(
    tls_server: Server, h2c_server: Server, files: dict[str, Path], tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(files["ca"].read_bytes())
    fmt = ["-s", "-w", "\\n%{http_version} %{http_code}"]
    tls = subprocess.run(
        [
            "curl",
            "--http2",
            "--cacert",
            str(ca_file),
            *fmt,
            f"https://127.0.0.1:{tls_server.port}/",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert tls.stdout.splitlines()[-1] == "2 200", tls
    h2c = subprocess.run(
        ["curl", "--http2-prior-knowledge", *fmt, f"{h2c_server.url}/stream?n=3"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert h2c.stdout.splitlines() == ["chunk0", "chunk1", "chunk2", "", "2 200"], h2c


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp (nghttp2-client) is missing")
def test_nghttp_h2c_with_a_body(h2c_server: Server, tmp_path: Path) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"n" * 300_000)
    result = subprocess.run(
        ["nghttp", "-s", "-d", str(upload), f"{h2c_server.url}/echo"],
        capture_output=True,
        timeout=20,
    )
    # nghttp exits 0 even when it fails: its statistics say whether the stream ended.
    assert b"[ERROR]" not in result.stdout + result.stderr, result
    assert result.stdout.startswith(b"n" * 300_000)
    assert b"Request timing" in result.stdout


# -- the ASGI cycle ----------------------------------------------------------------


def test_a_hundred_concurrent_streams_on_one_connection(h2c_server: Server) -> None:
    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=15) as client:
            await client.get(f"{h2c_server.url}/")  # one connection, settings known
            return await asyncio.gather(
                *(client.get(f"{h2c_server.url}/barrier?n=100") for _ in range(100))
            )

    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200] * 100
    assert {r.text for r in responses} == {"together"}


def test_streamed_response(h2c_server: Server) -> None:
    with h2c_client() as client, client.stream("GET", f"{h2c_server.url}/stream?n=50") as r:
        assert r.http_version == "HTTP/2"
        assert "content-length" not in r.headers
        body = b"".join(r.iter_bytes())
    assert body == b"".join(b"chunk%d\n" % i for i in range(50))


def test_ten_mib_upload_with_backpressure(h2c_server: Server) -> None:
    payload = bytes(range(256)) * (10 * 4096)  # 10 MiB
    with RawH2(h2c_server.host, h2c_server.port) as client:
        stream_id = client.request("/slow-read?hold=2", method="POST", end=False)
        sent = 0
        # The app reads nothing for 2 s: the server's windows close after a
        # bounded amount, and stay closed until the app reads.
        while client.conn.local_flow_control_window(stream_id) > 0:
            size = min(16384, client.conn.local_flow_control_window(stream_id))
            client.conn.send_data(stream_id, payload[sent : sent + size])
            sent += size
            client.flush()
            assert sent <= 2 * 1024 * 1024
        assert 0 < sent <= 1024 * 1024  # the stream window (or the connection's)
        assert "EVENT slow-read reading" not in h2c_server.output()
        while sent < len(payload):

            def window_open(events: list[h2.events.Event]) -> bool:
                return client.conn.local_flow_control_window(stream_id) > 0

            client.read_until(window_open, 10)
            size = min(16384, client.conn.local_flow_control_window(stream_id), len(payload) - sent)
            client.conn.send_data(stream_id, payload[sent : sent + size])
            sent += size
            client.flush()
        client.conn.end_stream(stream_id)
        client.flush()
        response = client.response(stream_id)
    assert response.status == 200
    assert response.body == str(len(payload)).encode()
    assert "EVENT slow-read reading" in h2c_server.output()


def test_upload_with_httpx_over_tls(tls_server: Server, module_ca: trustme.CA) -> None:
    payload = b"u" * (10 * 1024 * 1024)
    with tls_client(module_ca) as client:
        response = client.post(f"https://127.0.0.1:{tls_server.port}/echo", content=payload)
    assert response.http_version == "HTTP/2"
    assert len(response.content) == len(payload)
    assert response.content == payload


def test_expect_100_continue(h2c_server: Server) -> None:
    with RawH2(h2c_server.host, h2c_server.port) as client:
        expect = [(b"expect", b"100-continue"), (b"content-length", b"4")]
        stream_id = client.request("/expect", method="PUT", headers=expect, end=False)
        client.read_until(
            lambda events: any(
                isinstance(e, h2.events.InformationalResponseReceived) for e in events
            )
        )
        client.conn.send_data(stream_id, b"body", end_stream=True)
        client.flush()
        assert client.response(stream_id).body == b"got 4"


def test_trailers(h2c_server: Server) -> None:
    with RawH2(h2c_server.host, h2c_server.port) as client:
        response = client.response(client.request("/trailers"))
    assert response.status == 200
    assert response.body == b"hello world"
    assert response.trailers == [(b"x-checksum", b"abc123")]


def test_pathsend(tls_server: Server, module_ca: trustme.CA, files: dict[str, Path]) -> None:
    with tls_client(module_ca) as client:
        response = client.get(f"https://127.0.0.1:{tls_server.port}/pathsend")
    assert response.http_version == "HTTP/2"
    assert response.headers["x-kind"] == "pathsend"
    assert response.headers["content-length"] == str(FILE_SIZE)
    assert response.content == files["payload"].read_bytes()


def test_connection_specific_headers_are_dropped(h2c_server: Server) -> None:
    with h2c_client() as client:
        response = client.get(
            f"{h2c_server.url}/headers?connection=close&keep-alive=5&x-kept=yes&upgrade=h2c"
        )
    assert response.status_code == 200
    assert response.headers["x-kept"] == "yes"
    for name in ("connection", "keep-alive", "upgrade"):
        assert name not in response.headers


def test_app_errors_become_500_or_a_reset(h2c_server: Server) -> None:
    with RawH2(h2c_server.host, h2c_server.port) as client:
        assert client.response(client.request("/error")).status == 500
        cut = client.response(client.request("/error-after-start"))
        assert cut.reset == ErrorCodes.INTERNAL_ERROR
        assert client.response(client.request("/")).status == 200  # the connection goes on


def test_client_reset_mid_response_disconnects_the_app(h2c_server: Server) -> None:
    view = ServerView(h2c_server)
    with RawH2(h2c_server.host, h2c_server.port) as client:
        stream_id = client.request("/wait-disconnect")
        wait_until(lambda: "EVENT body complete" in view.output())
        client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        client.flush()
        wait_until(lambda: "EVENT got http.disconnect" in view.output())
        produce = client.request("/send-after-disconnect")
        client.read_until(
            lambda events: any(
                isinstance(e, h2.events.DataReceived) and e.stream_id == produce for e in events
            )
        )
        client.conn.reset_stream(produce, ErrorCodes.CANCEL)
        client.flush()
        assert client.response(client.request("/")).status == 200
    assert "Traceback" not in view.output()


BASE = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")]


@pytest.mark.parametrize(
    "fields",
    [
        [*BASE, (b"X-Upper", b"1")],
        [*BASE, (b"connection", b"keep-alive")],
        [*BASE, (b"te", b"gzip")],
        [*BASE, (b"x-space", b" leading")],
        [*BASE, (b"x-nul", b"a\x00b")],
        [BASE[0], BASE[1], BASE[3]],  # no :path
        [*BASE[:2], (b"x-a", b"1"), *BASE[2:]],  # pseudo-header after a field
        [*BASE, (b":method", b"POST")],  # repeated
        [*BASE, (b":protocol", b"websocket")],
    ],
)
def test_malformed_requests_reset_the_stream_only(
    h2c_server: Server, fields: list[tuple[bytes, bytes]]
) -> None:
    with RawH2(h2c_server.host, h2c_server.port) as client:
        # h2 opens stream 1 (its bytes are dropped) and the raw frame goes in
        # their place; neither adds to an HPACK table, so both sides agree.
        plain = [NeverIndexedHeaderTuple(n, v) for n, v in BASE]
        client.conn.send_headers(1, plain, end_stream=True)
        client.conn.data_to_send()
        frame = HeadersFrame(1, flags=["END_HEADERS", "END_STREAM"])
        frame.data = Encoder().encode([NeverIndexedHeaderTuple(n, v) for n, v in fields])
        client.send_raw(frame)
        assert client.response(1).reset == ErrorCodes.PROTOCOL_ERROR
        # The connection goes on: the next stream is served.
        assert client.response(client.request("/")).status == 200


def test_limits_per_stream(start_server: StartServer) -> None:
    server = start_server(
        APP, "--http2-cleartext", "--max-body-size", "1000", "--max-headers", "20", *QUIET
    )
    with RawH2(server.host, server.port) as client:
        big = [(b"content-length", b"5000")]
        refused = client.response(client.request("/echo", method="POST", headers=big, end=False))
        assert refused.status == 413
        chunked = client.request("/echo", method="POST", body=b"x" * 2000)
        assert client.response(chunked).status == 413
        many = [(b"x-h%d" % i, b"v") for i in range(30)]
        assert client.response(client.request("/", headers=many)).status == 431
        assert client.response(client.request("/")).status == 200


def test_proxy_headers_and_root_path(start_server: StartServer) -> None:
    server = start_server(
        APP, "--http2-cleartext", "--proxy-headers", "--root-path", "/api", *QUIET
    )
    forwarded = {"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"}
    with h2c_client() as client:
        scope = client.get(f"{server.url}/scope", headers=forwarded).json()
    assert scope["client"][0] == "203.0.113.7"
    assert scope["scheme"] == "https"
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/scope"


def test_connection_loss_disconnects_the_app(h2c_server: Server) -> None:
    view = ServerView(h2c_server)
    client = RawH2(h2c_server.host, h2c_server.port)
    with client:
        client.request("/wait-disconnect")
        wait_until(lambda: "EVENT body complete" in view.output())
    wait_until(lambda: "EVENT got http.disconnect" in view.output())
    assert "Traceback" not in view.output()


def test_a_body_that_stops_coming_gets_408(start_server: StartServer) -> None:
    server = start_server(APP, "--http2-cleartext", "--timeout-request-body", "1", *QUIET)
    with RawH2(server.host, server.port) as client:
        stream_id = client.request("/echo", method="POST", body=b"part", end=False)
        response = client.response(stream_id, timeout=10)
        assert response.status == 408
        assert client.response(client.request("/")).status == 200  # the connection goes on


def test_limit_concurrency_counts_streams(start_server: StartServer) -> None:
    server = start_server(APP, "--http2-cleartext", "--limit-concurrency", "2", *QUIET)
    with RawH2(server.host, server.port) as client:
        held = [client.request("/wait-disconnect") for _ in range(2)]
        wait_until(lambda: server.output().count("EVENT waiting for disconnect") == 2)
        assert client.response(client.request("/")).status == 503
        for stream_id in held:
            client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        client.flush()
        wait_until(lambda: server.output().count("EVENT got http.disconnect") == 2)
        assert client.response(client.request("/")).status == 200


def test_streams_beyond_the_limit_are_refused(start_server: StartServer) -> None:
    server = start_server(APP, "--http2-cleartext", "--http2-max-concurrent-streams", "3", *QUIET)
    with RawH2(server.host, server.port) as client:
        client.read_until(
            lambda events: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events)
        )
        assert client.conn.remote_settings.max_concurrent_streams == 3
        for _ in range(3):
            client.request("/wait-disconnect")
        wait_until(lambda: server.output().count("EVENT waiting for disconnect") == 3)
        client.conn.remote_settings.update({0x3: 100})  # act as if the limit were unseen
        client.conn.remote_settings.acknowledge()
        extra = client.request("/")
        assert client.response(extra).reset == ErrorCodes.REFUSED_STREAM


def test_idle_connection_gets_goaway(start_server: StartServer) -> None:
    server = start_server(APP, "--http2-cleartext", "--timeout-keep-alive", "1", *QUIET)
    with RawH2(server.host, server.port) as client:
        assert client.response(client.request("/")).status == 200
        goaway = client.goaway(5)
        assert goaway.error_code == ErrorCodes.NO_ERROR
        assert goaway.last_stream_id == 1


def test_access_log_and_metrics(start_server: StartServer, tmp_path: Path) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    server = start_server(
        APP,
        "--http2-cleartext",
        "--metrics-bind",
        metrics,
        env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)},
    )

    def scrape() -> str:
        return httpx.get(f"http://{metrics}/metrics", timeout=5).text

    with RawH2(server.host, server.port) as client:
        assert client.response(client.request("/scope?x=1")).status == 200
        wait_until(lambda: 'asgid_connections{protocol="http2"} 1.0' in scrape())
    wait_until(lambda: 'asgid_connections{protocol="http2"} 0.0' in scrape())
    assert 'asgid_requests_total{code="200",method="GET"} 1.0' in scrape()
    wait_until(lambda: '"GET /scope?x=1 HTTP/2" 200' in server.output())


# -- drain ---------------------------------------------------------------------------


def test_sigterm_lets_in_flight_streams_finish(start_server: StartServer) -> None:
    server = start_server(APP, "--http2-cleartext", *QUIET)
    with RawH2(server.host, server.port) as client:
        first = client.request("/sleep?s=1")
        second = client.request("/sleep?s=1.5")
        wait_until(lambda: server.output().count("CALL GET /sleep") == 2)
        server.signal(signal.SIGTERM)
        # The GOAWAY waits for a moment without streams in progress (h2-based
        # clients fail the streams a GOAWAY finds in flight).
        assert client.response(first).body == b"slept"
        assert client.response(second).body == b"slept"
        goaway = client.goaway()
        assert goaway.error_code == ErrorCodes.NO_ERROR
        assert goaway.last_stream_id == second
        client.wait_closed()
    assert server.wait() == 0


def test_a_busy_connection_gets_goaway_and_its_streams_finish(start_server: StartServer) -> None:
    server = start_server(APP, "--http2-cleartext", "--graceful-timeout", "8", *QUIET)
    with RawH2(server.host, server.port) as client:
        for _ in range(3):
            client.request("/wait-disconnect")
        slow = client.request("/sleep?s=7")
        wait_until(lambda: server.output().count("CALL GET /sleep") == 1)
        server.signal(signal.SIGTERM)
        goaway = client.goaway()  # after DRAIN_BUSY (5 s), streams still in progress
        assert goaway.error_code == ErrorCodes.NO_ERROR
        assert goaway.last_stream_id == slow
        assert client.response(slow).body == b"slept"  # named by the GOAWAY: served
        client.wait_closed(15)  # the others never end: cut at graceful_timeout
    assert server.wait() == 0
    assert "cancelling 3 request(s) still running after 8s" in server.output()


def test_goaway_between_streams_lets_httpx_move_on(start_server: StartServer) -> None:
    server = start_server(APP, "--http2-cleartext", "--workers", "2", *QUIET)
    with h2c_client() as client:
        assert client.get(f"{server.url}/").status_code == 200
        server.signal(signal.SIGHUP)
        wait_until(lambda: "reload finished" in server.output(), timeout=30)
        # The old connection got a GOAWAY while idle: the next request goes to
        # a new connection, served by the new workers.
        wait_until(lambda: client.get(f"{server.url}/").status_code == 200)


def test_reloads_fail_no_request(start_server: StartServer) -> None:
    """10 streams in flight at all times through 3 reloads: each old worker's
    GOAWAY moves the client to a new connection, and no request fails."""
    server = start_server(APP, "--http2-cleartext", "--workers", "2", *QUIET)
    load = Load(server.host, server.port, "/sleep?s=0.02")
    thread = threading.Thread(target=load.run, args=(time.monotonic() + 60,))
    thread.start()
    try:
        for generation in (2, 3, 4):
            served = load.ok
            wait_until(lambda n=served: load.ok >= n + 100)  # type: ignore[misc]
            server.signal(signal.SIGHUP)
            wait_until(
                lambda g=generation: f"generation {g} serves" in server.output(),  # type: ignore[misc]
                timeout=30,
            )
            # Never idle, the old connection gets its GOAWAY after DRAIN_BUSY.
            wait_until(lambda g=generation: load.connections >= g, timeout=20)  # type: ignore[misc]
        served = load.ok
        wait_until(lambda: load.ok >= served + 100)
    finally:
        load.stopping = True
        thread.join(30)
    assert load.failures == []
    assert load.connections >= 4  # one per generation at least
    assert "drained and exited" in server.output()


# -- attacks -----------------------------------------------------------------------


def _rapid_reset(client: RawH2) -> None:
    for _ in range(1000):
        stream_id = client.request("/wait-disconnect")
        client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        if not client.send_bytes(client.conn.data_to_send()):
            return


def _continuation_flood(client: RawH2) -> None:
    block = client.conn.encoder.encode(
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")]
    )
    headers = HeadersFrame(1)
    headers.data = block
    client.send_raw(headers)
    for _ in range(200):
        frame = ContinuationFrame(1)
        frame.data = b"\x00" * 16
        if not client.send_raw(frame):
            return


def _ping_flood(client: RawH2) -> None:
    frames = b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(5000))
    client.send_bytes(frames)


def _settings_flood(client: RawH2) -> None:
    frame = SettingsFrame(0, settings={0x4: 65535}).serialize()
    client.send_bytes(frame * 5000)


def _empty_data_flood(client: RawH2) -> None:
    stream_id = client.request("/echo", method="POST", end=False)
    client.send_bytes(DataFrame(stream_id, b"").serialize() * 5000)


def _priority_flood(client: RawH2) -> None:
    frames = b"".join(
        PriorityFrame(2 * i + 1, depends_on=0, stream_weight=16).serialize() for i in range(5000)
    )
    client.send_bytes(frames)


def _priority_loop(client: RawH2) -> None:
    client.send_raw(PriorityFrame(1, depends_on=1, stream_weight=16))


def _hpack_bomb(client: RawH2) -> None:
    # One 4000-byte field enters the HPACK table once; each repetition is then
    # a one-byte reference that decodes to 4000 bytes again.
    client.request("/", headers=[(b"x-bomb", b"a" * 4000)] * 100)


def _refused_stream_flood(client: RawH2) -> None:
    # 100 streams held open, then more, in rounds that stay below the point
    # where h2 makes the excess a connection error: each is refused
    # (RST_STREAM), until refusing costs more than the budget allows.
    for _ in range(100):
        client.request("/wait-disconnect")
    stream_id = 201
    for _ in range(40):
        frames = []
        for _ in range(50):
            frame = HeadersFrame(stream_id, flags=["END_HEADERS", "END_STREAM"])
            frame.data = client.conn.encoder.encode(
                [
                    (b":method", b"GET"),
                    (b":scheme", b"http"),
                    (b":path", b"/"),
                    (b":authority", b"a"),
                ]
            )
            frames.append(frame.serialize())
            stream_id += 2
        if not client.send_bytes(b"".join(frames)):
            return
        # The server answers in order: once the PING's ACK is in, so are the resets.
        client.conn.ping(b"%08d" % stream_id)
        client.flush()
        try:
            client.read_until(
                lambda events, n=stream_id: any(
                    (isinstance(e, h2.events.PingAckReceived) and e.ping_data == b"%08d" % n)
                    or isinstance(e, h2.events.ConnectionTerminated)
                    for e in events
                ),
                5,
            )
        except EOFError:
            return
        if any(isinstance(e, h2.events.ConnectionTerminated) for e in client.events):
            return


def _zero_window(client: RawH2) -> None:
    client.request("/produce?mb=1")


def _window_dribble(client: RawH2) -> None:
    stream_id = client.request("/produce?mb=1")
    client.read_until(lambda events: any(isinstance(e, h2.events.ResponseReceived) for e in events))
    for _ in range(3000):  # one byte at a time: each costs the server a DATA frame
        client.conn.increment_flow_control_window(1, stream_id)
        if not client.send_bytes(client.conn.data_to_send()):
            return


ATTACKS: dict[str, tuple[Callable[[RawH2], None], ErrorCodes, dict[int, int] | None]] = {
    "rapid-reset": (_rapid_reset, ErrorCodes.ENHANCE_YOUR_CALM, None),
    "continuation-flood": (_continuation_flood, ErrorCodes.PROTOCOL_ERROR, None),
    "ping-flood": (_ping_flood, ErrorCodes.ENHANCE_YOUR_CALM, None),
    "settings-flood": (_settings_flood, ErrorCodes.ENHANCE_YOUR_CALM, None),
    "empty-data-flood": (_empty_data_flood, ErrorCodes.ENHANCE_YOUR_CALM, None),
    "priority-flood": (_priority_flood, ErrorCodes.ENHANCE_YOUR_CALM, None),
    "priority-loop": (_priority_loop, ErrorCodes.PROTOCOL_ERROR, None),
    "hpack-bomb": (_hpack_bomb, ErrorCodes.ENHANCE_YOUR_CALM, None),
    "refused-stream-flood": (_refused_stream_flood, ErrorCodes.ENHANCE_YOUR_CALM, None),
    "zero-window": (_zero_window, ErrorCodes.ENHANCE_YOUR_CALM, {0x4: 0}),
    "window-dribble": (_window_dribble, ErrorCodes.ENHANCE_YOUR_CALM, {0x4: 0}),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_ends_in_goaway_and_others_are_served(h2c_server: Server, name: str) -> None:
    attack, code, settings = ATTACKS[name]
    worker = only_worker(h2c_server.pid)
    view = ServerView(h2c_server)
    with RawH2(h2c_server.host, h2c_server.port) as bystander:
        assert bystander.response(bystander.request("/")).status == 200
        fds, rss = worker.num_fds(), worker.memory_info().rss
        with RawH2(h2c_server.host, h2c_server.port, settings=settings) as attacker:
            attack(attacker)
            goaway = attacker.goaway(timeout=10)
            assert goaway.error_code == code, goaway
            attacker.wait_closed()
        # The other connection was served all along, and still is.
        assert bystander.response(bystander.request("/")).status == 200
    wait_until(lambda: worker.num_fds() <= fds)
    assert worker.memory_info().rss - rss < 64 * 1024 * 1024
    assert "Traceback" not in view.output()


class RawTls:
    """A TLS connection whose handshake has completed (for ALPN checks)."""

    def __init__(self, server: Server, context: ssl.SSLContext) -> None:
        import socket

        raw = socket.create_connection((server.host, server.port), timeout=5)
        try:
            self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        except BaseException:
            raw.close()
            raise

    def __enter__(self) -> ssl.SSLSocket:
        return self.sock

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
