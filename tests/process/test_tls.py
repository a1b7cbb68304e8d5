"""TLS listeners: protocol versions, client certificates, keys, schemes, reloads.

Each test starts ``python -m asgid`` with certificates from a throwaway trustme
CA and talks to it with the standard library's TLS client (or websockets'),
so what is checked is what a real client sees: the handshake's outcome, the
certificate presented, the ASGI scope the application got.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from helpers import Server, StartServer, client_context, wait_until, write_cert
from websockets.asyncio.client import connect as ws_connect

APP = "httpapp:app"
QUIET = ("--no-access-log",)


def start_tls(
    start_server: StartServer, files: tuple[Path, Path], *args: str, app: str = APP, **kw: object
) -> Server:
    certfile, keyfile = files
    return start_server(
        app, "--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile), *QUIET, *args, **kw
    )


@contextlib.contextmanager
def tls_connection(server: Server, context: ssl.SSLContext) -> Iterator[ssl.SSLSocket]:
    """A TLS connection to ``server`` whose handshake has completed."""
    raw = socket.create_connection((server.host, server.port), timeout=5)
    try:
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise
    with sock:
        yield sock


def get(sock: ssl.SSLSocket, path: str = "/") -> bytes:
    """One request on ``sock``; the response (head and body) up to the server's close."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def refused(server: Server, context: ssl.SSLContext) -> bool:
    """Whether the server turns this client away, in the handshake or (TLS 1.3,
    where the client's certificate is checked after the client's side of the
    handshake is done) before the first response byte."""
    try:
        with tls_connection(server, context) as sock:
            return not get(sock).startswith(b"HTTP/1.1 200")
    except (ssl.SSLError, ConnectionError):
        return True


