"""The control socket: what ``asgid ctl`` (or any script) asks a running master.

One JSON object per line in, one JSON object per line out, then the
connection closes (the protocol is documented in docs/cli.md). The socket is
a Unix socket of mode 0600 served by an ``Endpoint`` on the master's loop, and
each peer is checked with ``SO_PEERCRED``: root or the master's own uid only.
This module decides what a command means and how it is answered; the master
carries it out, and nothing here blocks, forks or signals.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import stat
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._wire import WorkerExit
from ..config._dump import render_toml, settings_with_origins
from . import _core
from ._endpoint import Client, Endpoint

if TYPE_CHECKING:
    from ._master import Master

logger = logging.getLogger("asgid.error")

MAX_REQUEST = 4096
MAX_WAIT = 3600.0  # the longest `reload --wait --timeout` the master holds a client for
DEFAULT_WAIT = 120.0
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def failure(error: str, kind: str = "error", **data: Any) -> bytes:
    """``kind``: ``bad_request``, ``refused``, ``config``, ``app_load``, ``boot``,
    ``timeout``, ``stopping`` or ``error`` (what ``asgid ctl`` maps to an exit status)."""
    return encode({"ok": False, "error": error, "kind": kind, **data})


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return int(_PEERCRED.unpack(creds)[1])


class ControlServer:
    def __init__(self, path: str, selector: selectors.BaseSelector, master: Master) -> None:
        self.path = path
        self.master = master
        self.uid = os.getuid()
        self.waiters: list[tuple[Client, int]] = []  # reload --wait: (client, generation)
        sock = _bind(path)
        self.endpoint = Endpoint(
            "control socket",
            sock,
            selector,
            self._handle,
            terminator=b"\n",
            max_request=MAX_REQUEST,
            too_large=lambda: failure("request too large", "bad_request"),
            path=path,
            accept_peer=self._check_peer,
        )

    def close(self) -> None:
        for client, _ in self.waiters:
            self.endpoint.reply(client, failure("the server stopped", "stopping"))
        self.waiters = []
        self.endpoint.close()

    def close_in_child(self) -> None:
        self.endpoint.close_in_child()

    def expire(self, now: float) -> None:
        for client, _ in self.waiters:
            if now > client.deadline - 0.05:  # answer just before the endpoint drops it
                self.endpoint.reply(client, failure("timed out waiting for the reload", "timeout"))
        # Answered, or gone (a client that hung up has its socket closed).
        self.waiters = [(c, g) for c, g in self.waiters if not c.replied and c.sock.fileno() >= 0]
        self.endpoint.expire(now)

    def next_deadline(self) -> float | None:
        return min((c.deadline - 0.05 for c, _ in self.waiters), default=None)

    # -- reloads the master reports ----------------------------------------------

    def reload_started(self, generation: int) -> None:
        """A newer reload replaces a pending one: who waited for that one waits for this."""
        self.waiters = [(client, generation) for client, _ in self.waiters]

    def reload_done(self, success: bool, generation: int, reason: str, code: WorkerExit) -> None:
        for client, waited in self.waiters:
            if waited != generation:
                continue
            if success:
                data = encode({"ok": True, "generation": generation, "result": "succeeded"})
            else:
                kind = "app_load" if code is WorkerExit.APP_LOAD_FAILED else "boot"
                data = failure(reason, kind, generation=generation)
            self.endpoint.reply(client, data)
        self.waiters = [(c, g) for c, g in self.waiters if g != generation]

    def stopping(self) -> None:
        for client, _ in self.waiters:
            self.endpoint.reply(client, failure("the server is stopping", "stopping"))
        self.waiters = []

    # -- requests --------------------------------------------------------------------

    def _check_peer(self, sock: socket.socket) -> bytes | None:
        try:
            uid = peer_uid(sock)
        except OSError as exc:
            return failure(f"cannot check the peer's credentials: {exc}", "refused")
        if uid in (0, self.uid):
            return None
        logger.warning("control socket: refused a client running as uid %d", uid)
        return failure(f"permission denied: uid {uid} is not root nor uid {self.uid}", "refused")

    def _handle(self, request: bytes, client: Client) -> None:
        try:
            message = json.loads(request)
            if not isinstance(message, dict) or not isinstance(message.get("cmd"), str):
                raise ValueError('expected {"cmd": "..."}')
        except ValueError as exc:
            self.endpoint.reply(client, failure(f"bad request: {exc}", "bad_request"))
            return
        command: Callable[[dict[str, Any], Client], bytes | None] | None = getattr(
            self, "cmd_" + message["cmd"], None
        )
        if command is None:
            known = ", ".join(sorted(n[4:] for n in dir(self) if n.startswith("cmd_")))
            answer: bytes | None = failure(
                f"unknown command {message['cmd']!r}; expected one of {known}", "bad_request"
            )
        else:
            try:
                answer = command(message, client)
            except _core.Refused as exc:
                answer = failure(str(exc), "refused")
            except (TypeError, ValueError) as exc:
                answer = failure(f"bad request: {exc}", "bad_request")
        if answer is not None:
            self.endpoint.reply(client, answer)

    def cmd_status(self, message: dict[str, Any], client: Client) -> None:
        # The request counts as of now, not as of the last heartbeat.
        self.master.fresh_counts(
            lambda: self.endpoint.reply(
                client, encode({"ok": True, "status": self.master.status_report()})
            )
        )

    def cmd_reload(self, message: dict[str, Any], client: Client) -> bytes | None:
        generation, kind, error = self.master.reload()
        if not generation:
            return failure(error, kind)
        if not message.get("wait"):
            return encode({"ok": True, "generation": generation, "result": "started"})
        timeout = float(message.get("timeout") or DEFAULT_WAIT)
        client.deadline = time.monotonic() + min(max(timeout, 0.1), MAX_WAIT)
        self.waiters.append((client, generation))
        return None  # answered by reload_done, stopping or expire

    def cmd_scale(self, message: dict[str, Any], client: Client) -> bytes:
        core = self.master.core
        if "count" in message:
            count = _int(message["count"], "count")
        else:
            count = core.count + _int(message.get("delta"), "delta")
        self.master.scale_to(count)
        return encode({"ok": True, "workers": core.count})

    def cmd_recycle(self, message: dict[str, Any], client: Client) -> bytes:
        core = self.master.core
        if "target" in message:  # a slot number if there is such a slot, else a pid
            target = _int(message["target"], "target")
            pid = core.slot_pid(target) if target in core.slots else target
        elif "slot" in message:
            pid = core.slot_pid(_int(message["slot"], "slot"))
        else:
            pid = _int(message.get("pid"), "pid")
        worker = self.master.recycle(pid)
        return encode({"ok": True, "pid": pid, "slot": worker})

    def cmd_stop(self, message: dict[str, Any], client: Client) -> bytes:
        now = bool(message.get("now"))
        self.master.stop(graceful=not now)
        return encode({"ok": True, "stopping": "now" if now else "graceful"})

    def cmd_config(self, message: dict[str, Any], client: Client) -> bytes:
        config, origins = self.master.config, self.master.origins
        return encode(
            {
                "ok": True,
                "config_path": self.master.config_path,
                "toml": render_toml(config, origins),
                "settings": settings_with_origins(config, origins),
            }
        )


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    return value


def _bind(path: str) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600 from the start.

    A socket file left by a master that died is replaced; one that a live
    master answers on is not (``OSError``), nor anything that is not a socket.
    """
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(path)
        if not stat.S_ISSOCK(info.st_mode):
            raise OSError(f"control socket {path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody listens there
        else:
            raise OSError(f"control socket {path}: another master is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot bind the control socket {path}: {exc.strerror}") from exc
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock
