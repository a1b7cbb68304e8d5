"""Listening sockets: bind them, or adopt the ones systemd or a parent passed.

Used by the master before it forks and by a single in-process worker; never
by anything that runs per request.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .config import BindAddress, ServerSettings, parse_bind

if TYPE_CHECKING:
    import ssl


def bind_socket(
    address: BindAddress, *, backlog: int, reuse_port: bool, uds_mode: int = 0o666
) -> socket.socket:
    """A listening, non-blocking socket for one address."""
    if address.fd >= 0:
        sock = socket.socket(fileno=address.fd)
        sock.setblocking(False)
        return sock
    if address.path:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(address.path).st_mode):
                os.unlink(address.path)  # a stale socket from an earlier run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address.path)
            os.chmod(address.path, uds_mode)
        except OSError:
            sock.close()
            raise
    else:
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port and hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address.host, address.port))
        except OSError:
            sock.close()
            raise
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def bind_all(
    settings: ServerSettings, addresses: Iterable[str] | None = None
) -> list[socket.socket]:
    """Bind ``addresses`` (every ``[server].bind`` one by default) with the
    settings' backlog, ``reuse_port`` and ``uds_mode``; on failure close what
    was bound and raise."""
    sockets: list[socket.socket] = []
    mode = int(settings.uds_mode, 8)
    try:
        for text in settings.bind if addresses is None else addresses:
            sockets.append(
                bind_socket(
                    parse_bind(text),
                    backlog=settings.backlog,
                    reuse_port=settings.reuse_port,
                    uds_mode=mode,
                )
            )
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def describe(sock: socket.socket) -> str:
    """``http://127.0.0.1:8000`` or ``unix:/path`` for log lines."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    host = f"[{name[0]}]" if sock.family == socket.AF_INET6 else name[0]
    return f"{host}:{name[1]}"


def make_ssl_context(settings: ServerSettings, *, http2: bool = False) -> ssl.SSLContext | None:
    """The TLS context for ``ssl_*`` settings, or None when TLS is off.

    ALPN offers ``h2`` before ``http/1.1`` when ``http2`` is on; a client that
    offers neither (or no ALPN at all) gets HTTP/1.1.

    TLS 1.2 is the oldest version offered; renegotiation is refused (HTTP/1.1
    never needs it, and a client could use it to make the server repeat the
    costly handshake at will; OpenSSL 3 refuses it by default, 1.1.1 does
    not). Errors name the files they come from.
    """
    if not settings.ssl_certfile:
        return None
    import ssl  # only workers of TLS listeners need it

    if settings.ssl_cert_reqs and not settings.ssl_ca_certs:
        raise ValueError(
            "ssl_cert_reqs asks for client certificates: set ssl_ca_certs to verify them"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    keyfile = settings.ssl_keyfile or settings.ssl_certfile
    try:
        context.load_cert_chain(
            settings.ssl_certfile,
            settings.ssl_keyfile or None,
            settings.ssl_keyfile_password or _no_password,
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        wrong = settings.ssl_keyfile_password and isinstance(exc, ssl.SSLError)
        hint = " (wrong ssl_keyfile_password?)" if wrong else ""
        raise OSError(
            f"cannot load {settings.ssl_certfile} with key {keyfile}: {exc}{hint}"
        ) from exc
    context.verify_mode = ssl.VerifyMode(settings.ssl_cert_reqs)
    if settings.ssl_ca_certs:
        try:
            context.load_verify_locations(settings.ssl_ca_certs)
        except OSError as exc:
            raise OSError(f"cannot load ssl_ca_certs {settings.ssl_ca_certs}: {exc}") from exc
    if settings.ssl_ciphers:
        try:
            context.set_ciphers(settings.ssl_ciphers)
        except ssl.SSLError as exc:
            raise OSError(f"ssl_ciphers {settings.ssl_ciphers!r}: {exc}") from exc
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    return context


def _no_password() -> str:
    # Without a password callback OpenSSL would prompt on the terminal, and a
    # worker would wait there for ever.
    raise ValueError("the TLS key is encrypted: set ssl_keyfile_password")
