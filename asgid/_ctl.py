"""``asgid ctl``: the client of a running master's control socket.

Finds the socket (``--socket``, ``-c FILE``'s ``[control].socket`` or its
``auto`` path, ``$ASGID_CONTROL_SOCKET``), sends one JSON request, prints the
answer for a person (or as JSON with ``--json``) and raises ``ControlError``
when the master refuses or fails the command; ``cli`` maps that to an exit
status. It never imports the master, and reads the config file only for the
socket's path, so a config file broken by an edit still finds it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from . import _runtime
from ._exceptions import ControlError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_SOCKET = "ASGID_CONTROL_SOCKET"
ANSWER_TIMEOUT = 15.0  # seconds to wait for an answer (a reload --wait adds its own)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asgid ctl",
        description="Ask a running asgid master over its control socket.",
        epilog="Exit status: 0 ok, 1 error (unreachable, refused, timed out), 2 bad usage "
        "or a reload's configuration error, 3 a reload's workers failed to boot, "
        "4 a reload's app failed to import.",
        allow_abbrev=False,
    )
    # The common options go before or after the command (`asgid ctl status --json`).
    parser.add_argument("-c", "--config", metavar="FILE", help="the server's TOML config file")
    parser.add_argument("--socket", metavar="PATH", help="the control socket (overrides -c)")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    sub = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    sub.add_argument("-c", "--config", metavar="FILE", help=argparse.SUPPRESS)
    sub.add_argument("--socket", metavar="PATH", help=argparse.SUPPRESS)
    sub.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    status = commands.add_parser("status", help="the master and its workers", parents=[sub])
    status.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=float,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until interrupted",
    )
    reload = commands.add_parser(
        "reload", help="rolling reload: new workers before old", parents=[sub]
    )
    reload.add_argument(
        "--wait",
        action="store_true",
        help="return once the new generation serves (exit 0) or the reload failed",
    )
    reload.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="with --wait: give up after S seconds (default 120)",
    )
    scale = commands.add_parser("scale", help="set the worker count: N, +K or -K", parents=[sub])
    scale.add_argument("count", metavar="N|+K|-K")
    recycle = commands.add_parser(
        "recycle", help="replace one worker, new before old", parents=[sub]
    )
    recycle.add_argument("target", metavar="SLOT|PID", type=int)
    stop = commands.add_parser("stop", help="stop the server (gracefully)", parents=[sub])
    stop.add_argument("--now", action="store_true", help="stop quickly (as SIGQUIT)")
    commands.add_parser(
        "config", help="the effective configuration as TOML, with origins", parents=[sub]
    )
    return parser


def main(argv: Sequence[str], out: TextIO = sys.stdout) -> None:
    """Run one ``asgid ctl`` command; raises ``ControlError`` when it fails.

    With ``--json`` a failure is printed too, as the protocol's failure object.
    """
    args = build_parser().parse_args(argv)
    try:
        _run(args, out)
    except ControlError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc), "kind": exc.kind}), file=out)
        raise


def _run(args: argparse.Namespace, out: TextIO) -> None:
    path = find_socket(args.config, args.socket)
    if args.command == "status":
        if args.watch is not None:
            watch(path, args.json, max(args.watch, 0.1), out)
            return
        show_status(request(path, {"cmd": "status"}), args.json, out)
        return
    message: dict[str, Any] = {"cmd": args.command}
    timeout = ANSWER_TIMEOUT
    if args.command == "reload" and args.wait:
        message.update(wait=True, timeout=args.timeout)
        timeout = args.timeout + 5.0
    elif args.command == "scale":
        message.update(_scale(args.count))
    elif args.command == "recycle":
        message["target"] = args.target
    elif args.command == "stop":
        message["now"] = args.now
    answer = request(path, message, timeout=timeout)
    if args.json:
        print(json.dumps(answer), file=out)
    else:
        print(_describe(args.command, answer), file=out)


def _scale(text: str) -> dict[str, int]:
    try:
        number = int(text)
    except ValueError:
        raise ControlError(f"scale: expected N, +K or -K, got {text!r}", "bad_request") from None
    return {"delta": number} if text.startswith(("+", "-")) else {"count": number}


def find_socket(config_path: str | None, given: str | None) -> str:
    """The control socket's path, from the flags, the config file or the environment."""
    if given:
        return given
    if config_path:
        configured = os.environ.get(ENV_SOCKET) or _socket_setting(config_path)
        if configured != _runtime.AUTO:
            if not configured:
                raise ControlError(f"{config_path}: [control].socket is off", "unreachable")
            return configured
        found = _runtime.client_socket_paths(config_path)
        if not found:
            raise ControlError(
                f"no control socket for {config_path} (is asgid -c {config_path} running? "
                f"looked for {_runtime.socket_name(config_path)} in $RUNTIME_DIRECTORY, "
                f"{_runtime.SYSTEM_DIR}, $XDG_RUNTIME_DIR/asgid and /tmp/asgid-*)",
                "unreachable",
            )
        return found[0]
    if os.environ.get(ENV_SOCKET):
        return os.environ[ENV_SOCKET]
    raise ControlError(
        "which server? give -c FILE (its config file) or --socket PATH", "bad_request"
    )


