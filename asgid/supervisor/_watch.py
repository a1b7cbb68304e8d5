"""``--reload``: a watcher process that tells the master which files changed.

The master stays boring (no threads, no asyncio loop before it forks), so
the watching happens in a separate process that runs ``main(SPEC)``: it
watches with watchfiles when it is installed (the ``reload`` extra) and
polls modification times otherwise, groups each burst of changes (an
editor's save dance, a ``git checkout``) until ``delay`` seconds pass
without a new one, and writes one JSON line per burst to its stdout:
``{"changed": ["app/main.py", ...]}`` (and ``{"watching": [dirs]}`` once
it watches). The master reads those lines in its select loop and starts a
rolling reload, as for SIGHUP.

``PathFilter`` decides what counts, without touching the file system.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from ..config import Config

logger = logging.getLogger("asgid.error")

DEFAULT_INCLUDE = ("*.py",)
DEFAULT_EXCLUDE = (
    ".*",  # .git, .venv, .mypy_cache, .idea, editor swap files (.main.py.swp)
    "*~",
    "*.py[cod]",
    "__pycache__",
    "venv",
    "site-packages",
    "node_modules",
)
POLL_SECONDS = 1.0  # how often the fallback looks at modification times
MAX_GROUPING = 5.0  # a never-ending stream of changes still reloads this often


class PathFilter:
    """Which paths under the watched directories can trigger a reload.

    A path is excluded when a directory on its way (below the watched
    directory) matches an exclude pattern. Otherwise its name decides: a
    match with one of the user's include patterns wins over the default
    excludes (``--reload-include .env`` watches ``.env``), then excludes,
    then includes. The files in ``always`` (the config file, the env file)
    count whatever the patterns say.
    """

    def __init__(
        self, include: Iterable[str], exclude: Iterable[str], always: Iterable[str] = ()
    ) -> None:
        self.chosen = tuple(include)  # the user's: they beat the default excludes
        self.user_exclude = tuple(exclude)
        self.include = tuple(dict.fromkeys([*DEFAULT_INCLUDE, *include]))
        self.exclude = tuple(dict.fromkeys([*DEFAULT_EXCLUDE, *exclude]))
        self.always = frozenset(os.path.abspath(path) for path in always)

    def excluded(self, name: str) -> bool:
        return _matches(name, self.exclude)

    def __call__(self, path: str, root: str) -> bool:
        path = os.path.abspath(path)
        if path in self.always:
            return True
        relative = os.path.relpath(path, root)
        if relative.startswith(os.pardir):
            return False
        *parents, name = relative.split(os.sep)
        if any(self.excluded(part) for part in parents):
            return False
        if _matches(name, self.chosen) and not _matches(name, self.user_exclude):
            return True
        return not self.excluded(name) and _matches(name, self.include)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


@dataclass(frozen=True, slots=True)
class Spec:
    """What the watcher process watches (passed to it as JSON)."""

    dirs: tuple[str, ...]
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    always: tuple[str, ...]  # files watched by name, whatever the patterns
    delay: float

    @classmethod
    def from_config(cls, config: Config, config_path: str | None) -> Spec:
        settings = config.reload
        dirs = settings.dirs or (config.app.app_dir, ".")
        always = [path for path in (config_path, config.app.env_file) if path]
        return cls(
            dirs=_outermost([os.path.abspath(d) for d in dirs]),
            include=settings.include,
            exclude=settings.exclude,
            always=tuple(os.path.abspath(path) for path in always),
            delay=settings.delay,
        )

    def filter(self) -> PathFilter:
        return PathFilter(self.include, self.exclude, self.always)

    def roots(self) -> tuple[str, ...]:
        """The directories to watch: ``dirs``, plus those of ``always`` files outside them."""
        roots = list(self.dirs)
        for path in self.always:
            if not any(_inside(path, root) for root in roots):
                roots.append(os.path.dirname(path))
        return _outermost(roots)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _outermost(dirs: list[str]) -> tuple[str, ...]:
    """``dirs`` without duplicates and without those inside another one."""
    unique = sorted(dict.fromkeys(dirs), key=len)
    kept: list[str] = []
    for d in unique:
        if not any(_inside(d, k) for k in kept):
            kept.append(d)
    return tuple(kept)


# -- the master's side -------------------------------------------------------------


class Watcher:
    """The watcher process, as the master sees it: a pid and a pipe of JSON lines."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    def start(self) -> None:
        # -c, not -m: the package imports this module, and runpy would warn.
        entry = "import sys; from asgid.supervisor._watch import main; sys.exit(main(sys.argv))"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", entry, json.dumps(asdict(self.spec))],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        os.set_blocking(self.fileno(), False)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else -1

    def fileno(self) -> int:
        assert self.proc is not None
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def read(self) -> list[dict[str, list[str]]] | None:
        """What the watcher said since the last call; None once it is gone.

        ``{"watching": [dirs]}`` once it watches, then ``{"changed": [paths]}``
        for each burst of changes.
        """
        try:
            data = os.read(self.fileno(), 65536)
        except BlockingIOError:
            return []
        if not data:
            return None
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        events = []
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append({str(k): [str(p) for p in v] for k, v in event.items()})
        return events

    def stop(self) -> None:
        """Stop the watcher and wait for it (a second at most, then SIGKILL).

        Waiting here, not leaving it to ``subprocess``'s own later reaping,
        keeps that from ever waiting on a pid that now belongs to a worker.
        """
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=1.0)
        assert proc.stdout is not None
        proc.stdout.close()


