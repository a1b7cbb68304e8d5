"""The application's own prometheus_client metrics, across every worker that ever ran.

prometheus_client's multiprocess mode writes one file per process and type
in a directory asgid owns. The files of exited workers are merged into one
archive file per type, so scrapes stay fast and the directory stays small
however many workers have come and gone (client_python #275, #367), and the
master, often root, never follows a name a worker could have planted.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from typing import Any

from .._privileges import writable_by

logger = logging.getLogger("asgid.error")


def setup_multiproc_dir(owner: tuple[int, int] = (-1, -1)) -> tuple[str, bool]:
    """Point prometheus_client at a clean multiprocess directory.

    Must run before anything imports prometheus_client. Returns the directory
    and whether asgid created it (and so removes it at exit). ``owner`` is the
    workers' ``(uid, gid)`` (-1: the master's): a directory asgid creates is
    given to them, since each worker writes its own files there.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    owned = not path
    if owned:
        path = tempfile.mkdtemp(prefix="asgid-metrics-")
    os.makedirs(path, exist_ok=True)
    for name in glob.glob(os.path.join(path, "*.db")):
        os.unlink(name)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    give_to_workers(path, owned, owner)
    return path, owned


def give_to_workers(path: str, owned: bool, owner: tuple[int, int]) -> None:
    """Let workers running as ``owner`` write in the multiprocess directory.

    The directory asgid created is chowned to them; one the user named with
    ``PROMETHEUS_MULTIPROC_DIR`` is left as it is, with a warning if they
    cannot write there. The master never writes through a name in it that a
    worker could have planted (see ``_publish``).
    """
    uid, gid = owner
    if uid < 0 and gid < 0:
        return
    if owned:
        os.chown(path, uid, gid)
    elif not writable_by(os.stat(path), uid, gid):
        logger.warning(
            "workers (uid %d, gid %d) cannot write in PROMETHEUS_MULTIPROC_DIR %s: "
            "the application's prometheus_client metrics will fail",
            uid if uid >= 0 else os.getuid(),
            gid if gid >= 0 else os.getgid(),
            path,
        )


def merge_dead_files(directory: str, pid: int) -> None:
    """Fold a dead worker's prometheus_client files into per-type archive files.

    Counters, histograms and summaries (and gauges in sum/min/max modes) are
    added into ``<type>_archive.db``; per-process gauges of a dead process
    are dropped. prometheus_client's collector reads the archives like any
    other process's file, so totals are unchanged and the file count stays
    bounded by the live workers.
    """
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    multiprocess.mark_process_dead(pid, directory)
    for path in glob.glob(os.path.join(directory, f"*_{pid}.db")):
        name = os.path.basename(path)
        kind = name[: -len(f"_{pid}.db")]
        if kind in ("counter", "histogram", "summary", "gauge_sum"):
            mode = "sum"
        elif kind in ("gauge_max", "gauge_min", "gauge_mostrecent"):
            mode = kind.split("_")[1]
        else:
            os.unlink(path)  # per-process gauges: meaningless once the process is gone
            continue
        if not _has_header(path):  # killed before prometheus_client sized its file
            os.unlink(path)
            continue
        archive = os.path.join(directory, f"{kind}_archive.db")
        # Only gauges in mostrecent mode carry timestamps; a key's presence in the
        # archive, not its timestamp, says whether there is a value to combine with.
        archived: dict[str, tuple[float, float]] = {}
        if _has_header(archive):
            for key, value, timestamp, *_ in MmapedDict.read_all_values_from_file(archive):
                archived[key] = (value, timestamp)
        # (key, value, timestamp, position) in recent releases; older ones had no position.
        for key, value, timestamp, *_ in MmapedDict.read_all_values_from_file(path):
            if key not in archived:
                archived[key] = (value, timestamp)
                continue
            current, current_ts = archived[key]
            if mode == "sum":
                archived[key] = (current + value, timestamp)
            elif mode == "max":
                archived[key] = (max(current, value), timestamp)
            elif mode == "min":
                archived[key] = (min(current, value), timestamp)
            elif timestamp >= current_ts:
                archived[key] = (value, timestamp)
        _publish(archive, archived)
        os.unlink(path)


def _publish(path: str, values: dict[str, tuple[float, float]]) -> None:
    """Replace the archive file ``path`` with one holding ``values``.

    Workers may own the directory (``[process].user``), so the master, often
    root, never opens a name there that a worker could have made a symlink
    or a hard link: the file is written in a private temporary file,
    copied into a new file created with ``O_EXCL | O_NOFOLLOW``, and renamed
    over ``path`` (a rename replaces a link, never follows it). Readers see
    the old archive or the new one, never half of one.
    """
    from prometheus_client.mmap_dict import MmapedDict

    fd, scratch = tempfile.mkstemp(prefix="asgid-archive-", suffix=".db")
    os.close(fd)
    staging = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}")
    try:
        db = MmapedDict(scratch)
        try:
            for key, (value, timestamp) in values.items():
                db.write_value(key, value, timestamp)
        finally:
            db.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)  # left by a master that died here
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(scratch, "rb") as source, open(os.open(staging, flags, 0o644), "wb") as target:
            shutil.copyfileobj(source, target)
        os.replace(staging, path)
    finally:
        os.unlink(scratch)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)


def _has_header(path: str) -> bool:
    """Whether ``path`` is a regular file prometheus_client has sized (it creates it empty).

    Symbolic links are skipped: a worker could point one at a file only root can read.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size >= 8


class AppCollector:
    """The application's metrics: prometheus_client's multiprocess merge of the files.

    Like ``MultiProcessCollector``, except that a file a worker is creating right
    now (empty until prometheus_client sizes it, and holding no values yet) is
    skipped rather than failing the whole scrape.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Any]:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = [f for f in glob.glob(os.path.join(self.directory, "*.db")) if _has_header(f)]
        yield from MultiProcessCollector.merge(files, accumulate=True)


def remove_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
