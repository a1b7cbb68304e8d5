"""Where this process's cgroup limits live: the files from its own cgroup up to the root.

A container's limits are set on its cgroup, or on one above it (a Kubernetes
pod's, a systemd slice's), and each level's limit applies to everything
below. ``limit_files`` lists the candidates, innermost first, for cgroup v2
(the ``0::`` line of ``/proc/self/cgroup``) and for v1 (one hierarchy per
controller, mounted at ``<root>/<controllers>``). It only reads
``/proc/self/cgroup`` and tests paths; the callers read and parse the files.
Both locations are arguments, so tests hand in a fake tree.
"""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def limit_files(
    v2_name: str,
    v1_controller: str,
    v1_name: str,
    *,
    root: Path = CGROUP_ROOT,
    self_cgroup: Path = SELF_CGROUP,
) -> list[Path]:
    """Files that may limit this process, innermost first, those that exist only.

    ``v2_name`` (``"cpu.max"``) is looked up in the unified hierarchy;
    ``v1_name`` (``"cpu.cfs_quota_us"``) in the v1 hierarchy that has
    ``v1_controller`` (``"cpu"``). A v1 path that does not exist inside the
    mount (a container sees the host's path but its own cgroup at the mount's
    root) is skipped up to the levels that do.
    """
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return []
    found: list[Path] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # cgroup v2
            mount, name = root, v2_name
        elif v1_controller in controllers.split(","):
            mount, name = root / controllers, v1_name
            if not mount.exists():  # "cpu,cpuacct" is often also linked as "cpu"
                mount = root / v1_controller
        else:
            continue
        directory = mount / path.lstrip("/")
        for level in [directory, *directory.parents]:
            if level != mount and mount not in level.parents:
                break  # above the mount
            if (level / name).is_file():
                found.append(level / name)
    return found
