"""What ``asgid ctl`` relies on, without processes: the core's operator commands
(``scale_to``, ``recycle``, why a reload failed), the scrape's wait for fresh
counts (``Refresh``), the effective configuration as TOML with origins, and
where an ``auto`` control socket lives.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

import pytest

from asgid import _runtime
from asgid._wire import WorkerExit
from asgid.config._dump import render_toml, settings_with_origins
from asgid.config._load import load_config, load_config_with_origins
from asgid.supervisor._core import (
    Action,
    Drain,
    Reason,
    Refused,
    ReloadDone,
    Restarted,
    Spawn,
    State,
    Supervisor,
    Timeouts,
)
from asgid.supervisor._store import Refresh

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

A = TypeVar("A")


class Sim:
    """Plays the master: every Spawn gets a fresh pid."""

    def __init__(self, count: int = 2) -> None:
        self.core = Supervisor(count, Timeouts(boot_window=1.0))
        self.now = 1000.0
        self._pids = iter(range(100, 10_000))

    def do(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            if isinstance(action, Spawn):
                self.core.spawned(next(self._pids), action.slot, action.generation, self.now)
        return actions

    def pids(self, state: State) -> list[int]:
        return sorted(w.pid for w in self.core.workers.values() if w.state is state)

    def up(self) -> list[int]:
        self.do(self.core.start())
        for pid in self.pids(State.STARTING):
            self.do(self.core.ready(pid, self.now))
        self.now += 5  # past the boot window
        return self.pids(State.READY)


def of(kind: type[A], actions: Iterable[Action]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


# -- scale_to ----------------------------------------------------------------------


def test_scale_to_adds_slots_one_boot_at_a_time() -> None:
    sim = Sim(2)
    sim.up()
    actions = sim.do(sim.core.scale_to(4, sim.now))
    assert of(Spawn, actions) == [Spawn(2, 1)]  # one at a time, like every replacement
    assert sim.core.count == 4
    new = sim.pids(State.STARTING)
    actions = sim.do(sim.core.ready(new[0], sim.now))
    assert of(Spawn, actions) == [Spawn(3, 1)]


def test_scale_to_retires_the_highest_slots() -> None:
    sim = Sim(4)
    serving = sim.up()
    actions = sim.do(sim.core.scale_to(2, sim.now))
    assert sorted(d.pid for d in of(Drain, actions)) == serving[2:]
    assert of(Restarted, actions) == [Restarted(Reason.SCALE)] * 2
    assert sim.core.count == 2


@pytest.mark.parametrize("count", [0, -3])
def test_scale_to_below_one_is_refused(count: int) -> None:
    sim = Sim(2)
    sim.up()
    with pytest.raises(Refused, match="at least 1"):
        sim.core.scale_to(count, sim.now)
    assert sim.core.count == 2


def test_scale_to_during_a_reload_or_shutdown_is_refused() -> None:
    sim = Sim(2)
    sim.up()
    sim.do(sim.core.reload(2, sim.now))
    with pytest.raises(Refused, match="reload"):
        sim.core.scale_to(3, sim.now)
    sim.do(sim.core.shutdown(sim.now, graceful=True))
    with pytest.raises(Refused, match="shutting down"):
        sim.core.scale_to(3, sim.now)


# -- recycle -----------------------------------------------------------------------


def test_recycle_starts_the_new_worker_before_draining_the_old() -> None:
    sim = Sim(2)
    old = sim.up()[0]
    actions = sim.do(sim.core.recycle(old, sim.now))
    assert of(Spawn, actions) == [Spawn(0, 1)]
    assert of(Drain, actions) == []  # nothing drains before the new one is ready
    new = sim.pids(State.STARTING)[0]
    actions = sim.do(sim.core.ready(new, sim.now))
    assert of(Drain, actions) == [Drain(old, True)]
    assert of(Restarted, actions) == [Restarted(Reason.MANUAL)]


def test_recycle_twice_or_an_unknown_pid_is_refused() -> None:
    sim = Sim(2)
    old = sim.up()[0]
    sim.do(sim.core.recycle(old, sim.now))
    with pytest.raises(Refused, match="already being replaced"):
        sim.core.recycle(old, sim.now)
    with pytest.raises(Refused, match="no worker with pid 4242"):
        sim.core.recycle(4242, sim.now)
    starting = sim.pids(State.STARTING)[0]
    with pytest.raises(Refused, match="starting"):
        sim.core.recycle(starting, sim.now)


def test_slot_pid_names_the_serving_worker() -> None:
    sim = Sim(2)
    serving = sim.up()
    assert [sim.core.slot_pid(0), sim.core.slot_pid(1)] == serving
    with pytest.raises(Refused, match="no slot 7"):
        sim.core.slot_pid(7)


# -- why a reload failed -----------------------------------------------------------


@pytest.mark.parametrize("code", [WorkerExit.APP_LOAD_FAILED, WorkerExit.BOOT_FAILED])
def test_a_failed_reload_says_why_and_how(code: WorkerExit) -> None:
    sim = Sim(2)
    sim.up()
    sim.do(sim.core.reload(2, sim.now))
    new = sim.pids(State.STARTING)[0]
    sim.core.boot_failed(new, code, "could not import module 'app'")
    actions = sim.do(sim.core.exited(new, int(code), sim.now))
    (done,) = of(ReloadDone, actions)
    assert done == ReloadDone(False, 2)
    assert "could not import module 'app'" in done.reason
    assert done.code is code


# -- Refresh: a scrape waits for fresh counts ----------------------------------------


def test_refresh_goes_on_once_every_worker_answered() -> None:
    refresh, done = Refresh(), []
    seq = refresh.start([1, 2], deadline=10.0, then=lambda: done.append("a"))
    refresh.answered(1, seq)
    assert done == []
    refresh.answered(2, seq - 1)  # an answer to an older scrape does not count
    assert done == []
    refresh.answered(2, seq)
    assert done == ["a"]
    assert refresh.next_deadline() is None


def test_refresh_goes_on_when_a_worker_exits_or_at_the_deadline() -> None:
    refresh, done = Refresh(), []
    refresh.start([1, 2], deadline=10.0, then=lambda: done.append("a"))
    second = refresh.start([2], deadline=5.0, then=lambda: done.append("b"))
    refresh.gone(1)
    assert done == []
    assert refresh.next_deadline() == 5.0
    refresh.expire(4.9)
    assert done == []
    refresh.expire(5.0)
    assert done == ["b"]
    refresh.answered(2, second)  # a newer answer serves an older scrape too
    assert done == ["b", "a"]


def test_refresh_with_nobody_to_ask_goes_on_at_once() -> None:
    refresh, done = Refresh(), []
    refresh.start([], deadline=10.0, then=lambda: done.append("a"))
    assert done == ["a"]


# -- the effective configuration ----------------------------------------------------------


def test_config_dump_loads_back_and_names_each_origin(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        '[app]\ntarget = "main:app"\n\n[workers]\ncount = 3\n'
        '[server]\nssl_keyfile_password = "secret"\n'
        '[http]\nheaders = [["x-served-by", "asgid \\"é\\""]]\n'
    )
    config, origins = load_config_with_origins(
        str(path),
        {"workers.timeout": 7.0},
        environ={"ASGID_LOGGING_LEVEL": "debug"},
    )
    text = render_toml(config, origins)
    assert f"count = 3  # {path}:5\n" in text
    assert f'target = "main:app"  # {path}:2\n' in text
    assert "timeout = 7.0  # command line\n" in text
    assert 'level = "debug"  # $ASGID_LOGGING_LEVEL\n' in text
    assert "backlog = 2048  # default\n" in text
    assert "secret" not in text
    dumped = tmp_path / "dumped.toml"
    dumped.write_text(text.replace('"********"', '"secret"'))
    assert load_config(str(dumped), environ={}) == config
    rows = {row["key"]: row for row in settings_with_origins(config, origins)}
    assert rows["workers.count"] == {"key": "workers.count", "value": 3, "origin": f"{path}:5"}
    assert tomllib.loads(text)["http"]["headers"] == [["x-served-by", 'asgid "é"']]


# -- where an auto control socket lives -------------------------------------------------


@pytest.fixture(autouse=True)
def _no_system_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This machine's /run/asgid, if it has one, stays out of these tests."""
    monkeypatch.setattr(_runtime, "SYSTEM_DIR", str(tmp_path / "no-run-asgid"))