def peer_cert(server: Server) -> bytes:
    """The DER certificate the server presents now (checked against no CA)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with tls_connection(server, context) as sock:
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


# -- protocol versions ------------------------------------------------------------


def old_tls_client(ca: trustme.CA) -> ssl.SSLContext:
    """A client that offers TLS 1.0 and 1.1 only, with the ciphers they need."""
    context = client_context(ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def can_speak_tls_1_1(ca: trustme.CA, client: ssl.SSLContext) -> bool:
    """Whether ``client`` completes a TLS 1.1 handshake with a server that allows it.

    The control for the refusal test: OpenSSL builds that cannot offer TLS 1.1
    at all would make "asgid refuses it" pass for the wrong reason.
    """
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            server.minimum_version = ssl.TLSVersion.TLSv1
        server.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        return False
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    versions: list[str | None] = []

    def serve() -> None:
        try:
            with server.wrap_socket(a, server_side=True) as sock:
                versions.append(sock.version())
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(b, server_hostname="127.0.0.1") as sock:
            versions.append(sock.version())
    except (ssl.SSLError, OSError):
        pass
    finally:
        thread.join(10)
        a.close()
        b.close()
    return versions == ["TLSv1.1", "TLSv1.1"]


def test_tls_1_1_and_older_are_refused(
    start_server: StartServer, ca: trustme.CA, tls_files: tuple[Path, Path]
) -> None:
    old = old_tls_client(ca)
    if not can_speak_tls_1_1(ca, old):
        pytest.skip("this OpenSSL cannot negotiate TLS 1.1 even with a server that allows it")
    server = start_tls(start_server, tls_files)
    with pytest.raises(ssl.SSLError), tls_connection(server, old):
        pass
    assert "Traceback" not in server.output()


@pytest.mark.parametrize(
    ("maximum", "expected"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.MAXIMUM_SUPPORTED, "TLSv1.3")],
)
def test_tls_1_2_and_1_3_are_served(
    start_server: StartServer,
    ca: trustme.CA,
    tls_files: tuple[Path, Path],
    maximum: ssl.TLSVersion,
    expected: str,
) -> None:
    server = start_tls(start_server, tls_files)
    context = client_context(ca)
    context.maximum_version = maximum
    with tls_connection(server, context) as sock:
        assert sock.version() == expected
        assert sock.selected_alpn_protocol() is None  # the client offered none
        assert get(sock, "/").startswith(b"HTTP/1.1 200")


def test_alpn_selects_h2_then_http_1_1(
    start_server: StartServer, ca: trustme.CA, tls_files: tuple[Path, Path]
) -> None:
    server = start_tls(start_server, tls_files)
    context = client_context(ca)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with tls_connection(server, context) as sock:
        assert sock.selected_alpn_protocol() == "h2"
    context = client_context(ca)
    context.set_alpn_protocols(["http/1.1"])
    with tls_connection(server, context) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
        assert get(sock, "/").startswith(b"HTTP/1.1 200")


def test_ciphers_setting_limits_tls_1_2_ciphers(
    start_server: StartServer, ca: trustme.CA, tls_files: tuple[Path, Path]
) -> None:
    server = start_tls(start_server, tls_files, "--ssl-ciphers", "ECDHE+AES256")
    context = client_context(ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls_connection(server, context) as sock:
        cipher = sock.cipher()
        assert cipher is not None
        assert "AES256" in cipher[0], cipher
    context.set_ciphers("ECDHE+AES128")  # nothing in common with the server
    assert refused(server, context)


def test_unknown_ciphers_fail_at_boot_with_the_setting_named(
    start_server: StartServer, tls_files: tuple[Path, Path]
) -> None:
    server = start_tls(start_server, tls_files, "--ssl-ciphers", "NO-SUCH-CIPHER", wait=False)
    assert server.wait(15) == 2  # a configuration error: systemd does not restart it
    assert "ssl_ciphers 'NO-SUCH-CIPHER'" in server.output()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_renegotiation_is_refused(start_server: StartServer, tls_files: tuple[Path, Path]) -> None:
    # A TLS 1.2 client may ask to redo the (costly) handshake on a connection;
    # HTTP/1.1 never needs it. openssl s_client's "R" command asks. OpenSSL 3
    # refuses client renegotiation by default; asgid's OP_NO_RENEGOTIATION is for
    # the 1.1.1 builds that do not.
    server = start_tls(start_server, tls_files)
    client = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-tls1_2"],
        input=b"R\n",
        capture_output=True,
        timeout=20,
        check=False,
    )
    output = (client.stdout + client.stderr).decode(errors="replace")
    assert "RENEGOTIATING" in output
    assert "no renegotiation" in output
    assert "Traceback" not in server.output()


# -- client certificates ----------------------------------------------------------


@pytest.fixture(scope="module")
def client_ca() -> trustme.CA:
    """The CA whose certificates asgid accepts from clients."""
    return trustme.CA()


def with_client_cert(context: ssl.SSLContext, cert: trustme.LeafCert) -> ssl.SSLContext:
    cert.configure_cert(context)
    return context


def client_ca_args(client_ca: trustme.CA, tmp_path: Path, reqs: int) -> tuple[str, ...]:
    cafile = tmp_path / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(cafile))
    return ("--ssl-ca-certs", str(cafile), "--ssl-cert-reqs", str(reqs))


@pytest.mark.parametrize(("reqs", "required"), [(1, False), (2, True)])
def test_client_certificates(
    start_server: StartServer,
    ca: trustme.CA,
    client_ca: trustme.CA,
    tls_files: tuple[Path, Path],
    tmp_path: Path,
    reqs: int,
    required: bool,
) -> None:
    # ssl_cert_reqs 1 (optional) serves a client without a certificate, 2 (required)
    # does not; both refuse a certificate from another CA and serve one from theirs,
    # whether the check happens in the handshake (TLS 1.2) or after it (TLS 1.3).
    server = start_tls(start_server, tls_files, *client_ca_args(client_ca, tmp_path, reqs))
    assert refused(server, client_context(ca)) == required
    stranger = trustme.CA().issue_cert("client@example.com")
    good = client_ca.issue_cert("client@example.com")
    for maximum in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.MAXIMUM_SUPPORTED):
        context = with_client_cert(client_context(ca), stranger)
        context.maximum_version = maximum
        assert refused(server, context)
        context = with_client_cert(client_context(ca), good)
        context.maximum_version = maximum
        assert not refused(server, context)
    assert "Traceback" not in server.output()


def test_client_certificates_without_a_ca_fail_at_boot(
    start_server: StartServer, tls_files: tuple[Path, Path]
) -> None:
    server = start_tls(start_server, tls_files, "--ssl-cert-reqs", "2", wait=False)
    assert server.wait(15) == 2
    assert "set ssl_ca_certs" in server.output()


# -- keys -------------------------------------------------------------------------


def encrypt_key(keyfile: Path, password: bytes) -> None:
    key = serialization.load_pem_private_key(keyfile.read_bytes(), None)
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
    )


def test_encrypted_key_with_its_password(
    start_server: StartServer, ca: trustme.CA, tls_files: tuple[Path, Path]
) -> None:
    encrypt_key(tls_files[1], b"s3cret")
    server = start_tls(start_server, tls_files, "--ssl-keyfile-password", "s3cret")
    with httpx.Client(verify=client_context(ca)) as client:
        assert client.get(f"https://127.0.0.1:{server.port}/").status_code == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the TLS key is encrypted: set ssl_keyfile_password"),
        (("--ssl-keyfile-password", "wrong"), "wrong ssl_keyfile_password?"),
    ],
)
def test_encrypted_key_without_the_right_password_fails_at_boot(
    start_server: StartServer, tls_files: tuple[Path, Path], args: tuple[str, ...], message: str
) -> None:
    # Without a password, OpenSSL would prompt on the terminal and the worker hang there.
    encrypt_key(tls_files[1], b"s3cret")
    server = start_tls(start_server, tls_files, *args, wait=False)
    assert server.wait(15) == 2
    assert message in server.output()
    assert str(tls_files[1]) in server.output()


# -- what the application sees ----------------------------------------------------


def test_scope_scheme_is_https_and_wss(
    start_server: StartServer, ca: trustme.CA, tls_files: tuple[Path, Path]
) -> None:
    server = start_tls(start_server, tls_files, app="ws_echo:app")
    with httpx.Client(verify=client_context(ca)) as client:
        response = client.get(f"https://127.0.0.1:{server.port}/")
    assert response.status_code == 200

    # websockets' asyncio client, not its threaded one: that one reads in one
    # thread while it writes the handshake in another, and sharing one TLS
    # connection between threads lost the request now and then (about once in
    # 100 connections here, with the bytes never leaving the client).
    async def main() -> tuple[dict[str, Any], str | bytes]:
        async with ws_connect(
            f"wss://127.0.0.1:{server.port}/scope",
            ssl=client_context(ca),
            proxy=None,
            open_timeout=5,
            close_timeout=5,
        ) as ws:
            scope = json.loads(await asyncio.wait_for(ws.recv(), 5))
            await ws.send("over TLS")
            return scope, await asyncio.wait_for(ws.recv(), 5)

    scope, echo = asyncio.run(main())
    assert echo == "over TLS"
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "wss"
    assert scope["server"] == ["127.0.0.1", server.port]


def test_https_scope_scheme(
    start_server: StartServer, ca: trustme.CA, tls_files: tuple[Path, Path]
) -> None:
    server = start_tls(start_server, tls_files)
    with httpx.Client(verify=client_context(ca)) as client:
        scope = client.get(f"https://127.0.0.1:{server.port}/scope").json()
    assert scope["scheme"] == "https"


# -- reloads ----------------------------------------------------------------------


def test_sighup_workers_read_the_new_certificate(
    start_server: StartServer, ca: trustme.CA, tls_files: tuple[Path, Path]
) -> None:
    first = ca.issue_cert("127.0.0.1")
    write_cert(first, *tls_files)
    server = start_tls(start_server, tls_files, "--workers", "2")
    assert peer_cert(server) == der(first)

    other_ca = trustme.CA()
    second = other_ca.issue_cert("127.0.0.1")
    write_cert(second, *tls_files)
    if "sent no heartbeat" not in server.output():  # a late worker's stand-in reads them
        assert peer_cert(server) == der(first)  # nothing reads the files until a reload
    server.signal(signal.SIGHUP)
    # Once the old workers are gone, each connection gets the new certificate.
    wait_until(lambda: server.output().count("drained and exited") >= 2, timeout=20)
    for _ in range(10):
        assert peer_cert(server) == der(second)
    with httpx.Client(verify=client_context(other_ca)) as client:
        assert client.get(f"https://127.0.0.1:{server.port}/").status_code == 200


def test_sighup_with_a_broken_key_keeps_the_old_workers(
    start_server: StartServer, ca: trustme.CA, tls_files: tuple[Path, Path]
) -> None:
    first = ca.issue_cert("127.0.0.1")
    write_cert(first, *tls_files)
    server = start_tls(start_server, tls_files)
    assert peer_cert(server) == der(first)  # the worker is up
    tls_files[1].write_text("not a key\n")
    server.signal(signal.SIGHUP)
    wait_until(lambda: "reload failed" in server.output(), timeout=20)
    assert peer_cert(server) == der(first)
    with httpx.Client(verify=client_context(ca)) as client:
        assert client.get(f"https://127.0.0.1:{server.port}/").status_code == 200
