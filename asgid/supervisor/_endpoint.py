"""Small request/response servers run by the master's select loop.

An ``Endpoint`` owns one listening socket registered with the master's
selector and the clients accepted from it. It reads each client's request up
to a terminator (a blank line for HTTP, a newline for the control protocol),
hands it to a handler, writes the answer and closes. The master stays the one
thing that must never block: clients are bounded in number, in request size
and in time, and running out of file descriptors pauses accepting rather than
spinning the loop. What a request means is the handler's business; no I/O
happens outside this module.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import time
from collections.abc import Callable

logger = logging.getLogger("asgid.error")

CLIENT_TIMEOUT = 10.0
# Clients held at once; beyond it the oldest is dropped, so idle clients can never
# take the file descriptors the master needs to spawn workers.
MAX_CLIENTS = 32
ACCEPT_PAUSE = 1.0  # seconds an endpoint stops accepting after running out of fds


class Client:
    """One accepted connection: what it sent so far and what is left to send."""

    __slots__ = ("deadline", "inbox", "outbox", "replied", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.inbox = b""
        self.outbox = b""
        self.deadline = deadline  # monotonic; a handler that answers later may move it
        self.replied = False


Handler = Callable[[bytes, Client], None]
"""Called with a whole request (terminator excluded); answers with ``Endpoint.reply``,
now or later."""

PeerCheck = Callable[[socket.socket], "bytes | None"]
"""Called on each accepted socket: None lets the peer in; bytes are sent to it
(best effort) before it is closed."""


class Endpoint:
    def __init__(
        self,
        name: str,
        sock: socket.socket,
        selector: selectors.BaseSelector,
        handler: Handler,
        *,
        terminator: bytes,
        max_request: int,
        too_large: Callable[[], bytes],
        path: str = "",
        accept_peer: PeerCheck | None = None,
    ) -> None:
        self.name = name
        self.accept_peer = accept_peer
        self.sock = sock
        self.selector = selector
        self.handler = handler
        self.terminator = terminator
        self.max_request = max_request
        self.too_large = too_large
        self.path = path  # a Unix socket's file, removed at close
        self.clients: dict[int, Client] = {}
        self.paused_until = 0.0  # accepting stopped until then (out of file descriptors)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, self._accept)

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        if not self.paused_until:
            self.selector.unregister(self.sock)
        self.sock.close()
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def close_in_child(self) -> None:
        """In a forked worker: close the descriptors, leave the master's state alone."""
        for client in self.clients.values():
            client.sock.close()
        self.sock.close()

    def expire(self, now: float) -> None:
        """Drop clients past their deadline; resume accepting after a pause."""
        for client in list(self.clients.values()):
            if now > client.deadline:
                self._drop(client)
        if self.paused_until and now >= self.paused_until:
            self.paused_until = 0.0
            self.selector.register(self.sock, selectors.EVENT_READ, self._accept)

    def reply(self, client: Client, data: bytes) -> None:
        """Send ``data`` and close; a client that went away meanwhile is ignored."""
        if client.replied or self.clients.get(client.sock.fileno()) is not client:
            return
        client.replied = True
        client.outbox = data
        self._flush(client)

    def _accept(self, mask: int) -> None:
        for _ in range(16):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of file descriptors (EMFILE/ENFILE): give one back, and stop
                # watching the listening socket for a while (it stays readable, so
                # the loop would spin) so the master can use the fd to spawn.
                logger.warning(
                    "%s: accept failed (%s); pausing for %gs", self.name, exc, ACCEPT_PAUSE
                )
                if self.clients:
                    self._drop(min(self.clients.values(), key=lambda c: c.deadline))
                self.selector.unregister(self.sock)
                self.paused_until = time.monotonic() + ACCEPT_PAUSE
                return
            sock.setblocking(False)
            if self.accept_peer is not None:
                refusal = self.accept_peer(sock)
                if refusal is not None:
                    try:
                        sock.send(refusal)
                    except OSError:
                        pass
                    sock.close()
                    continue
            if len(self.clients) >= MAX_CLIENTS:
                self._drop(min(self.clients.values(), key=lambda c: c.deadline))
            client = Client(sock, time.monotonic() + CLIENT_TIMEOUT)
            self.clients[sock.fileno()] = client
            self.selector.register(sock, selectors.EVENT_READ, lambda m, c=client: self._io(c, m))

    def _io(self, client: Client, mask: int) -> None:
        if client.outbox:
            self._flush(client)
            return
        data = self._recv(client)
        if not data:
            return
        client.inbox += data
        request, found, _ = client.inbox.partition(self.terminator)
        if not found:
            if len(client.inbox) > self.max_request:
                self.reply(client, self.too_large())
            return
        client.inbox = b""
        self.selector.modify(client.sock, selectors.EVENT_READ, lambda m, c=client: self._gone(c))
        self.handler(request, client)

    def _gone(self, client: Client) -> None:
        """Readable while a handler answers later: EOF means the client left
        (what else it sends is ignored: one request per connection)."""
        self._recv(client)

    def _recv(self, client: Client) -> bytes:
        """What the client sent; b"" if nothing yet, or if it left (then it is dropped)."""
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            data = b""
        if not data:
            self._drop(client)
        return data

    def _flush(self, client: Client) -> None:
        try:
            sent = client.sock.send(client.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(client)
            return
        client.outbox = client.outbox[sent:]
        if not client.outbox:
            self._drop(client)
        else:
            self.selector.modify(
                client.sock, selectors.EVENT_WRITE, lambda m, c=client: self._io(c, m)
            )

    def _drop(self, client: Client) -> None:
        if self.clients.get(client.sock.fileno()) is client:
            del self.clients[client.sock.fileno()]
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
