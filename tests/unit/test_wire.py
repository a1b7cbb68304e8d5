"""The worker -> master frame codec, fed bytes the way a stream socket delivers them."""

from __future__ import annotations

import json
import struct

import pytest

from asgid._wire import MAX_FRAME, Decoder, FrameError, Histogram, Kind, Message, encode

BOOT_FAILED, DRAIN, DUE, HEARTBEAT, READY = (
    Kind.BOOT_FAILED,
    Kind.DRAIN,
    Kind.DUE,
    Kind.HEARTBEAT,
    Kind.READY,
)

STATS = {"requests": 12, "in_progress": 1, "connections": 3, "lag": 0.0015}


def frame(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


def test_round_trip_of_every_type() -> None:
    data = (
        encode(READY)
        + encode(HEARTBEAT, **STATS)
        + encode(DUE, reason="max_requests")
        + encode(BOOT_FAILED, code=4, message="could not import module 'app' — ünïcode")
        + encode(DRAIN, restart=True)
    )
    assert Decoder().feed(data) == [
        Message(READY, {}),
        Message(HEARTBEAT, STATS),
        Message(DUE, {"reason": "max_requests"}),
        Message(BOOT_FAILED, {"code": 4, "message": "could not import module 'app' — ünïcode"}),
        Message(DRAIN, {"restart": True}),
    ]


def test_a_frame_is_a_length_and_a_json_object() -> None:
    data = encode(DUE, reason="memory")
    (size,) = struct.unpack("!I", data[:4])
    assert size == len(data) - 4
    assert json.loads(data[4:]) == {"t": "due", "reason": "memory"}


def test_frames_split_at_every_byte() -> None:
    data = encode(HEARTBEAT, **STATS) + encode(READY)
    for cut in range(len(data) + 1):
        decoder = Decoder()
        messages = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert [m.kind for m in messages] == [HEARTBEAT, READY], cut


def test_one_byte_at_a_time() -> None:
    data = encode(READY) + encode(DUE, reason="max_requests")
    decoder = Decoder()
    messages = []
    for i in range(len(data)):
        messages += decoder.feed(data[i : i + 1])
    assert messages == [Message(READY), Message(DUE, {"reason": "max_requests"})]


def test_many_frames_in_one_feed_and_a_partial_tail() -> None:
    frames = [encode(HEARTBEAT, **{**STATS, "requests": n}) for n in range(100)]
    data = b"".join(frames)
    decoder = Decoder()
    messages = decoder.feed(data + frames[0][:7])
    assert [m.data["requests"] for m in messages] == list(range(100))
    assert decoder.feed(frames[0][7:]) == [Message(HEARTBEAT, {**STATS, "requests": 0})]
    assert decoder.feed(b"") == []


def test_an_oversize_length_is_rejected_before_the_body_arrives() -> None:
    decoder = Decoder()
    with pytest.raises(FrameError, match="exceeds the limit"):
        decoder.feed(struct.pack("!I", MAX_FRAME + 1))


def test_the_largest_frame_is_accepted() -> None:
    filler = "x" * (MAX_FRAME - len(encode(BOOT_FAILED, code=3, message="")) + 4)
    data = encode(BOOT_FAILED, code=3, message=filler)
    assert len(data) == MAX_FRAME + 4
    assert Decoder().feed(data)[0].data["message"] == filler


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"ready"',
        b"{}",
        b'{"t": "reboot"}',
        b'{"t": 1}',
        b"",
    ],
)
def test_garbage_is_a_frame_error(payload: bytes) -> None:
    with pytest.raises(FrameError):
        Decoder().feed(frame(payload))


def test_garbage_after_good_frames() -> None:
    decoder = Decoder()
    with pytest.raises(FrameError):
        decoder.feed(encode(READY) + frame(b"{oops"))


def test_encoding_too_large_a_message_is_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        encode(BOOT_FAILED, code=3, message="x" * MAX_FRAME)


def test_histogram_buckets_are_upper_bounds_and_add_up() -> None:
    worker = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0):
        worker.observe(value)
    assert worker.counts == [2, 1, 1]  # a value on a bound counts in that bound's bucket
    master = Histogram((0.1, 1.0))
    master.add(worker.counts, worker.total)
    master.add([1, 0, 0, 7], 0.01)  # a longer report (newer buckets) is cut, not mixed in
    assert master.cumulative() == [("0.1", 3.0), ("1.0", 4.0), ("+Inf", 5.0)]
    assert master.total == pytest.approx(2.66)


def test_every_kind_round_trips_by_value() -> None:
    for kind in Kind:
        (message,) = Decoder().feed(encode(kind))
        assert message.kind is kind
