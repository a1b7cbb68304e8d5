"""Build a ``Config`` from a TOML file, the environment and CLI overrides.

Precedence, lowest first: declared defaults, ``WEB_CONCURRENCY`` (the worker
count uvicorn and gunicorn read), the TOML file, ``ASGID_<SECTION>_<KEY>``
environment variables, CLI flags. Every problem becomes a ``ConfigError`` whose
one-line message names the file, the line where it can be found, the key path
and what was expected; nothing here prints or exits.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from . import _uvicorn
from ._access import check_access_format
from ._schema import SECTIONS, Config, SettingInfo, iter_settings
from ._uvicorn import bind_from_uvicorn

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "ASGID_"


class ConfigError(Exception):
    """A configuration problem, with where it was found."""

    def __init__(
        self, message: str, *, source: str = "", key: str = "", line: int | None = None
    ) -> None:
        self.message = message
        self.source = source
        self.key = key
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source
        if where and self.line is not None:
            where = f"{where}:{self.line}"
        parts = [p for p in (where, self.key) if p]
        return ": ".join([*parts, self.message])


SETTINGS: dict[str, SettingInfo] = {info.path: info for info in iter_settings()}

# Where a value was set: (the file, ``$ASGID_...`` or "command line"; the line in the file).
Origin = tuple[str, int | None]


def load_config(
    path: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read ``path`` (if any), apply environment and ``overrides``, validate."""
    return load_config_with_origins(path, overrides, environ)[0]


def load_config_with_origins(
    path: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Config, dict[str, Origin]]:
    """``load_config``, and where each value that is not a default was set."""
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}  # where each value that is not a default came from
    env = os.environ if environ is None else environ
    concurrency = env.get("WEB_CONCURRENCY", "").strip()
    if concurrency:
        info = SETTINGS["workers.count"]
        try:
            values[info.path] = _check(info, info.meta.kind.from_text(concurrency))
        except ValueError as exc:
            raise ConfigError(str(exc), source="$WEB_CONCURRENCY", key=info.path) from None
        origins[info.path] = ("$WEB_CONCURRENCY", None)
    if path:
        values.update(_read_toml(path, origins))
    values.update(_read_environ(env, origins))
    for key, value in (overrides or {}).items():
        if isinstance(value, list):
            value = tuple(value)  # a frozen config holds tuples, as the schema says
        values[key] = _check(SETTINGS[key], value, source="command line")
        origins[key] = ("command line", None)
    config = _build(values)
    validate(config, source=path or "command line", origins=origins)
    return config, origins


