"""Find the user's application: env file, import, factory, ASGI 2 adaptation.

Every failure is an ``AppLoadError`` whose message names what was not found
(the module, the attribute, the file) and, for an exception raised by the
user's own module, shows the user's traceback without asgid's frames.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import traceback
from collections.abc import Mapping
from typing import Any

from .._exceptions import AppLoadError
from ..config import AppSettings
from ._types import ASGIApp, Receive, Scope, Send


def load_env_file(path: str) -> None:
    """Set the variables of a dotenv file, as uvicorn (python-dotenv) does.

    Variables already in the environment win: the file only fills in the
    others.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise AppLoadError(f"cannot read env_file {path!r}: {exc.strerror}") from None
    try:
        values = parse_env(text, os.environ)
    except ValueError as exc:
        raise AppLoadError(f"{path}:{exc}") from None
    for key, value in values.items():
        os.environ.setdefault(key, value)


_ENV_LINE = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*(=)?[ \t]*")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "$": "$", "0": "\0"}


def parse_env(text: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of a dotenv file's ``text`` (python-dotenv's syntax).

    ``KEY=value``, ``export KEY=value``, ``# comments``; unquoted values end
    at `` #``; 'single quotes' are literal; "double quotes" take escapes
    (``\\n``, ``\\t``, ``\\"``...) and may span lines. ``${VAR}`` and
    ``${VAR:-default}`` in unquoted and double-quoted values expand from the
    environment first, then from the file's earlier lines. A key without
    ``=`` sets nothing. A bad line raises ``ValueError("LINE: reason")``.
    """
    values: dict[str, str] = {}
    position, line = 0, 1

    def expand(value: str) -> str:
        def one(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = environ.get(name, values.get(name))
            return found if found else (default or "")

        return _VARIABLE.sub(one, value)

    while position < len(text):
        end = text.find("\n", position)
        end = len(text) if end < 0 else end
        raw = text[position:end]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            position, line = end + 1, line + 1
            continue
        match = _ENV_LINE.match(text, position, end)
        if match is None:
            raise ValueError(f"{line}: expected KEY=value, got {stripped!r}")
        key = match.group(1)
        start = match.end()
        if not match.group(2):
            if text[start:end].strip():
                raise ValueError(f"{line}: expected KEY=value, got {stripped!r}")
            position, line = end + 1, line + 1
            continue
        quote = text[start : start + 1]
        if quote in ("'", '"'):
            close = start + 1
            while True:
                close = text.find(quote, close)
                if close < 0:
                    raise ValueError(f"{line}: {key}: the {quote} quote is never closed")
                if quote == '"' and _escaped(text, close):
                    close += 1
                    continue
                break
            body = text[start + 1 : close]
            value = body if quote == "'" else expand(_unescape(body))
            rest_end = text.find("\n", close)
            rest_end = len(text) if rest_end < 0 else rest_end
            rest = text[close + 1 : rest_end].strip()
            if rest and not rest.startswith("#"):
                raise ValueError(f"{line}: {key}: unexpected text after the closing quote")
            line += text.count("\n", position, rest_end) + 1
            position = rest_end + 1
        else:
            value = expand(re.split(r"[ \t]+#", text[start:end], maxsplit=1)[0].strip())
            position, line = end + 1, line + 1
        values[key] = value
    return values


def _escaped(text: str, index: int) -> bool:
    backslashes = 0
    while index - backslashes - 1 >= 0 and text[index - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), body)


def import_target(target: str) -> Any:
    module_name, _, attrs = target.partition(":")
    if not module_name or not attrs:
        raise AppLoadError(f"expected the app as 'module:attribute', got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if (
            exc.name
            and module_name.startswith(exc.name)
            and (exc.name == module_name or module_name.startswith(exc.name + "."))
        ):
            raise AppLoadError(f"could not import module {module_name!r}") from None
        raise AppLoadError(_user_traceback(exc, f"error while importing {module_name!r}")) from None
    except Exception as exc:
        raise AppLoadError(_user_traceback(exc, f"error while importing {module_name!r}")) from None
    obj: Any = module
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise AppLoadError(f"attribute {attrs!r} not found in module {module_name!r}") from None
    return obj


def load_app(settings: AppSettings) -> ASGIApp:
    """Import ``settings.target`` and return an ASGI 3 callable."""
    if settings.env_file:
        load_env_file(settings.env_file)
    app_dir = os.path.abspath(settings.app_dir)
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    app = import_target(settings.target)
    if settings.factory:
        if not callable(app):
            raise AppLoadError(f"factory {settings.target!r} is not callable")
        try:
            app = app()
        except Exception as exc:
            raise AppLoadError(
                _user_traceback(exc, f"error calling factory {settings.target!r}")
            ) from None
    if not callable(app):
        raise AppLoadError(f"{settings.target!r} is not callable (got {type(app).__name__})")
    interface = settings.interface
    if interface == "auto":
        interface = "asgi2" if is_asgi2(app) else "asgi3"
    if interface == "asgi2":
        return ASGI2Adapter(app)
    return app  # type: ignore[no-any-return]


def is_asgi2(app: Any) -> bool:
    """ASGI 2 apps take only the scope and return a callable for ``(receive, send)``.

    A plain function that returns a coroutine takes three arguments and is ASGI 3.
    """
    if inspect.isclass(app):
        return not hasattr(app, "__await__")
    is_plain = inspect.isfunction(app) or inspect.ismethod(app)
    call = app if is_plain else type(app).__call__
    try:
        params = inspect.signature(call).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    return len(positional) == 1 and not varargs


class ASGI2Adapter:
    """Runs an ASGI 2 app (``app(scope)(receive, send)``) as ASGI 3."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance = self.app(scope)
        await instance(receive, send)


def _user_traceback(exc: BaseException, headline: str) -> str:
    """The traceback of an exception raised by user code, without asgid's frames."""
    tb = exc.__traceback__
    while tb is not None and _is_internal(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    return f"{headline}:\n{''.join(lines).rstrip()}"


_IMPORTLIB_DIR = os.path.dirname(importlib.__file__) + os.sep


def _is_internal(filename: str) -> bool:
    return (
        filename.startswith(os.path.dirname(os.path.dirname(__file__)))
        or filename.startswith(_IMPORTLIB_DIR)  # importlib.import_module()
        or filename.startswith("<frozen importlib.")
    )
