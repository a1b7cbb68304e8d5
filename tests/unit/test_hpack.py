"""The stateless HPACK encoder (asgid/worker/_hpack.py) against hpack's decoder."""

from __future__ import annotations

import pytest
from hpack import Decoder

from asgid.worker._hpack import StatelessEncoder, encode_field

FIELDS = [
    (b":status", b"200"),  # in the static table, name and value
    (b":status", b"418"),  # name only
    (b"content-type", b"application/json"),
    (b"content-length", b"13"),
    (b"server", b"asgid"),
    (b"date", b"Wed, 02 Dec 2026 18:00:00 GMT"),
    (b"x-custom", b"v" * 300),  # a new name; a length past the 7-bit prefix
    (b"www-authenticate", b""),  # static index 61, the last
]


def test_blocks_decode_to_the_fields_and_leave_the_table_empty() -> None:
    encoder, decoder = StatelessEncoder(), Decoder()
    for _ in range(3):  # the cached parts give the same result
        assert decoder.decode(encoder.encode(FIELDS), raw=True) == FIELDS
    assert len(decoder.header_table.dynamic_entries) == 0


def test_static_fields_are_one_byte() -> None:
    assert encode_field(b":status", b"200") == b"\x88"
    assert encode_field(b":status", b"404") == b"\x8d"


def test_a_smaller_table_is_announced_once() -> None:
    encoder, decoder = StatelessEncoder(), Decoder()
    encoder.header_table_size = 0
    block = encoder.encode(FIELDS[:1])
    assert block[:1] == b"\x20"  # dynamic table size update to 0 (RFC 7541 6.3)
    decoder.header_table_size = 0
    assert decoder.decode(block, raw=True) == FIELDS[:1]
    assert encoder.encode(FIELDS[:1]) == b"\x88"


@pytest.mark.parametrize("size", [1, 5000])
def test_the_cache_is_bounded(size: int) -> None:
    encoder = StatelessEncoder()
    for i in range(size):
        encoder.encode([(b"date", b"%d" % i)])
    assert len(encoder._cache) <= 4096
