"""The command line: flags from the settings schema, errors to exit codes.

This is the only module that turns exceptions into exit statuses:

    0  stopped cleanly
    1  unexpected error
    2  bad usage or configuration
    3  a worker failed to boot (lifespan startup failed)
    4  the application could not be imported
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from . import _logging
from ._exceptions import AppLoadError, LifespanFailure
from ._version import __version__
from .config import Config, ConfigError, iter_settings, load_config
from .config._load import bind_from_uvicorn, unknown_environment
from .supervisor import Master

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_BOOT = 3
EXIT_APP_LOAD = 4

logger = logging.getLogger("asgid.error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asgid",
        description="A process manager with embedded ASGI workers.",
        epilog="Exit status: 0 ok, 1 error, 2 bad configuration, "
        "3 worker boot failed, 4 app import failed.",
    )
    parser.add_argument("app", nargs="?", metavar="APP", help="the ASGI app as module:attribute")
    parser.add_argument("-c", "--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration and import the app, then exit",
    )
    parser.add_argument("--version", action="version", version=f"asgid {__version__}")
    uvicorn = parser.add_argument_group("uvicorn-compatible listener flags")
    uvicorn.add_argument("--host", help="bind to this host (with --port)")
    uvicorn.add_argument("--port", type=int, help="bind to this port (with --host)")
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
        help_text = meta.help.replace("%", "%%")
        if meta.kind.name == "boolean":
            group.add_argument(
                *meta.flags, dest=info.path, action="store_const", const="true", help=help_text
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
    # uvicorn flags asgid accepts for compatibility and ignores: it always runs
    # uvloop + httptools + websockets, negotiates the newest TLS version and never colours logs.
    parser.add_argument("--loop", choices=("auto", "uvloop"), help=argparse.SUPPRESS)
    parser.add_argument("--http", choices=("auto", "httptools"), help=argparse.SUPPRESS)
    parser.add_argument("--ws", choices=("auto", "websockets"), help=argparse.SUPPRESS)
    parser.add_argument("--ssl-version", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--use-colors", "--no-use-colors", action="store_true", help=argparse.SUPPRESS
    )
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for warning in unknown_environment():
        print(f"asgid: warning: {warning}", file=sys.stderr)
    try:
        overrides = overrides_from_args(args)
        config = load_config(args.config, overrides)
        _logging.configure(config.logging)
    except ConfigError as exc:
        print(f"asgid: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.check_config:
            from .worker import load_app

            load_app(config.app)
            print(f"asgid: {args.config or 'configuration'} is valid; {config.app.target} imported")
            return EXIT_OK
        return _serve(config, args.config, overrides)
    except AppLoadError as exc:
        print(f"asgid: error: {exc}", file=sys.stderr)
        return EXIT_APP_LOAD
    except LifespanFailure as exc:
        print(f"asgid: error: application startup failed: {exc}", file=sys.stderr)
        return EXIT_BOOT
    except OSError as exc:
        print(f"asgid: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _serve(config: Config, config_path: str | None, overrides: dict[str, Any]) -> int:
    """Run the master, which forks and supervises the workers."""
    return Master(config, config_path=config_path, overrides=overrides).run()
