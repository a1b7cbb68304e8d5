"""Value kinds: how one setting's value is read from TOML and from text.

A kind turns a raw value (a TOML value, or a string from the command line or
the environment) into the typed value the settings dataclasses hold, or raises
``ValueError`` with a message that says what was expected. Kinds know nothing
about keys, files or lines; ``_load`` adds those to the message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True, slots=True)
class Kind:
    """A value type: ``name`` appears in docs and in error messages."""

    name: str
    from_toml: Callable[[Any], Any]
    from_text: Callable[[str], Any]
    repeatable: bool = False  # a CLI flag of this kind may be given several times


def _expected(what: str, value: Any) -> ValueError:
    return ValueError(f"expected {what}, got {value!r}")


def _bool_toml(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _expected("true or false", value)


def _bool_text(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _expected("true or false", text)


def _int_toml(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _expected("an integer", value)


def _int_text(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise _expected("an integer", text) from None


def _float_toml(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise _expected("a number", value)


def _float_text(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise _expected("a number", text) from None


def _str_toml(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _expected("a string", value)


def _str_list_toml(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise _expected("a list of strings", value)


def _str_list_text(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _header_pair(name: Any, value: Any) -> tuple[str, str]:
    if not isinstance(name, str) or not isinstance(value, str) or not name.strip():
        raise _expected('a header as ["name", "value"] or "name: value"', [name, value])
    if any(ch in name + value for ch in "\r\n\0"):
        raise ValueError(f"header {name!r} contains a control character")
    return name.strip(), value.strip()


def _header_text(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep:
        raise _expected('a header as "name: value"', text)
    return _header_pair(name, value)


def _headers_toml(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise _expected('a list of headers, e.g. [["x-served-by", "asgid"]]', value)
    pairs = []
    for item in value:
        if isinstance(item, str):
            pairs.append(_header_text(item))
        elif isinstance(item, list) and len(item) == 2:
            pairs.append(_header_pair(item[0], item[1]))
        else:
            raise _expected('a header as ["name", "value"] or "name: value"', item)
    return tuple(pairs)


def _headers_text(text: str) -> tuple[tuple[str, str], ...]:
    return (_header_text(text),)


def _worker_count(value: Any) -> int:
    if value == "auto":
        return 0  # resolved to the CPU count by whoever forks
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise _expected('a positive integer or "auto"', value)


def _worker_count_text(text: str) -> int:
    text = text.strip()
    if text == "auto":
        return _worker_count(text)
    try:
        return _worker_count(int(text))
    except ValueError:
        raise _expected('a positive integer or "auto"', text) from None


def parse_size(value: Any) -> int:
    """``"512MiB"`` -> 536870912; a bare integer is bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match and match.group(2).lower() in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    raise _expected('a size such as "512MiB", "1GB" or a number of bytes', value)


@dataclass(frozen=True, slots=True)
class Share:
    """A share of what there is: ``"80%"`` of the memory the container may use."""

    percent: float

    def __str__(self) -> str:
        return f"{self.percent:g}%"

    def of(self, total: int) -> int:
        return int(total * self.percent / 100)


def _memory(value: Any) -> int | Share:
    """A size (``"512MiB"``), or a percentage (``"80%"``, above 0 and at most 100)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            percent = float(value.strip()[:-1])
        except ValueError:
            percent = -1.0
        if 0 < percent <= 100:
            return Share(percent)
    else:
        try:
            return parse_size(value)
        except ValueError:
            pass
    raise _expected('a size such as "512MiB", a number of bytes, or a share such as "80%"', value)


BOOL = Kind("boolean", _bool_toml, _bool_text)
INT = Kind("integer", _int_toml, _int_text)
FLOAT = Kind("number", _float_toml, _float_text)
STR = Kind("string", _str_toml, str)
STR_LIST = Kind("list of strings", _str_list_toml, _str_list_text, repeatable=True)
HEADERS = Kind("list of headers", _headers_toml, _headers_text, repeatable=True)
WORKER_COUNT = Kind('integer or "auto"', _worker_count, _worker_count_text)
SIZE = Kind("size", parse_size, parse_size)
MEMORY = Kind("size or percentage", _memory, _memory)
