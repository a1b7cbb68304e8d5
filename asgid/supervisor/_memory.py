"""``[workers].max_memory``: a size, or a share of the memory the container may use.

``"80%"`` means 80% of the tightest cgroup memory limit on this process's
cgroup path (v2 ``memory.max``, v1 ``memory.limit_in_bytes``), or of the
machine's memory where there is none, divided among the workers. This module
reads that limit and does the arithmetic; the master calls it at start (to
say what the limit is and warn when the workers will not fit) and on every
memory check (so SIGTTIN/SIGTTOU and reloads re-divide the share).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Share
from ._cgroup import CGROUP_ROOT, SELF_CGROUP, limit_files

# cgroup v1 says "no limit" with a huge number (PAGE_COUNTER_MAX pages, rounded).
UNLIMITED = 1 << 62
MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class Available:
    """The memory this process may use, and where that number came from."""

    total: int
    source: str


def limit(text: str) -> int | None:
    """Bytes a cgroup memory limit file allows, or None for no limit."""
    text = text.strip()
    if text == "max":  # v2
        return None
    value = int(text)
    return value if 0 < value < UNLIMITED else None


def available(*, root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> Available:
    """The tightest cgroup memory limit, or the machine's memory without one."""
    best: Available | None = None
    files = limit_files(
        "memory.max", "memory", "memory.limit_in_bytes", root=root, self_cgroup=self_cgroup
    )
    for path in files:
        try:
            found = limit(path.read_text())
        except (OSError, ValueError):
            continue
        if found is not None and (best is None or found < best.total):
            best = Available(found, f"memory limit ({path})")
    if best is not None:
        return best
    import psutil  # the master loads it only when max_memory is set

    return Available(int(psutil.virtual_memory().total), "machine's memory")


def per_worker(setting: int | Share, workers: int, memory: Available | None) -> int:
    """Bytes of RSS each worker may use; 0: no limit."""
    if not isinstance(setting, Share):
        return setting
    if memory is None:
        return 0
    return setting.of(memory.total) // max(1, workers)


def describe(setting: int | Share, workers: int, memory: Available) -> str:
    each = per_worker(setting, workers, memory)
    if isinstance(setting, Share):
        return (
            f"max_memory = {setting} of {memory.total // MiB} MiB, the {memory.source}, "
            f"over {workers} worker(s): {each // MiB} MiB each"
        )
    return f"max_memory = {each // MiB} MiB per worker"


def fit_warning(
    setting: int | Share, workers: int, memory: Available, master_rss: int
) -> str | None:
    """Why the workers' expected memory will not fit in ``memory``, or None.

    The master and ``workers`` workers at their limit must fit in the limit,
    and a worker's limit must leave room for at least what the master uses
    (a worker starts as its copy), or it is recycled as soon as it is ready.
    """
    each = per_worker(setting, workers, memory)
    if not each:
        return None
    expected = master_rss + workers * each
    if expected > memory.total:
        return (
            f"{workers} worker(s) at max_memory {each // MiB} MiB plus the master "
            f"({master_rss // MiB} MiB) need {expected // MiB} MiB, more than the "
            f"{memory.total // MiB} MiB of the {memory.source}: the kernel's OOM killer may stop "
            "workers before max_memory recycles them; lower max_memory or the worker count, "
            'or give a share such as "80%"'
        )
    if each < master_rss:
        return (
            f"max_memory {each // MiB} MiB per worker is less than the master alone uses "
            f"({master_rss // MiB} MiB): every worker would be recycled as soon as it is "
            "ready; give the container more memory or run fewer workers"
        )
    return None
