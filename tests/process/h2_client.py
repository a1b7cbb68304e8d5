"""A blocking HTTP/2 client on the h2 library, for tests that send exact frames.

``RawH2`` speaks h2c (or h2 over a given TLS context) to a server and keeps
every event it has read. Well-formed frames go through h2's client state
machine; hostile ones (what h2 would refuse to send) are written as raw
hyperframe frames with ``send_raw``. Every read has a deadline.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import Frame


class RawH2:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        context: ssl.SSLContext | None = None,
        timeout: float = 5.0,
        settings: dict[int, int] | None = None,
    ) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        if context is not None:
            try:
                raw = context.wrap_socket(raw, server_hostname=host)
            except BaseException:
                raw.close()
                raise
        self.sock = raw
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        if settings:  # sent in the first SETTINGS frame
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.conn.initiate_connection()
        self.events: list[h2.events.Event] = []
        self.closed = False
        self._buffer = b""
        self.received = b""  # every byte the server sent
        self.flush()

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    # -- writing ------------------------------------------------------------------

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.send_bytes(data)

    def send_bytes(self, data: bytes) -> bool:
        """Write ``data``; False once the server has closed (or reset) the connection."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def send_raw(self, frame: Frame) -> bool:
        self.flush()
        return self.send_bytes(frame.serialize())

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        body: bytes | None = None,
        end: bool = True,
        headers: list[tuple[bytes, bytes]] | None = None,
        authority: str = "127.0.0.1",
        scheme: str = "http",
    ) -> int:
        """Open a stream; returns its id. ``end=False`` leaves the body open."""
        stream_id = self.conn.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", scheme.encode()),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *(headers or []),
        ]
        self.conn.send_headers(stream_id, fields, end_stream=end and not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=end)
        self.flush()
        return stream_id

    # -- reading ------------------------------------------------------------------

    def read_until(
        self, predicate: Callable[[list[h2.events.Event]], bool], timeout: float = 10.0
    ) -> list[h2.events.Event]:
        """Read events until ``predicate(events)`` holds or the server closes."""
        deadline = time.monotonic() + timeout
        while not predicate(self.events):
            if self.closed:
                raise EOFError(f"server closed; events: {self.events[-5:]}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no such event within {timeout}s; got {self.events[-5:]}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            except TimeoutError:
                continue
            if not data:
                self.closed = True
                continue
            self.feed(data)
        return self.events

    def feed(self, data: bytes) -> None:
        """Hand ``data`` to h2, all but GOAWAY frames.

        h2 processes no frame after a GOAWAY, whereas RFC 9113 6.8 has the
        streams it names completed: like browsers and libcurl, this client
        takes the GOAWAY note itself and goes on reading those streams.
        """
        self.received += data
        buffer = self._buffer + data
        start = 0
        while len(buffer) - start >= 9:
            length = int.from_bytes(buffer[start : start + 3], "big")
            end = start + 9 + length
            if len(buffer) < end:
                break
            if buffer[start + 3] == 0x7:  # GOAWAY
                event = h2.events.ConnectionTerminated()
                event.last_stream_id = int.from_bytes(buffer[start + 9 : start + 13], "big")
                event.error_code = int.from_bytes(buffer[start + 13 : start + 17], "big")
                event.last_stream_id &= 0x7FFFFFFF
                try:
                    self.events += self.conn.receive_data(buffer[:start])
                except h2.exceptions.ProtocolError:
                    self.closed = True
                self.events.append(event)
                buffer, start = buffer[end:], 0
                continue
            start = end
        self._buffer = buffer[start:]  # an unfinished frame
        try:
            self.events += self.conn.receive_data(buffer[:start])
        except h2.exceptions.ProtocolError:
            self.closed = True
        self.flush()

    def response(self, stream_id: int, timeout: float = 10.0) -> Response:
        """Wait for the end of ``stream_id`` and return what came on it."""

        def ended(events: list[h2.events.Event]) -> bool:
            return any(
                isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
                and e.stream_id == stream_id
                for e in events
            )

        self.read_until(ended, timeout)
        response = Response()
        for event in self.events:
            if getattr(event, "stream_id", None) != stream_id:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                response.headers = [(bytes(k), bytes(v)) for k, v in event.headers]
            elif isinstance(event, h2.events.DataReceived):
                response.body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                response.trailers = [(bytes(k), bytes(v)) for k, v in event.headers]
            elif isinstance(event, h2.events.StreamReset):
                response.reset = int(event.error_code or 0)
        self.flush()
        return response

    def goaway(self, timeout: float = 10.0) -> h2.events.ConnectionTerminated:
        """The server's GOAWAY (read until it comes)."""

        def terminated(events: list[h2.events.Event]) -> bool:
            return any(isinstance(e, h2.events.ConnectionTerminated) for e in events)

        self.read_until(terminated, timeout)
        return next(e for e in self.events if isinstance(e, h2.events.ConnectionTerminated))

    def wait_closed(self, timeout: float = 10.0) -> None:
        """Read (and keep) events until the server closes the connection."""
        try:
            self.read_until(lambda events: False, timeout)
        except EOFError:
            return


class Response:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.trailers: list[tuple[bytes, bytes]] = []
        self.reset: int | None = None

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers).get(name)


class Load:
    """Keep ``streams`` requests in flight, connection after connection, until stopped.

    The client a browser would be: after a GOAWAY it finishes the streams the
    server named, sends the later ones again on a new connection, and counts
    as failed only a stream the server promised and did not answer with 200.
    """

    def __init__(self, host: str, port: int, path: str, streams: int = 10) -> None:
        self.host, self.port, self.path, self.streams = host, port, path, streams
        self.ok = 0
        self.retried = 0
        self.connections = 0
        self.failures: list[str] = []
        self.stopping = False

    def run(self, deadline: float) -> None:
        while not self.stopping and time.monotonic() < deadline:
            self._connection(deadline)

    def _connection(self, deadline: float) -> None:
        try:
            client = RawH2(self.host, self.port)
        except OSError as exc:
            self.failures.append(f"connect: {exc!r}")
            return
        self.connections += 1
        with client:
            inflight: set[int] = set()
            goaway: h2.events.ConnectionTerminated | None = None
            seen = 0
            while time.monotonic() < deadline:
                while goaway is None and not self.stopping and len(inflight) < self.streams:
                    inflight.add(client.request(self.path))
                if not inflight:
                    return
                try:
                    client.read_until(lambda events, n=seen: len(events) > n, 5)
                except (EOFError, TimeoutError) as exc:
                    last = goaway.last_stream_id if goaway is not None else 0
                    lost = sorted(i for i in inflight if i <= last)
                    if lost or goaway is None:
                        self.failures.append(f"{exc!r}; streams {sorted(inflight)}; last {last}")
                    self.retried += len(inflight) - len(lost)
                    return
                for event in client.events[seen:]:
                    if isinstance(event, h2.events.ConnectionTerminated):
                        goaway = event
                        later = {i for i in inflight if i > event.last_stream_id}
                        self.retried += len(later)
                        inflight -= later
                    elif isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers).get(b":status")
                        if status != b"200":
                            self.failures.append(f"stream {event.stream_id}: {status!r}")
                    elif isinstance(event, h2.events.DataReceived):
                        client.conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        inflight.discard(event.stream_id)
                        self.ok += 1
                    elif isinstance(event, h2.events.StreamReset):
                        inflight.discard(event.stream_id)
                        self.failures.append(f"stream {event.stream_id} reset {event.error_code}")
                seen = len(client.events)
                client.flush()
                if goaway is not None and not inflight:
                    return
