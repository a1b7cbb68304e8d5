"""``[workers].count = "auto"``: the CPUs this process may use, not the machine's.

Unit tests of the quota parsing, and black-box starts under ``taskset`` and,
where this machine lets a test make one, inside a cgroup with a CPU quota.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import StartServer
from supervision import APP, wait_for_log, wait_for_workers

from asgid.supervisor._cpus import quota


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu_max": "max 100000\n"}, None),
        ({"cpu_max": "150000 100000\n"}, 1.5),
        ({"cpu_max": "200000 100000"}, 2.0),
        ({"cfs_quota": "-1\n", "cfs_period": "100000\n"}, None),
        ({"cfs_quota": "50000\n", "cfs_period": "100000\n"}, 0.5),
        ({}, None),
    ],
)
def test_quota(files: dict[str, str], expected: float | None) -> None:
    assert quota(**files) == expected


def test_auto_follows_the_cpu_affinity(start_server: StartServer) -> None:
    if shutil.which("taskset") is None:
        pytest.skip("taskset is not installed")
    server = start_server(APP, "--workers", "auto", preexec_fn=lambda: os.sched_setaffinity(0, {0}))
    wait_for_workers(server, 1)
    assert "workers = auto: 1, from the CPU affinity" in server.output()


@contextlib.contextmanager
def cpu_quota_cgroup(cpus: float) -> Iterator[Path]:
    """A cgroup (v2 or v1) with a CPU quota of ``cpus``; skips where none can be made."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if v2.exists():
        root, limit = Path("/sys/fs/cgroup"), f"{int(cpus * 100000)} 100000"
        files = {"cpu.max": limit}
    else:
        root = Path("/sys/fs/cgroup/cpu")
        files = {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": str(int(cpus * 100000))}
    group = root / f"asgid-test-{os.getpid()}"
    try:
        group.mkdir()
        for name, value in files.items():
            (group / name).write_text(value)
    except OSError as exc:
        with contextlib.suppress(OSError):
            group.rmdir()
        pytest.skip(f"cannot make a cgroup with a CPU quota here: {exc}")
    try:
        yield group
    finally:
        with contextlib.suppress(OSError):
            group.rmdir()  # empty once the server's processes have exited


def test_auto_follows_the_cgroup_cpu_quota(start_server: StartServer) -> None:
    with cpu_quota_cgroup(0.5) as group:
        procs = group / "cgroup.procs"

        def enter() -> None:
            procs.write_text(str(os.getpid()))

        server = start_server(APP, "--workers", "auto", preexec_fn=enter)
        wait_for_workers(server, 1)
        output = wait_for_log(server, "workers = auto")
        assert re.search(r"workers = auto: 1, from the CPU quota 0\.5 \(.*asgid-test-", output)
        server.stop()  # the group is empty again, and can go


def test_auto_under_a_two_cpu_quota_starts_two_workers(start_server: StartServer) -> None:
    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        pytest.skip("this machine lets the tests use fewer than 2 CPUs")
    with cpu_quota_cgroup(2.0) as group:
        procs = group / "cgroup.procs"

        def enter() -> None:
            procs.write_text(str(os.getpid()))

        server = start_server(APP, "--workers", "auto", preexec_fn=enter)
        wait_for_workers(server, 2)
        output = wait_for_log(server, "workers = auto")
        # With exactly 2 CPUs the affinity says 2 as well, and is named first.
        source = r"the CPU quota 2 \(.*asgid-test-" if cpus > 2 else r"the CPU affinity"
        assert re.search(rf"workers = auto: 2, from {source}", output), output
        server.stop()  # the group is empty again, and can go
