"""``Sim`` plays the master for ``_core.Supervisor``: events and ``now`` in, actions out.

It gives every ``Spawn`` a fresh pid and reports it spawned, so a unit test
reads as the story of a few workers and asserts on what the supervisor
decides. No processes, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from asgid.supervisor._core import Action, Drain, Kill, Log, Spawn, State, Supervisor, Timeouts

TIMEOUTS = Timeouts(
    heartbeat=10.0,
    late=5.0,
    boot=20.0,
    graceful=30.0,
    kill_grace=3.0,
    backoff_base=0.5,
    backoff_cap=4.0,
    boot_window=1.0,
)
A = TypeVar("A")


class Sim:
    def __init__(self, count: int = 2, timeouts: Timeouts = TIMEOUTS) -> None:
        self.core = Supervisor(count, timeouts)
        self.now = 1000.0
        self._pids = iter(range(100, 10_000))
        self.actions: list[Action] = []

    def do(self, actions: list[Action]) -> list[Action]:
        """Carry out ``actions`` the way the master does: each Spawn gets a pid."""
        for action in actions:
            if isinstance(action, Spawn):
                self.core.spawned(next(self._pids), action.slot, action.generation, self.now)
        self.actions += actions
        return actions

    def advance(self, seconds: float) -> list[Action]:
        self.now += seconds
        return self.do(self.core.tick(self.now))

    def start(self) -> list[Action]:
        return self.do(self.core.start())

    def ready(self, pid: int) -> list[Action]:
        return self.do(self.core.ready(pid, self.now))

    def exited(self, pid: int, status: int = 0) -> list[Action]:
        return self.do(self.core.exited(pid, status, self.now))

    def starting(self, slot: int | None = None) -> list[int]:
        return self._pids_in(State.STARTING, slot)

    def serving(self, slot: int | None = None) -> list[int]:
        return self._pids_in(State.READY, slot)

    def draining(self) -> list[int]:
        return self._pids_in(State.DRAINING, None)

    def _pids_in(self, state: State, slot: int | None) -> list[int]:
        return sorted(
            w.pid
            for w in self.core.workers.values()
            if w.state is state and (slot is None or w.slot == slot)
        )

    def up(self) -> list[int]:
        """Start every slot and make each worker ready; the serving pids."""
        self.start()
        for pid in self.starting():
            self.ready(pid)
        return self.serving()

    def heartbeat_all(self) -> None:
        for pid in self.serving():
            self.core.heartbeat(pid, self.now, {"requests": 1})


def of(kind: type[A], actions: Iterable[Action]) -> list[A]:
    """The actions of one kind, in order."""
    return [a for a in actions if isinstance(a, kind)]


def kills(actions: Iterable[Action]) -> list[tuple[int, int]]:
    return [(a.pid, a.signal) for a in of(Kill, actions)]


def drains(actions: Iterable[Action]) -> list[tuple[int, bool]]:
    """(pid, restart) of each Drain: restart means a successor takes over."""
    return [(a.pid, a.restart) for a in of(Drain, actions)]


def messages(actions: Iterable[Action]) -> str:
    return "\n".join(a.message for a in of(Log, actions))
