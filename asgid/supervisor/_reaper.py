"""The master as a good PID 1: it adopts orphans, reaps them, and lets no worker leak.

On Linux the master makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``),
so a process orphaned anywhere below it (a subprocess a worker's app started
and lost, a double-forked helper) is reparented to the master rather than to
init; as PID 1 in a container it is init, and gets them anyway. The master's
loop reaps every exited child, whoever it is.

Each worker leads its own process group, and whatever it started stays in it
unless it moves itself out (``setsid``). When a worker exits, the master kills
its group before reaping it: the unreaped worker still holds the pid, so the
group id cannot have been reused by then. Nothing here keeps state.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
PR_GET_CHILD_SUBREAPER = 37


def set_subreaper(on: bool) -> bool | None:
    """Adopt orphaned descendants, or stop (Linux only); whether it did before.

    None where it is not supported. ``asgid.run()`` hands the process back to
    its program as it was: the master sets it back at the end.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        before = ctypes.c_int(0)
        if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(before), 0, 0, 0) != 0:
            return None
        if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return bool(before.value)


def next_exited() -> int | None:
    """The pid of a child that has exited, still unreaped; None when none has.

    Call ``reap(pid)`` next; until then the same pid comes back.
    """
    try:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    return info.si_pid if info is not None and info.si_pid else None


def reap(pid: int) -> int:
    """Reap ``pid`` (it has exited); its exit code, or minus the signal that killed it."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def kill_group(pgid: int, signum: int = signal.SIGKILL) -> None:
    """Signal every process left in a worker's group (the worker's pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