def test_auto_socket_is_named_after_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("")
    environ = {"XDG_RUNTIME_DIR": str(tmp_path / "run")}
    os.mkdir(tmp_path / "run", 0o700)
    path = _runtime.server_socket_path(str(config), environ)
    assert path.startswith(str(tmp_path / "run" / "asgid" / "server-"))
    assert os.stat(tmp_path / "run" / "asgid").st_mode & 0o777 == 0o700
    # The same file by another name is the same server.
    link = tmp_path / "link.toml"
    link.symlink_to(config)
    assert _runtime.socket_name(str(link)) == _runtime.socket_name(str(config))
    assert _runtime.client_socket_paths(str(config), environ) == []
    Path(path).touch()
    assert _runtime.client_socket_paths(str(link), environ) == [path]


def test_auto_socket_prefers_systemds_runtime_directory(tmp_path: Path) -> None:
    environ = {"RUNTIME_DIRECTORY": str(tmp_path), "XDG_RUNTIME_DIR": "/nonexistent"}
    path = _runtime.server_socket_path("/etc/asgid/server.toml", environ)
    assert os.path.dirname(path) == str(tmp_path)


def test_auto_socket_skips_a_directory_others_can_write(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "asgid").mkdir(parents=True)
    os.chmod(run / "asgid", 0o777)
    environ = {"XDG_RUNTIME_DIR": str(run)}
    path = _runtime.server_socket_path("/etc/asgid/server.toml", environ)
    assert not path.startswith(str(run))


