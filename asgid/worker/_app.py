"""Find the user's application: env file, import, factory, ASGI 2 adaptation.

Every failure is an ``AppLoadError`` whose message names what was not found
(the module, the attribute, the file) and, for an exception raised by the
user's own module, shows the user's traceback without asgid's frames.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from typing import Any

from .._exceptions import AppLoadError
from ..config import AppSettings
from ._types import ASGIApp, Receive, Scope, Send


def load_env_file(path: str) -> None:
    """Set the variables of a dotenv-style file (``KEY=value`` lines)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise AppLoadError(f"cannot read env_file {path!r}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise AppLoadError(f"{path}:{number}: expected KEY=value, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        os.environ[key] = value


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
