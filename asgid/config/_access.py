"""The access log's fields: what ``[logging].access_format`` may name.

Declared here, with the settings, so a bad template fails when the
configuration loads (naming the key) and the worker's access log formats
exactly these fields.
"""

from __future__ import annotations

from typing import Any

ACCESS_FIELDS = (
    "client",
    "method",
    "path",
    "query",
    "http_version",
    "status",
    "bytes",
    "duration",
    "duration_ms",
    "user_agent",
    "referer",
    "request_id",
)
_SAMPLE: dict[str, Any] = dict.fromkeys(ACCESS_FIELDS, "") | {
    "status": 200,
    "bytes": 0,
    "duration": 0.0,
    "duration_ms": 0.0,
}


def check_access_format(template: str) -> None:
    """Raise ``ValueError`` naming the problem if ``template`` cannot be used."""
    try:
        template.format_map(_SAMPLE)
    except KeyError as exc:
        raise ValueError(
            f"unknown access log field {exc.args[0]!r}; fields: {', '.join(ACCESS_FIELDS)}"
        ) from None
    except (ValueError, IndexError) as exc:
        raise ValueError(f"invalid access log format: {exc}") from None