# -- the watcher process ---------------------------------------------------------------


def _say(kind: str, items: Iterable[str]) -> None:
    sys.stdout.write(json.dumps({kind: list(items)}) + "\n")
    sys.stdout.flush()


def _report(paths: Iterable[str]) -> None:
    cwd = os.getcwd()
    _say("changed", sorted(os.path.relpath(p, cwd) if _inside(p, cwd) else p for p in set(paths)))


def _watch_files(spec: Spec, master: int) -> None:
    import watchfiles

    path_filter = spec.filter()
    roots = spec.roots()

    def wanted(change: watchfiles.Change, path: str) -> bool:
        return any(path_filter(path, root) for root in roots)

    watching = False
    for changes in watchfiles.watch(
        *roots,
        watch_filter=wanted,
        debounce=int(MAX_GROUPING * 1000),
        step=max(1, int(spec.delay * 1000)),
        rust_timeout=1000,  # wakes once a second to see whether the master is still there
        yield_on_timeout=True,
        raise_interrupt=False,
    ):
        if os.getppid() != master:
            return
        if not watching:  # the first yield: the watches are in place
            watching = True
            _say("watching", roots)
        if changes:
            _report(path for _, path in changes)


def _scan(roots: tuple[str, ...], path_filter: PathFilter) -> dict[str, tuple[float, int]]:
    """Modification time and size of every file that counts."""
    found: dict[str, tuple[float, int]] = {}
    for root in roots:
        for path in _walk(root, path_filter):
            if path_filter(path, root):
                with contextlib.suppress(OSError):
                    st = os.stat(path)
                    found[path] = (st.st_mtime, st.st_size)
    return found


def _walk(root: str, path_filter: PathFilter) -> Iterator[str]:
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not path_filter.excluded(d)]
        for name in files:
            yield os.path.join(directory, name)


def _poll(spec: Spec, master: int) -> None:
    path_filter = spec.filter()
    roots = spec.roots()
    seen = _scan(roots, path_filter)
    _say("watching", roots)
    while os.getppid() == master:
        time.sleep(POLL_SECONDS)
        current = _scan(roots, path_filter)
        if current == seen:
            continue
        burst_started = time.monotonic()
        while time.monotonic() - burst_started < MAX_GROUPING:  # until quiet for `delay`
            time.sleep(spec.delay)
            later = _scan(roots, path_filter)
            if later == current:
                break
            current = later
        changed = {p for p in current.keys() | seen.keys() if current.get(p) != seen.get(p)}
        seen = current
        if changed:
            _report(changed)


def main(argv: list[str]) -> int:
    data = json.loads(argv[1])
    spec = Spec(
        dirs=tuple(data["dirs"]),
        include=tuple(data["include"]),
        exclude=tuple(data["exclude"]),
        always=tuple(data["always"]),
        delay=float(data["delay"]),
    )
    master = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C: the master stops us
    import setproctitle

    setproctitle.setproctitle(f"asgid: watcher [{' '.join(spec.roots())}]")
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        print(
            f"asgid: watchfiles is not installed: polling for changes every {POLL_SECONDS:g}s "
            "(pip install 'asgid[reload]' for a faster, cheaper watcher)",
            file=sys.stderr,
            flush=True,
        )
        watch = _poll
    else:
        watch = _watch_files
    try:
        watch(spec, master)
    except BrokenPipeError:
        pass  # the master is gone
    return 0
