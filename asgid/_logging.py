"""Logging setup: levels (with ``trace``), text or JSON lines, dictConfig files.

Loggers: ``asgid.error`` for everything about the server and ``asgid.access``
for one line per request. Every line carries the process id and, in workers,
the slot, so lines from many workers can be told apart.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import sys
import time
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


def configure(settings: LoggingSettings) -> None:
    """Install asgid's handlers, or the user's dictConfig file instead."""
    if settings.config:
        try:
            logging.config.dictConfig(_read_dict_config(settings.config))
        except (ValueError, TypeError, AttributeError, ImportError) as exc:
            # dictConfig wraps most problems in ValueError("Unable to configure ...")
            raise ConfigError(
                f"invalid logging config: {exc}", source=settings.config, key="logging.config"
            ) from None
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


def _read_dict_config(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
        data = tomllib.loads(raw.decode("utf-8")) if path.endswith(".toml") else json.loads(raw)
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
    data.setdefault("version", 1)
    data.setdefault("disable_existing_loggers", False)
    return data


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
