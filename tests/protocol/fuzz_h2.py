"""Fuzzing the worker's HTTP/2 path (h2 -> H2Protocol -> ASGI) through a fake transport.

The HTTP/1.1 harness (fuzz_harness.py) provides the fake transport (fake.py), the
apps and the configs; this module adds what differs: a scenario is the byte
stream of an h2 client (requests from a small corpus with bodies, trailers,
pings, settings, window updates, resets, priorities), optionally mutated with
raw frames and byte flips, cut into chunks and interleaved with client events
(EOF, reset, a timeout tick, a drain). The properties: nothing raised from the
protocol's callbacks or into the loop's exception handler, no task pending and
no server state left once the client is gone, nothing written after the close,
the bytes written are well-formed HTTP/2 frames on the streams the client
opened, and, for a clean scenario with a finite app, the client's h2 reads a
complete answer (or a reset, or a GOAWAY) on every stream it opened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from fake import until_idle
from fuzz_harness import (
    APPS,
    CONFIGS,
    FAR_FUTURE,
    MAX_SPINS,
    WRITE_MODES,
    AppSpec,
    FakeTransport,
    FuzzAppError,
    HandleClosedError,
    Problem,
    _LogRecorder,
    track_tasks,
)
from hyperframe.frame import Frame
from hypothesis import strategies as st

from asgid.worker._h2 import H2Protocol
from asgid.worker._state import ServerState

# (method, path, extra headers, body chunks, trailers)
REQUESTS: tuple[tuple[bytes, bytes, list[tuple[bytes, bytes]], list[bytes], bool], ...] = (
    (b"GET", b"/", [], [], False),
    (b"GET", b"/a/b%20c?q=1&r=%ff", [(b"cookie", b"a=b"), (b"cookie", b"c=d")], [], False),
    (b"HEAD", b"/head", [], [], False),
    (b"POST", b"/echo", [(b"content-length", b"11")], [b"hello", b" world"], False),
    (b"POST", b"/chunks", [], [b"x" * 5000, b"y" * 70000], False),
    (b"PUT", b"/trailers", [(b"te", b"trailers")], [b"body"], True),
    (b"OPTIONS", b"*", [], [], False),
    (
        b"GET",
        b"/fwd",
        [(b"x-forwarded-for", b"10.0.0.1"), (b"x-forwarded-proto", b"https")],
        [],
        False,
    ),
    (b"DELETE", b"/" + b"p" * 100, [(b"x-fill", b"v" * 300)], [], False),
    (b"POST", b"/big", [(b"content-length", b"100")], [b"z" * 100], False),
)
CONTROLS = ("ping", "settings", "window", "priority", "reset", "empty_data")
EVENTS = ("eof", "reset", "timeout", "drain")
RAW_TYPES = (0x0, 0x1, 0x2, 0x3, 0x4, 0x6, 0x7, 0x8, 0x9, 0xA, 0xFF)


@dataclass(frozen=True)
class H2Scenario:
    steps: tuple[tuple[str, int], ...]  # ("request", i) / (control, stream) / ("raw", seed)
    chunks: tuple[int, ...]  # sizes the byte stream is cut into (the rest: one chunk)
    events: tuple[tuple[int, str], ...]  # (after chunk n, event)
    flips: tuple[tuple[int, int], ...] = ()  # (position, xor) on the byte stream
    app: str = "echo"
    config: str = "default"
    writes: str = "fast"
    half_close: bool = True

    @property
    def clean(self) -> bool:
        return not self.flips and not self.events and all(k != "raw" for k, _ in self.steps)


@st.composite
def h2_scenarios(draw: st.DrawFn) -> H2Scenario:
    steps = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("request"), st.integers(0, len(REQUESTS) - 1)),
                st.tuples(st.sampled_from(CONTROLS), st.integers(0, 5)),
                st.tuples(st.just("raw"), st.integers(0, 2**32)),
            ),
            min_size=1,
            max_size=8,
        )
    )
    return H2Scenario(
        steps=tuple(steps),
        chunks=tuple(draw(st.lists(st.integers(1, 4000), max_size=6))),
        events=tuple(
            draw(st.lists(st.tuples(st.integers(0, 6), st.sampled_from(EVENTS)), max_size=2))
        ),
        flips=tuple(
            draw(st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 255)), max_size=2))
        ),
        app=draw(st.sampled_from(sorted(APPS))),
        config=draw(st.sampled_from(sorted(CONFIGS))),
        writes=draw(st.sampled_from(WRITE_MODES)),
        half_close=draw(st.booleans()),
    )


def client_bytes(
    scenario: H2Scenario,
) -> tuple[bytes, h2.connection.H2Connection | None, list[int]]:
    """The client's byte stream, the client connection that made it, its request streams.

    The connection is None when its state machine refused a step: its state
    is then not the one the server sees, so it cannot judge the answers.
    """
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    client.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1}
    )
    client.initiate_connection()
    client.increment_flow_control_window(2**31 - 1 - 65535)
    data = bytearray(client.data_to_send())
    streams: list[int] = []
    valid = True
    for kind, arg in scenario.steps:
        try:
            if kind == "request":
                streams.append(_request(client, REQUESTS[arg]))
            elif kind == "raw":
                data += client.data_to_send()
                data += _raw_frame(arg, streams)
                continue
            else:
                _control(client, kind, arg, streams)
        except (h2.exceptions.ProtocolError, KeyError):  # KeyError: h2 forgot the stream
            valid = False  # the client's state machine refuses it: skipped
        data += client.data_to_send()
    return bytes(data), client if valid else None, streams


def _request(
    client: h2.connection.H2Connection,
    spec: tuple[bytes, bytes, list[tuple[bytes, bytes]], list[bytes], bool],
) -> int:
    method, path, extra, body, trailers = spec
    stream_id = client.get_next_available_stream_id()
    fields = [(b":method", method), (b":scheme", b"http"), (b":authority", b"example.com")]
    fields += [(b":path", path), *extra]
    client.send_headers(stream_id, fields, end_stream=not body and not trailers)
    for i, chunk in enumerate(body):
        client.send_data(stream_id, chunk, end_stream=i == len(body) - 1 and not trailers)
    if trailers:
        client.send_headers(stream_id, [(b"x-checksum", b"abc")], end_stream=True)
    return stream_id


def _control(client: h2.connection.H2Connection, kind: str, arg: int, streams: list[int]) -> None:
    stream_id = streams[arg % len(streams)] if streams else 1
    if kind == "ping":
        client.ping(b"%08d" % arg)
    elif kind == "settings":
        client.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384 + arg})
    elif kind == "window":
        client.increment_flow_control_window(1 + arg)
    elif kind == "priority":
        client.prioritize(stream_id, weight=1 + arg, depends_on=0)
    elif kind == "reset":
        client.reset_stream(stream_id)
    elif kind == "empty_data":
        client.send_data(stream_id, b"")


def _raw_frame(seed: int, streams: list[int]) -> bytes:
    """A frame h2's client would not send: any type, flags and stream, a short payload."""
    kind = RAW_TYPES[seed % len(RAW_TYPES)]
    flags = (seed >> 8) & 0xFF
    stream_id = streams[seed % len(streams)] if streams and seed & 1 else (seed >> 16) % 12
    length = (seed >> 4) % 24
    payload = bytes(((seed >> (i % 24)) + i) & 0xFF for i in range(length))
    header = length.to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big")
    return header + payload


