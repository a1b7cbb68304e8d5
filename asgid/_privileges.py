"""Who the workers run as: ``[process].user``, ``group`` and ``umask``.

The master resolves the names once per configuration (an unknown user is a
configuration error, reported before anything forks) and uses the ids to
hand the workers what they must write; each new worker drops to them for
good right after it has read what only the master's user may read (the TLS
key). Nothing here runs per request.
"""

from __future__ import annotations

import os
import stat

from .config import ConfigError, ProcessSettings


def worker_ids(process: ProcessSettings) -> tuple[int, int]:
    """The ``(uid, gid)`` workers run as; -1 where they keep the master's.

    A user given by name (or by a uid with a passwd entry) brings its primary
    group unless ``group`` is set; a bare uid without an entry needs ``group``
    too, so that a worker never keeps the master's (root) group by accident.
    Raises ``ConfigError`` naming the key for an unknown user or group.
    """
    import grp
    import pwd

    uid = gid = -1
    if process.user:
        try:
            entry = (
                pwd.getpwuid(int(process.user))
                if process.user.isdigit()
                else pwd.getpwnam(process.user)
            )
        except KeyError:
            if not process.user.isdigit():
                raise ConfigError(f"no such user: {process.user!r}", key="process.user") from None
            if not process.group:
                raise ConfigError(
                    f"uid {process.user} has no passwd entry: set [process].group as well",
                    key="process.user",
                ) from None
            uid = int(process.user)
        else:
            uid, gid = entry.pw_uid, entry.pw_gid
    if process.group:
        if process.group.isdigit():
            gid = int(process.group)
        else:
            try:
                gid = grp.getgrnam(process.group).gr_gid
            except KeyError:
                raise ConfigError(
                    f"no such group: {process.group!r}", key="process.group"
                ) from None
    return uid, gid


def drop_privileges(process: ProcessSettings) -> None:
    """Set the umask, then become ``[process].user``/``group`` for good.

    Groups first (``setgroups`` and ``setgid`` need root), then the uid; as
    root, ``setuid`` sets the real, effective and saved uid, so there is no
    way back. A non-root master can only keep its own ids.
    """
    if process.umask:
        os.umask(int(process.umask, 8))
    uid, gid = worker_ids(process)
    if uid < 0 and gid < 0:
        return
    if os.geteuid() != 0:
        if uid in (-1, os.getuid(), os.geteuid()) and gid in (-1, os.getgid(), os.getegid()):
            return  # already running as them
        raise PermissionError("only a master running as root can switch users")
    if gid >= 0:
        name = _user_name(uid)
        if name is not None:
            os.initgroups(name, gid)  # the user's supplementary groups, as a login gets
        else:
            os.setgroups([gid])
        os.setgid(gid)
    if uid >= 0:
        os.setuid(uid)


def _user_name(uid: int) -> str | None:
    import pwd

    if uid < 0:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def writable_by(st: os.stat_result, uid: int, gid: int) -> bool:
    """Whether ``uid``/``gid`` (-1: the master's own) may write a file with this stat.

    From the mode bits only (no ACLs, no supplementary groups): for warnings.
    """
    uid = os.getuid() if uid < 0 else uid
    gid = os.getgid() if gid < 0 else gid
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IWUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IWGRP)
    return bool(st.st_mode & stat.S_IWOTH)
