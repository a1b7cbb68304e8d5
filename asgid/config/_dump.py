"""The effective configuration written back as TOML, with where each value came from.

``asgid ctl config`` shows it: every setting of the schema, its value, and a
comment naming its origin (the default, the file and line, an environment
variable, the command line). Passwords are masked. Pure text: no files here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from . import _kinds
from ._schema import Config, iter_settings

MASK = "********"


def origin_text(origin: tuple[str, int | None] | None, is_default: bool) -> str:
    """``default``, ``/etc/asgid/server.toml:12``, ``$ASGID_WORKERS_COUNT``, ``command line``."""
    if origin is None:
        return "default" if is_default else "set by the program"
    source, line = origin
    return f"{source}:{line}" if line is not None else source


def settings_with_origins(
    config: Config, origins: Mapping[str, tuple[str, int | None]]
) -> list[dict[str, Any]]:
    """One ``{"key", "value", "origin"}`` per setting (JSON-ready), in schema order."""
    rows = []
    for info in iter_settings():
        value = getattr(getattr(config, info.section), info.key)
        is_default = value == info.default
        if "password" in info.key and value:
            value = MASK
        elif isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        rows.append(
            {
                "key": info.path,
                "value": value,
                "origin": origin_text(origins.get(info.path), is_default),
            }
        )
    return rows


def render_toml(config: Config, origins: Mapping[str, tuple[str, int | None]]) -> str:
    """The whole configuration as TOML that loads back to the same values."""
    kinds = {info.path: info.meta.kind for info in iter_settings()}
    lines: list[str] = []
    section = ""
    for row in settings_with_origins(config, origins):
        table, _, key = row["key"].partition(".")
        if table != section:
            if section:
                lines.append("")
            lines.append(f"[{table}]")
            section = table
        value = _toml_value(row["value"], kinds[row["key"]])
        lines.append(f"{key} = {value}  # {row['origin']}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any, kind: _kinds.Kind) -> str:
    if kind is _kinds.WORKER_COUNT and value == 0:
        return '"auto"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item, kind) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")  # pragma: no cover
