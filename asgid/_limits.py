"""The open-file limit: every connection a worker holds is a file descriptor.

Many systems start services with a soft RLIMIT_NOFILE of 1024 and a much
higher hard limit, leaving the raise to the program. asgid raises the soft
limit to the hard one once, in the process that binds and forks, so every
worker inherits it; it never touches the hard limit (only root could raise
it, and that is the service manager's call: systemd's ``LimitNOFILE=``).
"""

from __future__ import annotations

import logging

logger = logging.getLogger("asgid.error")

LOW_NOFILE = 4096  # below this, say how few connections a worker can hold
_UNLIMITED_TRIES = (1 << 20, 10240)  # RLIM_INFINITY is not a valid soft limit (macOS: OPEN_MAX)


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; log what it is; return it."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not a POSIX system
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    tries = _UNLIMITED_TRIES if hard == resource.RLIM_INFINITY else (hard,)
    before = soft
    error: OSError | ValueError | None = None
    for target in tries:
        if soft == resource.RLIM_INFINITY or target <= soft:
            error = None  # as high as it can go
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            error = exc
            continue
        soft, error = target, None
        break
    if soft != before:
        logger.info("raised the open file limit (RLIMIT_NOFILE) from %d to %d", before, soft)
    elif error is None:
        logger.info("open file limit (RLIMIT_NOFILE): %d", soft)
    if error is not None:
        logger.warning(
            "cannot raise the open file limit (RLIMIT_NOFILE) from %d to %s (%s): "
            "each worker can hold fewer than %d connections",
            soft,
            "unlimited" if hard == resource.RLIM_INFINITY else hard,
            error,
            soft,
        )
    elif soft != resource.RLIM_INFINITY and soft < LOW_NOFILE:
        logger.warning(
            "the open file limit (RLIMIT_NOFILE) is %d, and so is the hard limit: each worker "
            "can hold fewer than %d connections; raise it (systemd: LimitNOFILE=, shell: "
            "ulimit -Hn) for more",
            soft,
            soft,
        )
    return int(soft)