def _read_toml(path: str, origins: dict[str, Origin] | None = None) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", source=path) from None
    text = raw.decode("utf-8", "replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        if match:
            bad_line = int(match.group(1))
            message = f"{str(exc)[: match.start()].rstrip()} at column {match.group(2)}"
        else:  # "(at end of document)": blame the statement left open, not the last line
            bad_line = _last_statement(text)
            message = re.sub(r"\s*\(at end of document\)", " at the end of the file", str(exc))
        raise ConfigError(
            f"invalid TOML: {message}", source=path, key=_key_at(text, bad_line), line=bad_line
        ) from None

    values: dict[str, Any] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            hint = _suggest(section, SECTIONS) or f"; expected one of {', '.join(SECTIONS)}"
            raise ConfigError(
                f"unknown section{hint}",
                source=path,
                key=section,
                line=_find_line(text, section, None) or _find_line(text, None, section),
            )
        if not isinstance(table, dict):
            raise ConfigError(
                f"expected a table [{section}]",
                source=path,
                key=section,
                line=_find_line(text, None, section),
            )
        for key, value in table.items():
            dotted = f"{section}.{key}"
            line = _find_line(text, section, key)
            info = SETTINGS.get(dotted)
            if info is None:
                known = [f.name for f in dataclasses.fields(SECTIONS[section])]
                hint = _suggest(key, known)
                if key in SECTIONS and not hint:
                    hint = f" (did you mean the [{key}] table?)"
                raise ConfigError(
                    f"unknown setting{hint}",
                    source=path,
                    key=dotted,
                    line=line,
                )
            try:
                values[dotted] = _check(info, info.meta.kind.from_toml(value))
            except ValueError as exc:
                raise ConfigError(str(exc), source=path, key=dotted, line=line) from None
            if origins is not None:
                origins[dotted] = (path, line)
    return values


def _read_environ(
    environ: Mapping[str, str], origins: dict[str, Origin] | None = None
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        dotted = name[len(ENV_PREFIX) :].lower().replace("_", ".", 1)
        info = SETTINGS.get(dotted)
        if info is None:
            continue  # ASGID_* variables that are not settings belong to someone else
        try:
            values[dotted] = _check(info, info.meta.kind.from_text(text))
        except ValueError as exc:
            raise ConfigError(str(exc), source=f"${name}", key=dotted) from None
        if origins is not None:
            origins[dotted] = (f"${name}", None)
    return values


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each ``ASGID_*`` variable that names no setting (a typo, usually)."""
    environ = os.environ if environ is None else environ
    names = {ENV_PREFIX + path.upper().replace(".", "_", 1) for path in SETTINGS}
    return [
        f"${name} is not an asgid setting, ignored{_suggest(name, names)}"
        for name in sorted(environ)
        if name.startswith(ENV_PREFIX) and name not in names
    ]


def _check(info: SettingInfo, value: Any, source: str = "") -> Any:
    meta = info.meta
    if meta.choices and value not in meta.choices:
        message = f"expected one of {', '.join(meta.choices)}, got {value!r}"
    elif meta.minimum is not None and value < meta.minimum:
        message = f"expected a value >= {meta.minimum:g}, got {value!r}"
    else:
        return value
    if source:
        raise ConfigError(message, source=source, key=info.path)
    raise ValueError(message)


def _build(values: Mapping[str, Any]) -> Config:
    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        fields = {
            key.partition(".")[2]: value
            for key, value in values.items()
            if key.partition(".")[0] == section
        }
        sections[section] = cls(**fields)
    return Config(**sections)


def validate(config: Config, *, source: str, origins: Mapping[str, Origin] | None = None) -> None:
    """Checks that need more than one value, or more than the value's kind.

    ``origins`` maps a key to where its value was set (file and line, an
    environment variable, the command line); other keys are blamed on ``source``.
    """

    def fail(key: str, message: str) -> None:
        where, line = (origins or {}).get(key, (source, None))
        raise ConfigError(message, source=where, key=key, line=line)

    if not config.app.target:
        fail("app.target", "no application given: expected `module:attribute`")
    module, _, attr = config.app.target.partition(":")
    if not module or not attr:
        fail("app.target", f"expected `module:attribute`, got {config.app.target!r}")
    if config.websocket.deflate_window_bits > 15:
        fail("websocket.deflate_window_bits", "expected 9 to 15")
    if config.websocket.deflate_mem_level > 9:
        fail("websocket.deflate_mem_level", "expected 1 to 9")
    if config.app.interface == "wsgi":
        fail(
            "app.interface",
            "asgid serves ASGI applications; serve a WSGI app through an adapter "
            "(a2wsgi's WSGIMiddleware, or your framework's)",
        )
    if not config.server.bind:
        fail("server.bind", "expected at least one address")
    for address in config.server.bind:
        try:
            parse_bind(address)
        except ValueError as exc:
            fail("server.bind", str(exc))
    try:
        int(config.server.uds_mode, 8)
    except ValueError:
        fail("server.uds_mode", f"expected octal permission bits, got {config.server.uds_mode!r}")
    if config.server.ssl_keyfile and not config.server.ssl_certfile:
        fail("server.ssl_keyfile", "ssl_keyfile is set but ssl_certfile is not")
    if config.server.ssl_cert_reqs > 2:
        fail("server.ssl_cert_reqs", "expected 0, 1 or 2")
    for entry in config.http.forwarded_allow_ips:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            fail("http.forwarded_allow_ips", f"expected an IP, a CIDR or '*', got {entry!r}")
    try:
        check_access_format(config.logging.access_format)
    except ValueError as exc:
        fail("logging.access_format", str(exc))
    if config.process.umask:
        try:
            int(config.process.umask, 8)
        except ValueError:
            fail("process.umask", f"expected octal bits, got {config.process.umask!r}")
    if config.metrics.bind:
        try:
            parse_bind(config.metrics.bind)
        except ValueError as exc:
            fail("metrics.bind", str(exc))


@dataclasses.dataclass(frozen=True, slots=True)
class BindAddress:
    """One parsed listener address: exactly one of the families is set."""

    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        if self.fd >= 0:
            return f"fd://{self.fd}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_bind(address: str) -> BindAddress:
    """``host:port``, ``[v6]:port``, ``unix:/path`` or ``fd://N``."""
    if address.startswith("unix:"):
        path = address[5:]
        if not path:
            raise ValueError(f"expected unix:/path/to.sock, got {address!r}")
        return BindAddress(path=path)
    if address.startswith("fd://"):
        try:
            fd = int(address[5:])
        except ValueError:
            raise ValueError(f"expected fd://N with a descriptor number, got {address!r}") from None
        return BindAddress(fd=fd)
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected host:port, [ipv6]:port, unix:PATH or fd://N, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"IPv6 addresses need brackets, e.g. [::1]:8000, got {address!r}")
    return BindAddress(host=host or "0.0.0.0", port=int(port_text))


def _suggest(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _find_line(text: str, section: str | None, key: str | None) -> int | None:
    """The line where ``[section]`` or ``key`` within ``[section]`` is written."""
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([^\]\s]+)\s*\]", stripped)
        if header:
            current = header.group(1)
            if key is None and current == section:
                return number
            if key is not None and current.split(".")[:2] == [section, key]:
                return number  # [section.key] or [section.key.more]
            continue
        if key is None:
            continue
        match = re.match(r'^"?([A-Za-z0-9_.-]+)"?\s*=', stripped)
        if not match:
            continue
        name = match.group(1)
        if section is None and current == "" and name.split(".")[0] == key:
            return number
        if current == section and name.split(".")[0] == key:
            return number
        if current == "" and name.split(".")[:2] == [section, key]:
            return number
    return None


def _key_at(text: str, line: int) -> str:
    """The key path written on ``line`` (1-based), or the table it is in."""
    current = ""
    for number, content in enumerate(text.splitlines(), 1):
        stripped = content.strip()
        header = re.match(r"^\[\s*([^\]\s]+)\s*\]", stripped)
        if number == line:
            if header:
                return header.group(1)
            if stripped.startswith("["):  # a broken table header: name what it declares
                broken = re.match(r"^\[+\s*([A-Za-z0-9_.-]+)", stripped)
                return broken.group(1) if broken else ""
            match = re.match(r'^"?([A-Za-z0-9_.-]+)"?\s*=', stripped)
            if match:
                return f"{current}.{match.group(1)}" if current else match.group(1)
            return current
        if header:
            current = header.group(1)
    return current


def _last_statement(text: str) -> int:
    """The line of the last key or table header: where an unclosed value begins."""
    last = 1
    for number, content in enumerate(text.splitlines(), 1):
        if re.match(r'^\s*(\[|"?[A-Za-z0-9_.-]+"?\s*=)', content):
            last = number
    return last


def keyword_names() -> dict[str, str]:
    """Keyword argument names for ``asgid.run()``: each long CLI flag, snake_cased."""
    names: dict[str, str] = {}
    for info in SETTINGS.values():
        for flag in info.meta.flags:
            if flag.startswith("--"):
                names.setdefault(flag[2:].replace("-", "_"), info.path)
    for name, path in _uvicorn.KEYWORDS.items():
        names.setdefault(name, path)
    return names


def overrides_from_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``asgid.run(..., port=8001, workers=2)`` keywords into overrides."""
    names = keyword_names()
    values = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in kwargs.items()}
    for name in [name for name in values if name in _uvicorn.OPTION_NAMES]:
        values.pop(name)  # the caller warns (_uvicorn.warnings)
    uvicorn = {k: values.pop(k) for k in _uvicorn.BIND_NAMES if k in values}
    overrides: dict[str, Any] = {}
    if uvicorn:
        overrides["server.bind"] = bind_from_uvicorn(**uvicorn)
    for name, value in values.items():
        path = name if name in SETTINGS else names.get(name)
        if path is None:
            hint = _suggest(name, [*names, *_uvicorn.BIND_NAMES, *_uvicorn.OPTION_NAMES])
            raise ConfigError(f"unknown setting {name!r}{hint}", source="run()")
        info = SETTINGS[path]
        if isinstance(value, (list, tuple)):  # TOML has lists where Python has tuples
            value = [
                list(v)
                if isinstance(v, tuple)
                else os.fspath(v)
                if isinstance(v, os.PathLike)
                else v
                for v in value
            ]
        try:
            overrides[path] = info.meta.kind.from_toml(value)
        except ValueError as exc:
            raise ConfigError(str(exc), source="run()", key=path) from None
    return overrides
