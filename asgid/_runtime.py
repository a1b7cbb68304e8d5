"""Where a master's control socket lives when ``[control].socket`` is ``auto``.

The master and ``asgid ctl`` both derive the path from the config file's real
path, so ``asgid ctl -c server.toml`` finds the socket of ``asgid -c
server.toml`` without being told. This module only computes paths and looks
at directories; it never binds, connects or removes anything.
"""

from __future__ import annotations

import glob
import hashlib
import os
import stat
import tempfile
from collections.abc import Mapping

AUTO = "auto"
SYSTEM_DIR = "/run/asgid"  # the shipped unit's RuntimeDirectory=asgid


def socket_name(config_path: str) -> str:
    """``server-1a2b3c4d.sock`` for ``/etc/asgid/server.toml``: one per config file."""
    real = os.path.realpath(config_path)
    stem = os.path.splitext(os.path.basename(real))[0][:32] or "asgid"
    digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{stem}-{digest}.sock"


def _directories(environ: Mapping[str, str], uid: int) -> list[tuple[str, bool]]:
    """Candidate directories, best first, and whether asgid may create each."""
    found: list[tuple[str, bool]] = []
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        found.append((runtime, False))
    found.append((SYSTEM_DIR, False))  # created by systemd, never by asgid
    xdg = environ.get("XDG_RUNTIME_DIR", "")
    if xdg:
        found.append((os.path.join(xdg, "asgid"), True))
    found.append((os.path.join(tempfile.gettempdir(), f"asgid-{uid}"), True))
    return found


def server_socket_path(
    config_path: str, environ: Mapping[str, str] | None = None, uid: int | None = None
) -> str:
    """Where a master using ``config_path`` puts its ``auto`` control socket.

    The first candidate directory that exists and is writable, or that asgid
    may create (mode 0700). A directory asgid creates must be a real
    directory owned by this user and closed to others, or it is skipped.
    Raises ``OSError`` when none will do.
    """
    environ = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    name = socket_name(config_path)
    problems = []
    for directory, create in _directories(environ, uid):
        if create:
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                problems.append(f"{directory}: {exc.strerror}")
                continue
            info = os.lstat(directory)
            if (
                not stat.S_ISDIR(info.st_mode)
                or info.st_uid != uid
                or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            ):
                problems.append(f"{directory}: not a private directory of uid {uid}")
                continue
            return os.path.join(directory, name)
        if os.path.isdir(directory) and os.access(directory, os.W_OK):
            return os.path.join(directory, name)
    raise OSError("no directory for the control socket: " + "; ".join(problems or ["none"]))


def client_socket_paths(
    config_path: str, environ: Mapping[str, str] | None = None, uid: int | None = None
) -> list[str]:
    """Where ``asgid ctl -c config_path`` looks for the socket, best first.

    The master's candidates for this user, then those of other users (root
    talking to a master that runs as ``asgid``); only paths that exist.
    """
    environ = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    name = socket_name(config_path)
    paths = [os.path.join(directory, name) for directory, _ in _directories(environ, uid)]
    paths += sorted(glob.glob(os.path.join(tempfile.gettempdir(), "asgid-*", name)))
    paths += sorted(glob.glob(os.path.join("/run/user/*/asgid", name)))
    seen: list[str] = []
    for path in paths:
        if path not in seen and os.path.exists(path):
            seen.append(path)
    return seen