@dataclass
class H2Outcome:
    problems: list[Problem]
    wire: bytes


class _H2Run:
    def __init__(self, scenario: H2Scenario, spec: AppSpec) -> None:
        self.scenario = scenario
        self.spec = spec
        self.problems: list[Problem] = []
        self.loop = loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._loop_exception)
        self.state = state = ServerState(CONFIGS[scenario.config], spec.app, loop)
        self.tasks: list[asyncio.Task[Any]] = []
        track_tasks(state, self.tasks)
        self.protocol = H2Protocol(
            state, tls=False, client=("10.1.2.3", 50000), server=("127.0.0.1", 8000)
        )
        self.transport = FakeTransport(
            loop,
            self.protocol,  # type: ignore[arg-type]
            writes=scenario.writes,
            half_close=scenario.half_close,
        )
        self.ticks = 0

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self._exception(exc, "loop exception handler called", str(context.get("message")))

    def _exception(self, exc: BaseException | None, category: str, detail: str) -> None:
        if isinstance(exc, HandleClosedError):
            category = "write after connection_lost"
        self.problems.append(Problem(category, f"{detail}: {exc!r}"))

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self.protocol, name)(*args)
        except Exception as exc:
            self._exception(exc, f"{name} raised", name)
            return None

    async def settle(self) -> None:
        if not await until_idle(self.loop, MAX_SPINS):
            self.problems.append(Problem("loop never idle", f"{MAX_SPINS} iterations"))

    def tick(self) -> None:
        self.ticks += 1
        now = self.loop.time() + FAR_FUTURE * self.ticks
        for conn in list(self.state.connections):
            conn.check_deadline(now)

    async def drive(self, data: bytes) -> None:
        transport = self.transport
        self._call("connection_made", transport)
        await self.settle()
        pieces = list(_cut(data, self.scenario.chunks))
        events = dict(self.scenario.events)
        for index, piece in enumerate(pieces):
            if transport.closing or transport.lost_scheduled or transport.reading_paused:
                break
            self._call("data_received", piece)
            await self.settle()
            event = events.get(index)
            if event == "eof":
                if not self._call("eof_received"):
                    transport.close()
            elif event == "reset":
                transport.lose(ConnectionResetError(104, "Connection reset by peer"))
            elif event == "timeout":
                self.tick()
            elif event == "drain":
                self.state.draining = True
                for conn in list(self.state.connections):
                    conn.shutdown(restart=True)
            await self.settle()
        self.before_timeouts = bytes(transport.wire)
        for _ in range(5):
            self.tick()
            await self.settle()
        transport.lose(None)
        await self.settle()

    def check(self, client: h2.connection.H2Connection | None, streams: list[int]) -> None:
        transport, state = self.transport, self.state
        for task in self.tasks:
            if not task.done():
                self.problems.append(
                    Problem("task pending after the connection closed", repr(task))
                )
            elif not task.cancelled() and task.exception() is not None:
                self._exception(task.exception(), "task died with an exception", repr(task))
        if not transport.lost:
            self.problems.append(Problem("connection_lost never delivered", repr(transport.calls)))
        leftovers = {
            "connections": len(state.connections),
            "cycles": len(state.cycles),
            "in_progress": state.in_progress,
            "http2_connections": state.http2_connections,
        }
        if any(leftovers.values()):
            self.problems.append(Problem("server state not cleaned up", repr(leftovers)))
        if transport.late:
            self.problems.append(Problem("write after close()", repr(bytes(transport.late[:80]))))
        largest = 16384 + max(
            (arg for kind, arg in self.scenario.steps if kind == "settings"), default=0
        )
        self.problems.extend(check_frames(bytes(transport.wire), largest))
        clean = self.scenario.clean and client is not None
        if clean and self.spec.finite and self.scenario.writes != "stuck":
            assert client is not None
            self._check_answers(client, streams)

    def _check_answers(self, client: h2.connection.H2Connection, streams: list[int]) -> None:
        """The client reads the answers: each stream it opened ends, or a GOAWAY comes."""
        events: list[h2.events.Event] = []
        try:
            # Frame by frame: h2 applies a SETTINGS ACK's frame size to the next read only.
            for frame in _frames(self.before_timeouts):
                events += client.receive_data(frame)
        except h2.exceptions.ProtocolError as exc:
            self.problems.append(Problem("the client's h2 refuses the server's frames", repr(exc)))
            return
        if any(isinstance(e, h2.events.ConnectionTerminated) for e in events):
            return
        ended = {
            e.stream_id
            for e in events
            if isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
        }
        reset_by_client = {s for s in streams if client._stream_is_closed_by_reset(s)}
        owed = [s for s in streams if s not in ended and s not in reset_by_client]
        if owed:
            self.problems.append(Problem("stream left unanswered with the loop idle", repr(owed)))

    def run(
        self, data: bytes, client: h2.connection.H2Connection | None, streams: list[int]
    ) -> None:
        logger = logging.getLogger("asgid")
        recorder = _LogRecorder()
        saved = logger.propagate, logger.level
        logger.addHandler(recorder)
        logger.propagate = False
        logger.setLevel(logging.ERROR)
        try:
            self.loop.run_until_complete(self.drive(data))
            self.check(client, streams)
            pending = [t for t in self.tasks if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
        finally:
            logger.removeHandler(recorder)
            logger.propagate, logger.level = saved
            self.loop.close()
        for record in recorder.records:
            message = record.getMessage()
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None and not isinstance(exc, FuzzAppError):
                self._exception(exc, "unexpected exception logged", message)
            elif not any(message.startswith(allowed) for allowed in self.spec.logs):
                self.problems.append(Problem("unexpected error logged", message))


def _cut(data: bytes, sizes: tuple[int, ...]) -> Iterator[bytes]:
    pos = 0
    for size in sizes:
        if pos >= len(data):
            return
        yield data[pos : pos + size]
        pos += size
    if pos < len(data):
        yield data[pos:]


def _frames(wire: bytes) -> Iterator[bytes]:
    pos = 0
    while pos < len(wire):
        end = pos + 9 + int.from_bytes(wire[pos : pos + 3], "big")
        yield wire[pos:end]
        pos = end


def check_frames(wire: bytes, max_frame_size: int = 16384) -> list[Problem]:
    """The server's bytes: whole frames, SETTINGS first, on stream 0 or odd (client) streams."""
    pos = 0
    first = True
    while pos < len(wire):
        if len(wire) - pos < 9:
            return [Problem("truncated frame header", repr(wire[pos:]))]
        try:
            frame, length = Frame.parse_frame_header(memoryview(wire[pos : pos + 9]))
        except Exception as exc:
            return [Problem("malformed frame header", f"{wire[pos : pos + 9]!r}: {exc!r}")]
        if length > max_frame_size:
            return [Problem("frame larger than the client's max frame size", str(length))]
        if len(wire) - pos - 9 < length:
            return [Problem("truncated frame", f"{type(frame).__name__} of {length} bytes")]
        try:
            frame.parse_body(memoryview(wire[pos + 9 : pos + 9 + length]))
        except Exception as exc:
            return [Problem("malformed frame body", f"{type(frame).__name__}: {exc!r}")]
        if first and type(frame).__name__ != "SettingsFrame":
            return [Problem("first frame is not SETTINGS", type(frame).__name__)]
        first = False
        if frame.stream_id and frame.stream_id % 2 == 0:
            return [Problem("frame on a server-initiated stream", repr(frame))]
        pos += 9 + length
    return []


def run_h2_scenario(scenario: H2Scenario) -> H2Outcome:
    data, client, streams = client_bytes(scenario)
    if scenario.flips:
        mutable = bytearray(data)
        for position, xor in scenario.flips:
            if position < len(mutable):
                mutable[position] ^= xor
        data = bytes(mutable)
    run = _H2Run(scenario, APPS[scenario.app])
    run.run(data, client, streams)
    return H2Outcome(run.problems, bytes(run.transport.wire))
