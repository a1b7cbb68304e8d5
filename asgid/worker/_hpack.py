"""HPACK encoding of response header blocks, without the dynamic table.

hpack's ``Encoder`` indexes fields in the dynamic table and Huffman-codes
every string, in Python, on every response: a quarter of a small HTTP/2
response's CPU time. ``StatelessEncoder`` uses the static table and plain
literals "without indexing" only, so a field always encodes to the same bytes
and is cached; a response's block is a join of cached parts. The blocks are a
little larger than hpack's (no Huffman, no dynamic table), which costs
nothing on the small header sets servers send. It never touches a socket.
"""

from __future__ import annotations

from collections.abc import Iterable

from hpack.hpack import encode_integer
from hpack.table import HeaderTable

_CACHE_LIMIT = 4096  # fields cached; the Date changes every second, the rest repeat

_FULL: dict[tuple[bytes, bytes], int] = {}
_NAMES: dict[bytes, int] = {}
for _index, _field in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _FULL.setdefault(_field, _index)
    _NAMES.setdefault(_field[0], _index)


def _string(data: bytes) -> bytes:
    """A string literal, not Huffman-coded (RFC 7541 5.2)."""
    return bytes(encode_integer(len(data), 7)) + data


def encode_field(name: bytes, value: bytes) -> bytes:
    """One field: indexed if the static table has it, else a literal without indexing."""
    index = _FULL.get((name, value))
    if index is not None:
        return bytes((0x80 | index,))  # RFC 7541 6.1; the static table ends at 61
    index = _NAMES.get(name)
    if index is not None:
        return bytes(encode_integer(index, 4)) + _string(value)  # 6.2.2, indexed name
    return b"\x00" + _string(name) + _string(value)  # 6.2.2, new name


class StatelessEncoder:
    """What h2 asks of its encoder: ``encode(headers)`` and ``header_table_size``."""

    __slots__ = ("_cache", "_size_update", "_table_size")

    def __init__(self) -> None:
        self._cache: dict[tuple[bytes, bytes], bytes] = {}
        self._table_size = 4096
        self._size_update = b""

    @property
    def header_table_size(self) -> int:
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # The peer's decoder table changed size: the next block says so first
        # (RFC 7541 4.2, 6.3), although this encoder never adds to the table.
        self._table_size = value
        update = encode_integer(value, 5)
        update[0] |= 0x20
        self._size_update = bytes(update)

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        cache = self._cache
        parts = [self._size_update] if self._size_update else []
        self._size_update = b""
        for field in headers:
            part = cache.get(field)
            if part is None:
                name, value = field[0], field[1]
                part = encode_field(bytes(name), bytes(value))
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[(name, value)] = part
            parts.append(part)
        return b"".join(parts)
