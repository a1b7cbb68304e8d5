"""uvicorn's names that are not one-to-one asgid settings.

Most of uvicorn's flags are declared in the schema as the flags of asgid's
own settings. What is left lives here: ``--host/--port/--uds/--fd`` (one
``bind`` list in asgid), and the options that choose between
implementations asgid does not switch between. For those, each value either
means what asgid does anyway (accepted quietly) or gets one warning line
saying how asgid differs; none is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BIND_NAMES = ("host", "port", "uds", "fd")  # one [server].bind list in asgid

# ``uvicorn.run()`` keywords whose names are not a long flag of an asgid setting.
KEYWORDS = {
    "app_dir": "app.app_dir",
    "headers": "http.headers",  # headers=[(name, value)]
    "reload_dirs": "reload.dirs",
    "reload_includes": "reload.include",
    "reload_excludes": "reload.exclude",
}


def bind_from_uvicorn(
    host: str | None = None,
    port: int | None = None,
    uds: str | None = None,
    fd: int | None = None,
) -> tuple[str, ...]:
    """uvicorn's ``--host/--port/--uds/--fd`` as ``[server].bind`` entries."""
    binds: list[str] = []
    if host is not None or port is not None:
        host = host or "127.0.0.1"
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        binds.append(f"{host}:{8000 if port is None else port}")
    if uds:
        binds.append(f"unix:{uds}")
    if fd is not None:
        binds.append(f"fd://{fd}")
    return tuple(binds)


@dataclass(frozen=True, slots=True)
class Option:
    """A uvicorn option asgid accepts without an asgid setting behind it."""

    name: str  # the keyword: ``http`` is ``--http`` and ``run(http=...)``
    same: frozenset[str]  # values that mean what asgid does anyway ("" for a bare flag)
    differs: str  # the warning for any other value; ``{value}`` is replaced
    choices: tuple[str, ...] = ()  # uvicorn's choices, for --help
    takes_value: bool = True


OPTIONS = (
    Option(
        "http",
        # h2: HTTP/2 is offered on TLS listeners anyway ([http].http2, on by default).
        frozenset({"auto", "httptools", "h2"}),
        "--http {value}: asgid parses HTTP/1.1 with httptools (llhttp) whatever is asked",
        choices=("auto", "h11", "httptools", "h2", "zttp"),
    ),
    Option(
        "ws",
        frozenset({"auto", "websockets", "websockets-sansio"}),
        "--ws {value}: asgid serves WebSockets with the websockets library's sans-I/O "
        "protocol whatever is asked",
        choices=("auto", "none", "websockets", "websockets-sansio", "wsproto"),
    ),
    Option(
        "ssl_version",
        frozenset(),
        "--ssl-version {value}: asgid negotiates TLS 1.2 or newer; the number is ignored",
    ),
    Option(
        "reset_contextvars",
        frozenset({"true", "false"}),  # every request already starts in a fresh context
        "",
        takes_value=False,
    ),
    Option(
        "use_colors",
        frozenset({"false"}),
        "--use-colors: asgid never colours its log lines",
        takes_value=False,
    ),
)
OPTION_NAMES = {option.name: option for option in OPTIONS}


def warnings(given: Mapping[str, Any]) -> list[str]:
    """A warning for each of uvicorn's options in ``given`` that asgid serves its own way."""
    found = (warning(name, value) for name, value in given.items() if name in OPTION_NAMES)
    return [text for text in found if text]


def warning(name: str, value: object) -> str | None:
    """The warning for giving uvicorn option ``name`` the ``value``; None if it means the same."""
    option = OPTION_NAMES[name]
    text = str(value).lower() if isinstance(value, (str, bool)) else str(value)
    if not option.takes_value:
        text = "true" if value in (True, "true", "") else "false"
        if text == "false" and name != "use_colors":
            return None
    if text in option.same:
        return None
    return option.differs.format(value=value)
