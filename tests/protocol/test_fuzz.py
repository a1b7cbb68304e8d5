"""Fuzz the worker's HTTP path (httptools -> HttpProtocol -> ASGI) through a fake transport.

The harness is tests/fuzz_harness.py; scripts/fuzz runs the same properties for
minutes or hours. Here: the corpus as is, a short hypothesis run, proof that
each property catches a broken server, and the failures fuzzing found once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fuzz_h2 import REQUESTS, H2Scenario, h2_scenarios, run_h2_scenario
from fuzz_harness import (
    APPS,
    CONFIGS,
    CORPUS,
    WRITE_MODES,
    AppSpec,
    Head,
    ObservedProtocol,
    Receive,
    Scenario,
    Send,
    describe,
    read_responses,
    run_scenario,
    scenarios,
)
from hypothesis import HealthCheck, given, settings


def play(data: bytes, app_name: str = "echo", *events: str, **kwargs: Any) -> list[str]:
    """The categories of the problems that one stream, fed whole, then events run into."""
    actions = (("data", data), *((event, b"") for event in events))
    outcome = run_scenario(Scenario(actions=actions, app=app_name), **kwargs)
    return [problem.category for problem in outcome.problems]


# -- the properties hold ------------------------------------------------------------


@pytest.mark.parametrize("app", sorted(APPS))
def test_the_corpus_as_is(app: str) -> None:
    failures = []
    for config in CONFIGS:
        for data in CORPUS:
            cases = [Scenario((("data", data),), app, config, writes) for writes in WRITE_MODES]
            if len(data) < 400:  # and one byte per read
                actions = tuple(("data", data[i : i + 1]) for i in range(len(data)))
                cases.append(Scenario(actions, app, config))
            for scenario in cases:
                outcome = run_scenario(scenario)
                if outcome.new_problems():
                    failures.append("\n".join(describe(scenario, outcome)))
    assert not failures, "\n\n".join(failures[:3])


@settings(
    max_examples=1200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_fuzzed_request_streams(scenario: Scenario) -> None:
    outcome = run_scenario(scenario)
    assert not outcome.new_problems(), "\n".join(describe(scenario, outcome))


# -- the response reader is strict --------------------------------------------------

GET = Head(method=b"GET", version="1.1", keep_alive=True, expect=False, websocket=False)
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@pytest.mark.parametrize(
    ("wire", "heads", "category"),
    [
        pytest.param(OK + OK, [GET], "more final responses than request heads", id="two-finals"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nx: a\nb\r\n\r\n", [GET], "malformed header line", id="bare-lf"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nx: a\r\n b\r\n\r\n", [GET], "malformed header line", id="obs-fold"
        ),
        pytest.param(b"HTTP/1.1 200\r\n\r\n", [GET], "malformed status line", id="no-reason-sp"),
        pytest.param(b"HTTP/1.1 200 OK\r\n", [GET], "unterminated response head", id="cut-head"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
            [GET],
            "content-length with transfer-encoding",
            id="cl-and-te",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokk\r\n0\r\n\r\n",
            [GET],
            "chunk data not followed by CRLF",
            id="bad-chunk",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            [Head(b"GET", "1.0", False, False, False)],
            "chunked response to an HTTP/1.0 request",
            id="chunked-to-1.0",
        ),
        pytest.param(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            [],
            "error response without connection: close",
            id="error-keeps-alive",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\ncontent-length: 0x1\r\n\r\n",
            [GET],
            "bad content-length",
            id="hex-length",
        ),
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\n" + OK, [GET], "unexpected interim response", id="100"
        ),
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\n" * 2 + OK,
            [Head(b"PUT", "1.1", True, True, False)],
            "two 100 Continue for one request",
            id="100-twice",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok" + OK,
            [GET, GET],
            "response after a connection: close response",
            id="after-close",
        ),
        pytest.param(
            b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
            [GET],
            "204 with framing headers",
            id="204-length",
        ),
    ],
)
def test_the_reader_rejects(wire: bytes, heads: list[Head], category: str) -> None:
    assert category in [p.category for p in read_responses(wire, heads).problems]


def test_the_reader_accepts_interim_chunked_and_trailers() -> None:
    expect = Head(b"PUT", "1.1", True, True, False)
    wire = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        + b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-t: 1\r\n\r\n"
        + b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    )
    reading = read_responses(wire, [expect, GET])
    assert reading.problems == []
    assert reading.finals == [200, 200]
    assert not reading.ends_connection


# -- each property catches a broken server ---------------------------------------------


class KeepsErrorsOpen(ObservedProtocol):
    def close_with(self, data: bytes) -> None:
        self.closing = True
        self.transport.write(data)


class AnswersTwice(ObservedProtocol):
    def response_complete(self, cycle: Any) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        super().response_complete(cycle)


class CrashesOnData(ObservedProtocol):
    def data_received(self, data: bytes) -> None:
        raise ValueError("boom")


async def waits_forever(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    await asyncio.get_running_loop().create_future()


async def fails_in_a_callback(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    asyncio.get_running_loop().call_soon(lambda: 1 / 0)
    await APPS["echo"].app(scope, receive, send)


REQUEST = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "kwargs", "category"),
    [
        pytest.param(
            b"GET / HTTP/1.1\r\n\r\n",
            {"protocol_class": KeepsErrorsOpen},
            "error response without a close",
            id="error-not-closed",
        ),
        pytest.param(
            REQUEST,
            {"protocol_class": AnswersTwice},
            "more final responses than request heads",
            id="two-answers",
        ),
        pytest.param(
            REQUEST, {"protocol_class": CrashesOnData}, "data_received raised", id="crash"
        ),
        pytest.param(
            REQUEST,
            {"app": AppSpec(waits_forever, finite=False)},
            "task pending after the connection closed",
            id="hang",
        ),
        pytest.param(
            REQUEST,
            {"app": AppSpec(APPS["longpoll"].app, finite=True)},
            "stalled with the loop idle",
            id="stall",
        ),
        pytest.param(
            REQUEST,
            {"app": AppSpec(fails_in_a_callback)},
            "loop exception handler called",
            id="loop-exception",
        ),
        pytest.param(
            REQUEST,
            {"app": AppSpec(APPS["raise_early"].app)},
            "unexpected error logged",
            id="error-log",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
            {"app": AppSpec(APPS["partial"].app, body=lambda request: request)},
            "response body is not what the app sent",
            id="wrong-body",
        ),
    ],
)
def test_a_broken_server_is_caught(data: bytes, kwargs: dict[str, Any], category: str) -> None:
    assert category in play(data, **kwargs)


# -- what fuzzing found once, kept as regression tests ---------------------------------

WS_HEAD = CORPUS[15].split(b"\r\n\r\n")[0] + b"\r\n\r\n"
CLOSE_FRAME = b"\x88\x82\x01\x02\x03\x04\x02\xea"  # masked close, code 1000


@pytest.mark.parametrize(
    ("data", "app", "category"),
    [
        pytest.param(
            b"HEAD / HTTP/1.1\r\n\r\n", "echo", "body sent in a response to HEAD", id="head-400"
        ),
        pytest.param(
            b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n",
            "raise_early",
            "body sent in a response to HEAD",
            id="head-500",
        ),
        pytest.param(
            b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx\x01",
            "no_content",
            "response after a connection: close response",
            id="error-after-close",
        ),
        pytest.param(
            REQUEST + REQUEST + b"\x01",
            "echo",
            "error response answers the wrong request",
            id="pipelined-then-garbage",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n\x01",
            "echo",
            "write after close()",
            id="ws-refused-then-invalid-method",
        ),
        pytest.param(
            WS_HEAD + CLOSE_FRAME, "stream", "write after close()", id="ws-denial-after-close"
        ),
        pytest.param(WS_HEAD, "echo", "write after connection_lost", id="ws-reset-after-handshake"),
        pytest.param(
            WS_HEAD[:-2] + b"Content-Length: 1\r\n\r\nx",
            "echo",
            "internal error while parsing a request",
            id="ws-head-with-a-body",
        ),
        pytest.param(
            WS_HEAD[:-2] + b"X-Long: " + b"a" * 9000 + b"\r\n\r\n",
            "echo",
            "internal error while parsing a request",
            id="ws-head-with-a-long-line",
        ),
    ],
)
def test_found_by_fuzzing(data: bytes, app: str, category: str) -> None:
    assert category not in play(data, app, "reset")  # the client then resets the connection


# -- HTTP/2 (tests/protocol/fuzz_h2.py) --------------------------------------------------------


@pytest.mark.parametrize("app", sorted(APPS))
def test_h2_corpus_as_is(app: str) -> None:
    failures = []
    for config in CONFIGS:
        for index in range(len(REQUESTS)):
            for writes in WRITE_MODES:
                scenario = H2Scenario(
                    steps=(("request", index), ("request", 0)),
                    chunks=(),
                    events=(),
                    app=app,
                    config=config,
                    writes=writes,
                )
                outcome = run_h2_scenario(scenario)
                if outcome.problems:
                    failures.append(f"{scenario}: {outcome.problems} {outcome.wire[:300]!r}")
    assert not failures, "\n\n".join(failures[:3])


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(h2_scenarios())
def test_fuzzed_h2_streams(scenario: H2Scenario) -> None:
    outcome = run_h2_scenario(scenario)
    assert not outcome.problems, f"{scenario}: {outcome.problems} {outcome.wire[:300]!r}"