def _socket_setting(config_path: str) -> str:
    """``[control].socket`` of the file; ``auto`` when unset or unreadable."""
    try:
        with open(config_path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, ValueError):
        return _runtime.AUTO  # broken by an edit: the running master still uses the old path
    control = data.get("control")
    value = control.get("socket", _runtime.AUTO) if isinstance(control, dict) else _runtime.AUTO
    return value if isinstance(value, str) else _runtime.AUTO


def request(path: str, message: dict[str, Any], timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
    """Send ``message``, return the answer; ``ControlError`` unless it says ok."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise ControlError(
                f"cannot connect to {path}: {exc.strerror or exc}", "unreachable"
            ) from None
        data = b""
        try:
            try:
                sock.sendall(json.dumps(message).encode() + b"\n")
            except BrokenPipeError:
                pass  # answered and closed at once (a refused peer): read the answer
            while b"\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(f"no answer from {path} within {timeout:g}s", "timeout") from None
        except OSError as exc:
            if not data:
                raise ControlError(f"{path}: {exc.strerror or exc}", "error") from None
    finally:
        sock.close()
    try:
        answer = json.loads(data.partition(b"\n")[0])
    except ValueError:
        raise ControlError(f"{path} closed the connection without an answer", "error") from None
    if not isinstance(answer, dict):
        raise ControlError(f"unexpected answer {answer!r}", "error")
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "failed")), str(answer.get("kind", "error")))
    return answer


def watch(path: str, as_json: bool, interval: float, out: TextIO) -> None:
    """``status --watch``: redraw like ``top`` until ^C."""
    try:
        while True:
            answer = request(path, {"cmd": "status"})
            if not as_json:
                out.write("\x1b[H\x1b[2J")  # home, clear
            show_status(answer, as_json, out)
            out.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        pass


# -- human output --------------------------------------------------------------------


def show_status(answer: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(answer["status"]), file=out)
    else:
        out.write(format_status(answer["status"]))


def format_status(status: dict[str, Any]) -> str:
    master = status["master"]
    counts = master["counts"]
    lines = [
        f"master pid {master['pid']}, up {_duration(master['uptime'])}, {master['state']}, "
        f"generation {master['generation']}"
        + (
            f" (reloading to {master['pending_generation']})"
            if master["pending_generation"]
            else ""
        ),
        f"config {master['config_path'] or '(command line)'}, app {master['app']}",
        f"workers: {counts['ready']}/{master['workers_wanted']} ready"
        + (f", {counts['starting']} starting" if counts["starting"] else "")
        + (f", {counts['draining']} draining" if counts["draining"] else ""),
    ]
    last = master["last_reload"]
    if last:
        ago = _duration(max(0.0, master["now"] - last["at"]))
        line = f"last reload: {last['result']} {ago} ago"
        if last["generation"]:
            line += f" (generation {last['generation']})"
        if last["reason"]:
            line += f": {last['reason']}"
        lines.append(line)
    else:
        lines.append("last reload: none")
    header = ("SLOT", "PID", "GEN", "STATE", "AGE", "REQUESTS", "CONNS", "RSS", "LAG", "SEEN")
    rows = [header]
    for w in status["workers"]:
        rows.append(
            (
                str(w["slot"]),
                str(w["pid"]),
                str(w["generation"]),
                w["state"],
                _duration(w["age"]),
                str(w["requests"]),
                str(w["connections"]),
                _size(w["rss"]),
                f"{w['lag'] * 1000:.1f}ms",
                f"{w['last_heartbeat']:.1f}s ago",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines.append("")
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _describe(command: str, answer: dict[str, Any]) -> str:
    if command == "reload":
        if answer.get("result") == "succeeded":
            return f"reload succeeded: generation {answer['generation']} serves"
        return f"reload started: generation {answer['generation']}"
    if command == "scale":
        return f"scaling to {answer['workers']} workers"
    if command == "recycle":
        return f"replacing worker {answer['slot']} (pid {answer['pid']}), new before old"
    if command == "stop":
        return "stopping now" if answer["stopping"] == "now" else "stopping gracefully"
    if command == "config":
        origin = answer.get("config_path") or "the command line"
        return f"# the effective configuration of the server started from {origin}\n" + str(
            answer["toml"]
        ).rstrip("\n")
    return json.dumps(answer)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    return f"{size / (1 << 20):.1f}MiB"
