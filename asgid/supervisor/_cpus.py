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

CGROUP_ROOT = Path("/sys/fs/cgroup")


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


def available_cpus() -> tuple[int, str]:
    """(CPUs to use, where that number came from)."""
    try:
        count, source = len(os.sched_getaffinity(0)), "CPU affinity"
    except (AttributeError, OSError):  # not Linux
        count, source = os.cpu_count() or 1, "os.cpu_count()"
    found = _cgroup_quota()
    if found is not None:
        cpus, where = found
        if math.ceil(cpus) < count:
            count, source = math.ceil(cpus), f"CPU quota {cpus:g} ({where})"
    return max(1, count), source


def _cgroup_quota() -> tuple[float, str] | None:
    """The tightest CPU quota on this process's cgroup path, and the file that sets it."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    best: tuple[float, str] | None = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            candidates = [(CGROUP_ROOT, "cpu.max")]
        elif "cpu" in controllers.split(","):
            mount = CGROUP_ROOT / controllers
            if not mount.exists():
                mount = CGROUP_ROOT / "cpu"
            candidates = [(mount, "cpu.cfs_quota_us")]
        else:
            continue
        for mount, name in candidates:
            directory = mount / path.lstrip("/")
            # Up to the root: a parent's quota limits its children too.
            for level in [directory, *directory.parents]:
                if not str(level).startswith(str(mount)):
                    break
                found = _read_quota(level, name)
                if found is not None and (best is None or found < best[0]):
                    best = (found, str(level / name))
    return best


def _read_quota(directory: Path, name: str) -> float | None:
    try:
        if name == "cpu.max":
            return quota(cpu_max=(directory / name).read_text())
        return quota(
            cfs_quota=(directory / "cpu.cfs_quota_us").read_text(),
            cfs_period=(directory / "cpu.cfs_period_us").read_text(),
        )
    except (OSError, ValueError):
        return None
