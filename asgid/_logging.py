"""Logging setup: levels (with ``trace``), text or JSON lines, or the user's config.

Loggers: ``asgid.error`` for everything about the server and ``asgid.access``
for one line per request. Every line carries the process id and, in workers,
the slot, so lines from many workers can be told apart.

A user's logging config (a dictConfig as JSON, TOML, YAML or a dict from
``asgid.run(log_config=...)``, or an INI ``fileConfig``) replaces asgid's
setup. One written for uvicorn configures ``uvicorn.error`` and
``uvicorn.access``: asgid's lines then go to those loggers (and their
handlers and formatters, uvicorn's own included), unless the config names
asgid's loggers too.
"""

from __future__ import annotations

import configparser
import json
import logging
import logging.config
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

from .config import ConfigError, LoggingSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

TEXT_FORMAT = "%(asctime)s [%(process)d] [%(role)s] %(levelname)s %(message)s"

# Set by the process that owns this interpreter ("master", "worker 3", "main").
_role = "main"


def set_role(role: str) -> None:
    global _role
    _role = role


class _RoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.role = _role
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the record's fields and any ``extra``."""

    _skip = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "role"}

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "role": getattr(record, "role", _role),
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._skip:
                data[key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure(settings: LoggingSettings, *, config: Mapping[str, Any] | None = None) -> None:
    """Install asgid's handlers, or the user's logging config instead.

    ``config`` is a dictConfig mapping given in code (``log_config={...}``);
    otherwise ``settings.config`` names a file.
    """
    if config is not None or settings.config:
        if config is not None:
            named = _dict_config(dict(config), source="log_config")
        elif settings.config.endswith((".ini", ".cfg", ".conf")):
            named = _file_config(settings.config)
        else:
            named = _dict_config(_read_dict_config(settings.config), source=settings.config)
        _forward_to_uvicorn_loggers(named)
        return
    level = TRACE if settings.level == "trace" else getattr(logging, settings.level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RoleFilter())
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    for name in ("asgid.error", "asgid.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    logging.getLogger("asgid.access").disabled = not settings.access_log


def _dict_config(data: dict[str, Any], *, source: str) -> set[str]:
    """Apply a dictConfig; the logger names it configures."""
    data.setdefault("version", 1)
    data.setdefault("disable_existing_loggers", False)
    try:
        logging.config.dictConfig(data)
    except (ValueError, TypeError, AttributeError, ImportError) as exc:
        # dictConfig wraps most problems in ValueError("Unable to configure ...")
        raise ConfigError(
            f"invalid logging config: {exc}", source=source, key="logging.config"
        ) from None
    loggers = data.get("loggers")
    return set(loggers) if isinstance(loggers, dict) else set()


def _file_config(path: str) -> set[str]:
    """Apply an INI logging config (``logging.config.fileConfig``); the loggers it names."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
        logging.config.fileConfig(parser, disable_existing_loggers=False)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the logging config: {exc.strerror}", source=path, key="logging.config"
        ) from None
    except (configparser.Error, KeyError, ValueError, TypeError, ImportError) as exc:
        detail = f"missing section {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ConfigError(
            f"invalid logging config: {detail}", source=path, key="logging.config"
        ) from None
    return {
        parser.get(f"logger_{key.strip()}", "qualname", fallback=key.strip())
        for key in parser.get("loggers", "keys", fallback="").split(",")
        if key.strip()
    }


# asgid's logger -> the uvicorn loggers a config written for uvicorn has, in order.
_UVICORN_NAMES = {
    "asgid.error": ("uvicorn.error", "uvicorn"),
    "asgid.access": ("uvicorn.access",),
}


def _forward_to_uvicorn_loggers(named: set[str]) -> None:
    for ours, theirs in _UVICORN_NAMES.items():
        target = next((name for name in theirs if name in named), None)
        if ours in named or target is None:
            continue
        logger = logging.getLogger(ours)
        destination = logging.getLogger(target)
        handler = _Forward(destination, access=ours == "asgid.access")
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.disabled = destination.disabled
        logger.setLevel(destination.getEffectiveLevel())


class _Forward(logging.Handler):
    """Hands asgid's records to a uvicorn logger (its handlers and formatters).

    Access records are given uvicorn's layout, so that its ``AccessFormatter``
    (which reads ``args``) formats them as it would its own.
    """

    def __init__(self, destination: logging.Logger, *, access: bool) -> None:
        super().__init__()
        self.destination = destination
        self.access = access

    def emit(self, record: logging.LogRecord) -> None:
        if self.access and hasattr(record, "method"):
            fields = vars(record)
            record = logging.makeLogRecord(fields)
            record.msg = '%s - "%s %s HTTP/%s" %d'
            record.args = (
                fields["client"],
                fields["method"],
                fields["path"] + fields["query"],
                fields["http_version"],
                fields["status"],
            )
        record.name = self.destination.name
        self.destination.handle(record)


def _read_dict_config(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if path.endswith(".toml"):
            data = tomllib.loads(raw.decode("utf-8"))
        elif path.endswith((".yaml", ".yml")):
            data = _load_yaml(raw, path)
        else:
            data = json.loads(raw)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the logging config: {exc.strerror}", source=path, key="logging.config"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"invalid JSON: {exc.msg} at column {exc.colno}",
            source=path,
            key="logging.config",
            line=exc.lineno,
        ) from None
    except (ValueError, tomllib.TOMLDecodeError) as exc:  # TOML, or bytes that are not UTF-8
        match = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        detail = re.sub(r"\s*\(at [^)]*\)", "", str(exc))
        raise ConfigError(
            f"invalid logging config: {detail}",
            source=path,
            key="logging.config",
            line=int(match.group(1)) if match else None,
        ) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a dictConfig mapping", source=path, key="logging.config")
    return data


def _load_yaml(raw: bytes, path: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            "a YAML logging config needs PyYAML: pip install 'asgid[yaml]' (or PyYAML)",
            source=path,
            key="logging.config",
        ) from None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
            source=path,
            key="logging.config",
            line=mark.line + 1 if mark is not None else None,
        ) from None


def reopen_files() -> None:
    """SIGUSR1: reopen every file a logging handler writes to (after logrotate)."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.FileHandler):
                try:
                    stream = handler._open()
                except OSError as exc:
                    # A worker running as [process].user may not open a file the
                    # rotation created for root: keep writing to the old one.
                    logging.getLogger("asgid.error").warning(
                        "cannot reopen log file %s (%s); still writing to the old file",
                        handler.baseFilename,
                        exc,
                    )
                    continue
                handler.acquire()
                try:
                    old = handler.stream
                    handler.stream = stream
                    if old is not None:
                        old.close()
                finally:
                    handler.release()
