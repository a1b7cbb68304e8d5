"""How many CPUs this process may really use, for ``[workers].count = "auto"``.

``os.cpu_count()`` counts the machine's CPUs; in a container limited to two
of a node's 64 it would start 64 workers. The answer here is the smaller of
the CPU affinity mask and the cgroup CPU quota (v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded up, at least 1, with
where it came from for the log. ``quota()`` parses file contents only; the
reading is in ``available_cpus()``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ._cgroup import CGROUP_ROOT, SELF_CGROUP, limit_files


def quota(
    cpu_max: str | None = None, cfs_quota: str | None = None, cfs_period: str | None = None
) -> float | None:
    """CPUs a cgroup quota allows (``1.5``), or None when there is no quota.

    ``cpu_max`` is cgroup v2's ``cpu.max`` ("max 100000" or "150000 100000");
    ``cfs_quota``/``cfs_period`` are cgroup v1's files (quota -1: none).
    """
    if cpu_max is not None:
        fields = cpu_max.split()
        if len(fields) == 2 and fields[0] != "max":
            limit, period = int(fields[0]), int(fields[1])
            return limit / period if limit > 0 and period > 0 else None
        return None
    if cfs_quota is not None and cfs_period is not None:
        limit, period = int(cfs_quota), int(cfs_period)
        return limit / period if limit > 0 and period > 0 else None
    return None


def available_cpus(*, root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> tuple[int, str]:
    """(CPUs to use, where that number came from).

    ``root`` and ``self_cgroup`` locate the cgroup files (tests pass a fake tree).
    """
    try:
        count, source = len(os.sched_getaffinity(0)), "CPU affinity"
    except (AttributeError, OSError):  # not Linux
        count, source = os.cpu_count() or 1, "os.cpu_count()"
    found = _cgroup_quota(root, self_cgroup)
    if found is not None:
        cpus, where = found
        if math.ceil(cpus) < count:
            count, source = math.ceil(cpus), f"CPU quota {cpus:g} ({where})"
    return max(1, count), source


def _cgroup_quota(root: Path, self_cgroup: Path) -> tuple[float, str] | None:
    """The tightest CPU quota on this process's cgroup path, and the file that sets it."""
    best: tuple[float, str] | None = None
    files = limit_files("cpu.max", "cpu", "cpu.cfs_quota_us", root=root, self_cgroup=self_cgroup)
    for path in files:
        found = _read_quota(path)
        if found is not None and (best is None or found < best[0]):
            best = (found, str(path))
    return best


def _read_quota(path: Path) -> float | None:
    try:
        if path.name == "cpu.max":
            return quota(cpu_max=path.read_text())
        return quota(
            cfs_quota=path.read_text(),
            cfs_period=(path.parent / "cpu.cfs_period_us").read_text(),
        )
    except (OSError, ValueError):
        return None
