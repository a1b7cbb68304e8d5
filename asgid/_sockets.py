"""Listening sockets: bind them, adopt the ones systemd or a parent passed,
and keep one per address for as long as any generation of workers uses it.

Used by the master before it forks and by a single in-process worker; never
by anything that runs per request. TLS contexts are in ``_tls``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import stat
from collections.abc import Iterable
from typing import Any

from .config import BindAddress, ServerSettings, parse_bind


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


def shared_local_address(sock: socket.socket) -> Any:
    """The local address every connection accepted on ``sock`` will have, if one will.

    A Unix socket's path, or the address of a TCP socket bound to one IP;
    None for a wildcard bind, where it depends on the interface the client
    came in on. Knowing it spares a getsockname() per connection.
    """
    name = sock.getsockname()
    if sock.family != socket.AF_UNIX and ipaddress.ip_address(name[0]).is_unspecified:
        return None
    return name


class Listeners:
    """The master's listening sockets: one per address, shared by every worker.

    Every worker accepts on the same socket, so a connection waits only
    while no worker at all is accepting: a worker that is booting, blocked,
    dead or draining leaves the queue to its siblings, and a replaced
    worker's queue is served by whoever accepts next, never reset. The master
    binds before forking and keeps its copies open until shutdown, so a
    queue outlives every worker. Sockets handed over by systemd (LISTEN_FDS)
    are used as they come, whatever ``bind`` says.
    """

    def __init__(self, inherited: list[socket.socket] | None = None) -> None:
        self.inherited = inherited or []
        self.bound: dict[str, socket.socket] = {}

    def acquire(self, settings: ServerSettings) -> list[socket.socket]:
        """The sockets for ``settings``: those already bound, plus new binds.

        On a bind error, what this call bound is closed again and nothing
        else changes.
        """
        if self.inherited:
            return list(self.inherited)
        wanted = list(dict.fromkeys(settings.bind))
        missing = [address for address in wanted if address not in self.bound]
        self.bound.update(zip(missing, bind_all(settings, missing), strict=True))
        return [self.bound[address] for address in wanted]

    def release(self, keep: list[socket.socket]) -> None:
        """Close the master's copy of every socket not in ``keep``.

        Workers hold their own copies: a listener dropped by a reload stays
        open until the workers that use it have drained.
        """
        kept = {id(sock) for sock in keep}
        for address, sock in list(self.bound.items()):
            if id(sock) not in kept:
                del self.bound[address]
                _close_listener(address, sock)

    def all(self) -> list[socket.socket]:
        return list(self.inherited) + list(self.bound.values())

    def describe(self) -> list[str]:
        return [describe(sock) for sock in self.all()]

    def close(self) -> None:
        for sock in self.inherited:
            sock.close()
        self.inherited = []
        self.release([])


def _close_listener(address: str, sock: socket.socket) -> None:
    sock.close()
    parsed = parse_bind(address)
    if parsed.path:
        with contextlib.suppress(OSError):
            os.unlink(parsed.path)
