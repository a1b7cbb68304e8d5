"""``[workers].max_memory`` as a share of the container's memory, and the fit check.

Unit tests read fake cgroup trees (v1 and v2) through the injectable root;
black-box tests start asgid with a share, with a limit that cannot fit, and,
where this machine lets a test make one, inside a cgroup with a memory limit.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import StartServer, wait_until
from supervision import FAST, get, get_pid, wait_for_log, wait_for_workers

from asgid.config import Share
from asgid.supervisor import _memory
from asgid.supervisor._cpus import available_cpus
from asgid.supervisor._memory import Available, fit_warning, limit, per_worker

MiB = 1 << 20


def tree(root: Path, self_cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake ``/sys/fs/cgroup`` under ``root`` and a fake ``/proc/self/cgroup``."""
    for name, text in files.items():
        path = root / "cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "cgroup").mkdir(exist_ok=True)
    proc = root / "self-cgroup"
    proc.write_text(self_cgroup)
    return root / "cgroup", proc


@pytest.mark.parametrize(
    ("text", "expected"),
    [("max\n", None), ("536870912\n", 512 * MiB), ("9223372036854771712\n", None), ("0", None)],
)
def test_limit(text: str, expected: int | None) -> None:
    assert limit(text) == expected


def test_the_tightest_v2_limit_on_the_path_wins(tmp_path: Path) -> None:
    root, proc = tree(
        tmp_path,
        "0::/kubepods/pod1/ctr\n",
        {
            "memory.max": "max\n",
            "kubepods/memory.max": "2147483648\n",
            "kubepods/pod1/memory.max": "536870912\n",  # the pod's limit
            "kubepods/pod1/ctr/memory.max": "max\n",
        },
    )
    found = _memory.available(root=root, self_cgroup=proc)
    assert found.total == 512 * MiB
    assert found.source == f"memory limit ({root}/kubepods/pod1/memory.max)"


def test_a_v1_limit_is_found_at_the_mount_when_the_path_is_the_hosts(tmp_path: Path) -> None:
    # Inside a container, /proc/self/cgroup names the host's path; the container's
    # own cgroup is the root of its mount.
    root, proc = tree(
        tmp_path,
        "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n",
        {"memory/memory.limit_in_bytes": "268435456\n"},
    )
    found = _memory.available(root=root, self_cgroup=proc)
    assert found == Available(256 * MiB, f"memory limit ({root}/memory/memory.limit_in_bytes)")


def test_without_a_limit_the_machines_memory_counts(tmp_path: Path) -> None:
    root, proc = tree(
        tmp_path, "4:memory:/\n", {"memory/memory.limit_in_bytes": "9223372036854771712\n"}
    )
    found = _memory.available(root=root, self_cgroup=proc)
    assert found.source == "machine's memory"
    assert found.total > 0


def test_a_share_is_divided_among_the_workers() -> None:
    memory = Available(1000 * MiB, "memory limit")
    assert per_worker(Share(80.0), 4, memory) == 200 * MiB
    assert per_worker(Share(80.0), 1, memory) == 800 * MiB
    assert per_worker(300 * MiB, 4, memory) == 300 * MiB  # a size is per worker already
    assert per_worker(0, 4, memory) == 0
    assert per_worker(Share(50.0), 2, None) == 0


def test_fit_warning() -> None:
    memory = Available(1000 * MiB, "memory limit (x)")
    assert fit_warning(Share(80.0), 4, memory, 40 * MiB) is None
    assert fit_warning(200 * MiB, 4, memory, 40 * MiB) is None
    assert fit_warning(0, 64, memory, 40 * MiB) is None
    too_big = fit_warning(300 * MiB, 4, memory, 40 * MiB)
    assert too_big is not None
    assert "need 1240 MiB, more than the 1000 MiB of the memory limit (x)" in too_big
    too_small = fit_warning(Share(80.0), 64, memory, 40 * MiB)  # 12 MiB each
    assert too_small is not None
    assert "12 MiB per worker is less than the master alone uses (40 MiB)" in too_small