# -- the client: finding the socket, reading commands, showing status -------------------


def test_ctl_finds_the_socket_from_the_file_the_flag_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asgid import _ctl
    from asgid._exceptions import ControlError

    monkeypatch.delenv(_ctl.ENV_SOCKET, raising=False)
    config = tmp_path / "server.toml"
    config.write_text('[control]\nsocket = "/run/x.sock"\n')
    assert _ctl.find_socket(str(config), None) == "/run/x.sock"
    assert _ctl.find_socket(str(config), "/given.sock") == "/given.sock"
    config.write_text("[workers]\ncount = = 3\n")  # broken: the auto path, still
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(ControlError, match="no control socket") as failed:
        _ctl.find_socket(str(config), None)
    assert failed.value.kind == "unreachable"
    config.write_text('[control]\nsocket = ""\n')
    with pytest.raises(ControlError, match="off"):
        _ctl.find_socket(str(config), None)
    with pytest.raises(ControlError, match="give -c FILE"):
        _ctl.find_socket(None, None)
    monkeypatch.setenv(_ctl.ENV_SOCKET, "/env.sock")
    assert _ctl.find_socket(None, None) == "/env.sock"


@pytest.mark.parametrize(
    ("text", "message"),
    [("4", {"count": 4}), ("+2", {"delta": 2}), ("-1", {"delta": -1})],
)
def test_ctl_scale_arguments(text: str, message: dict[str, int]) -> None:
    from asgid import _ctl

    assert _ctl._scale(text) == message


def test_ctl_status_table() -> None:
    from asgid import _ctl

    status = {
        "master": {
            "pid": 10,
            "uptime": 3725.0,
            "state": "reloading",
            "generation": 2,
            "pending_generation": 3,
            "config_path": "/etc/asgid/server.toml",
            "app": "main:app",
            "counts": {"starting": 1, "ready": 2, "draining": 0},
            "workers_wanted": 2,
            "now": 1000.0,
            "last_reload": {"at": 940.0, "generation": 2, "result": "succeeded", "reason": ""},
        },
        "workers": [
            {
                "slot": 0,
                "pid": 11,
                "generation": 2,
                "state": "ready",
                "age": 60.0,
                "requests": 1234,
                "connections": 3,
                "rss": 50 << 20,
                "lag": 0.0004,
                "last_heartbeat": 0.25,
            }
        ],
    }
    text = _ctl.format_status(status)
    assert text.splitlines()[:4] == [
        "master pid 10, up 1h02m, reloading, generation 2 (reloading to 3)",
        "config /etc/asgid/server.toml, app main:app",
        "workers: 2/2 ready, 1 starting",
        "last reload: succeeded 1m00s ago (generation 2)",
    ]
    assert text.splitlines()[-1].split() == [
        "0", "11", "2", "ready", "1m00s", "1234", "3", "50.0MiB", "0.4ms", "0.2s", "ago",
    ]  # fmt: skip
