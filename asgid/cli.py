"""The command line: flags from the settings schema, errors to exit codes.

This is the only module that turns exceptions into exit statuses (``ExitCode``).
``asgid ctl ...`` (a first argument that is exactly ``ctl``) goes to the control
client in ``_ctl``; anything else, ``asgid ctl:app`` included, serves an app.
"""

from __future__ import annotations

import argparse
import enum
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from . import _logging
from ._exceptions import AppLoadError, BootError, ControlError, LifespanFailure
from ._version import __version__, build
from .config import Config, ConfigError, iter_settings
from .config import _uvicorn as uvicorn_options
from .config._load import load_config_with_origins, unknown_environment
from .config._uvicorn import bind_from_uvicorn
from .supervisor import Master, preflight


class ExitCode(enum.IntEnum):
    OK = 0  # stopped cleanly
    ERROR = 1  # unexpected error (cannot bind, ...)
    CONFIG = 2  # bad usage or configuration
    BOOT = 3  # a worker failed to boot (TLS files, user switch, lifespan startup)
    APP_LOAD = 4  # the application could not be imported


logger = logging.getLogger("asgid.error")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


# Booleans that uvicorn takes with a value (``--ws-per-message-deflate false``);
# asgid takes them with or without one. Every other boolean is a bare flag
# with a ``--no-`` twin, so that ``--reload main:app`` reads as uvicorn's does.
VALUE_BOOLEANS = frozenset({"--ws-per-message-deflate"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asgid",
        description="A process manager with embedded ASGI workers.",
        epilog="Exit status: 0 ok, 1 error, 2 bad configuration, "
        "3 worker boot failed, 4 app import failed. "
        "A running server: asgid ctl --help (status, reload, scale, recycle, stop, config).",
        allow_abbrev=False,  # --pid must not quietly mean --pidfile
    )
    parser.add_argument("app", nargs="?", metavar="APP", help="the ASGI app as module:attribute")
    parser.add_argument("-c", "--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="check the configuration as a start would (users, TLS files, logging, the app), "
        "then exit",
    )
    parser.add_argument(
        "--version", action="version", version=f"asgid {__version__} ({build()} hot path)"
    )
    uvicorn = parser.add_argument_group("uvicorn-compatible listener flags")
    uvicorn.add_argument("--host", help="bind to this host (with --port; default 127.0.0.1)")
    uvicorn.add_argument("--port", type=int, help="bind to this port (with --host; default 8000)")
    uvicorn.add_argument("--uds", help="bind to this Unix socket path")
    uvicorn.add_argument("--fd", type=int, help="serve on this inherited file descriptor")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for info in iter_settings():
        meta = info.meta
        if not meta.flags:
            continue
        group = groups.get(info.section)
        if group is None:
            group = groups[info.section] = parser.add_argument_group(f"[{info.section}]")
        help_text = _help(meta.help, info.default, meta.choices)
        if meta.kind.name == "boolean":
            if any(flag in VALUE_BOOLEANS for flag in meta.flags):
                group.add_argument(
                    *meta.flags,
                    dest=info.path,
                    nargs="?",
                    const="true",
                    metavar="BOOL",
                    help=help_text,
                )
            else:
                group.add_argument(
                    *meta.flags,
                    dest=info.path,
                    action="store_const",
                    const="true",
                    help=help_text,
                )
            negated = ["--no-" + f[2:] for f in meta.flags if f.startswith("--")]
            group.add_argument(
                *negated,
                dest=info.path,
                action="store_const",
                const="false",
                help=argparse.SUPPRESS,
            )
        else:
            group.add_argument(
                *meta.flags,
                dest=info.path,
                action="append" if meta.kind.repeatable else "store",
                metavar=info.key.upper(),
                choices=meta.choices or None,
                help=help_text,
            )
    compat = parser.add_argument_group(
        "uvicorn options asgid serves its own way (accepted; a warning says how it differs)"
    )
    for option in uvicorn_options.OPTIONS:
        flag = "--" + option.name.replace("_", "-")
        if option.takes_value:
            compat.add_argument(
                flag,
                dest=f"uvicorn.{option.name}",
                choices=option.choices or None,
                metavar=option.name.upper() if not option.choices else None,
            )
        else:
            compat.add_argument(flag, dest=f"uvicorn.{option.name}", action="store_const", const="")
            compat.add_argument(
                f"--no-{flag[2:]}",
                dest=f"uvicorn.{option.name}",
                action="store_const",
                const="false",
                help=argparse.SUPPRESS,
            )
    return parser


def _help(text: str, default: object, choices: tuple[str, ...]) -> str:
    """A setting's help for --help: its text, choices and default."""
    text = text.replace("%", "%%")
    if choices:
        text += f" [choices: {', '.join(choices)}]"
    if isinstance(default, tuple):
        default = ", ".join(map(str, default)) if default else ""
    if default not in ("", None):
        text += f" [default: {str(default).lower() if isinstance(default, bool) else default}]"
    return text


def uvicorn_option_warnings(args: argparse.Namespace) -> list[str]:
    given = {name: getattr(args, f"uvicorn.{name}", None) for name in uvicorn_options.OPTION_NAMES}
    return uvicorn_options.warnings({k: v for k, v in given.items() if v is not None})


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    values = vars(args)
    overrides: dict[str, Any] = {}
    for info in iter_settings():
        raw = values.get(info.path)
        if raw is None:
            continue
        kind = info.meta.kind
        try:
            if kind.repeatable:
                items: list[Any] = []
                for text in raw:
                    items.extend(kind.from_text(text))
                overrides[info.path] = tuple(items)
            else:
                overrides[info.path] = kind.from_text(raw)
        except ValueError as exc:
            raise ConfigError(str(exc), source="command line", key=info.path) from None
    uvicorn_bind = bind_from_uvicorn(args.host, args.port, args.uds, args.fd)
    if uvicorn_bind:
        overrides["server.bind"] = overrides.get("server.bind", ()) + uvicorn_bind
    if args.app:
        overrides["app.target"] = args.app
    return overrides


# What each kind of ``asgid ctl`` failure exits with: a reload's failure says
# why, as a start's would.
CONTROL_EXIT = {
    "config": ExitCode.CONFIG,
    "bad_request": ExitCode.CONFIG,
    "boot": ExitCode.BOOT,
    "app_load": ExitCode.APP_LOAD,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ctl"]:
        return ctl(argv[1:])  # a client: it runs no master and handles no stop signal
    if os.getpid() == 1:
        # PID 1 ignores a signal it has no handler for: a `docker stop` during
        # startup would be lost. Held pending until the master handles them.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    args = build_parser().parse_args(argv)
    for warning in [*unknown_environment(), *uvicorn_option_warnings(args)]:
        print(f"asgid: warning: {warning}", file=sys.stderr)
    try:
        overrides = overrides_from_args(args)
        config, origins = load_config_with_origins(args.config, overrides)
        _logging.configure(config.logging)
    except ConfigError as exc:
        print(f"asgid: error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    try:
        if args.check_config:
            from .worker import load_app

            preflight(config)
            load_app(config.app)
            print(f"asgid: {args.config or 'configuration'} is valid; {config.app.target} imported")
            return ExitCode.OK
        return _serve(config, args.config, overrides, origins)
    except ConfigError as exc:
        print(f"asgid: error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    except AppLoadError as exc:
        print(f"asgid: error: {exc}", file=sys.stderr)
        return ExitCode.APP_LOAD
    except LifespanFailure as exc:
        print(f"asgid: error: application startup failed: {exc}", file=sys.stderr)
        return ExitCode.BOOT
    except BootError as exc:
        print(f"asgid: error: {exc}", file=sys.stderr)
        return ExitCode.BOOT
    except OSError as exc:
        print(f"asgid: error: {exc}", file=sys.stderr)
        return ExitCode.ERROR


def _serve(
    config: Config,
    config_path: str | None,
    overrides: dict[str, Any],
    origins: dict[str, Any],
) -> ExitCode:
    """Run the master, which forks and supervises the workers."""
    Master(config, config_path=config_path, overrides=overrides, origins=origins).run()
    return ExitCode.OK


def ctl(argv: Sequence[str]) -> int:
    """``asgid ctl ...``: one command to a running master."""
    from . import _ctl

    try:
        _ctl.main(argv)
    except ControlError as exc:
        print(f"asgid ctl: error: {exc}", file=sys.stderr)
        return CONTROL_EXIT.get(exc.kind, ExitCode.ERROR)
    except BrokenPipeError:
        return ExitCode.ERROR
    return ExitCode.OK