@pytest.mark.parametrize(
    ("self_cgroup", "files"),
    [
        ("0::/pod\n", {"pod/cpu.max": "50000 100000\n"}),
        (
            "2:cpu,cpuacct:/pod\n",
            {
                "cpu,cpuacct/pod/cpu.cfs_quota_us": "50000\n",
                "cpu,cpuacct/pod/cpu.cfs_period_us": "100000\n",
            },
        ),
    ],
    ids=["v2", "v1"],
)
def test_cpus_from_a_fake_cgroup_tree(
    tmp_path: Path, self_cgroup: str, files: dict[str, str]
) -> None:
    root, proc = tree(tmp_path, self_cgroup, files)
    count, source = available_cpus(root=root, self_cgroup=proc)
    assert count == 1
    if len(os.sched_getaffinity(0)) > 1:
        assert source.startswith("CPU quota 0.5 (")
        assert str(root) in source


# -- black-box ---------------------------------------------------------------------------


def test_a_share_is_logged_with_where_the_limit_came_from(start_server: StartServer) -> None:
    server = start_server("supervised:app", "--workers", "2", "--max-memory", "80%", *FAST)
    wait_for_workers(server, 2)
    output = wait_for_log(server, "max_memory = 80%")
    pattern = (
        r"max_memory = 80% of (\d+) MiB, the (memory limit \(.+\)|machine's memory), "
        r"over 2 worker\(s\): (\d+) MiB each"
    )
    found = re.search(pattern, output)
    assert found, output
    assert int(found.group(3)) == int(int(found.group(1)) * MiB * 0.8) // 2 // MiB


def test_workers_that_cannot_fit_are_warned_about(start_server: StartServer) -> None:
    server = start_server("supervised:app", "--workers", "2", "--max-memory", "100000GiB", *FAST)
    wait_for_workers(server, 2)
    output = wait_for_log(server, "OOM killer")
    assert re.search(r"WARNING 2 worker\(s\) at max_memory 102400000 MiB plus the master", output)


@contextlib.contextmanager
def memory_cgroup(limit_bytes: int) -> Iterator[Path]:
    """A cgroup (v2 or v1) below this process's own, with a memory limit.

    Skips the test where none can be made.
    """
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    own = {fields[1]: fields[2] for fields in (line.split(":", 2) for line in lines)}
    if Path("/sys/fs/cgroup/cgroup.controllers").exists() and "" in own:
        parent, name = Path("/sys/fs/cgroup") / own[""].lstrip("/"), "memory.max"
    elif "memory" in own:
        parent, name = (
            Path("/sys/fs/cgroup/memory") / own["memory"].lstrip("/"),
            "memory.limit_in_bytes",
        )
    else:
        pytest.skip("no memory cgroup here")
    group = parent / f"asgid-test-{os.getpid()}"
    try:
        group.mkdir()
        (group / name).write_text(str(limit_bytes))
    except OSError as exc:
        with contextlib.suppress(OSError):
            group.rmdir()
        pytest.skip(f"cannot make a cgroup with a memory limit here: {exc}")
    try:
        yield group
    finally:
        with contextlib.suppress(OSError):
            group.rmdir()  # empty once the server's processes have exited


def test_a_share_of_the_cgroup_limit_recycles_a_big_worker(start_server: StartServer) -> None:
    with memory_cgroup(1024 * MiB) as group:
        procs = group / "cgroup.procs"

        def enter() -> None:
            procs.write_text(str(os.getpid()))

        server = start_server(
            "supervised:app", "--workers", "1", "--max-memory", "10%", *FAST, preexec_fn=enter
        )
        wait_for_workers(server, 1)
        output = wait_for_log(server, "max_memory = 10%")
        assert re.search(
            rf"10% of 1024 MiB, the memory limit \(.*{group.name}.*\), "
            r"over 1 worker\(s\): 102 MiB each",
            output,
        ), output
        big = int(get(server, "/grow?150", timeout=10))
        wait_until(lambda: get_pid(server) != big, 15)  # sampled every 5 s
        output = wait_for_log(server, rf"\(pid {big}\) uses \d+ MiB, above max_memory 102 MiB")
        server.stop()  # the group is empty again, and can go
