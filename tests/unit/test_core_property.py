"""Random histories for ``_core.Supervisor``: what holds after any sequence of events.

Hypothesis drives the core with spawns, readiness, heartbeats, late and
hung loops, crashes, boot failures, recycling, reloads (good and bad),
scaling and the passing of time, and checks after every step:

- every slot has a worker serving it or one on its way, and the only
  waits are the backoff after repeated failures to boot;
- a failed reload restores the previous state exactly (generation, worker
  count, slots), and once things settle every slot is served by exactly one
  worker of that generation;
- a successful reload leaves exactly one worker of the new generation per
  slot, and as many slots as it asked for.
"""

from __future__ import annotations

import os
import signal

import pytest

pytest.importorskip("hypothesis", reason="the property test needs hypothesis (the test extra)")
from hypothesis import given, settings
from hypothesis import strategies as st
from simulation import TIMEOUTS, Sim

from asgid.supervisor._core import Kill, ReloadDone, State

EVENTS = st.one_of(
    st.tuples(st.just("ready"), st.integers(0, 7)),
    st.tuples(st.just("crash"), st.integers(0, 7)),
    st.tuples(st.just("boot_fail"), st.integers(0, 7)),
    st.tuples(st.just("due"), st.integers(0, 7)),
    st.tuples(st.just("exit_drained"), st.integers(0, 7)),
    st.tuples(st.just("heartbeat"), st.just(0)),
    st.tuples(st.just("wait"), st.sampled_from([0.3, 1.5, 3.0, 6.0, 12.0])),
    st.tuples(st.just("reload"), st.integers(1, 4)),
    st.tuples(st.just("bad_reload"), st.integers(1, 4)),
    st.tuples(st.just("scale"), st.sampled_from([-1, 1])),
)


UP = [state for state in State if state.up]  # was READY: serving, late or hung


class History:
    """A ``Sim`` plus the facts the checks need: kills sent, reloads marked bad."""

    def __init__(self, count: int) -> None:
        self.sim = Sim(count)
        self.bad_generations: set[int] = set()
        self.before_reload: dict[int, tuple[int, int, list[int]]] = {}
        self.results: list[ReloadDone] = []
        self.sim.up()

    def snapshot(self) -> tuple[int, int, list[int]]:
        core = self.sim.core
        return core.generation, core.count, sorted(core.slots)

    def do(self, actions: list[object]) -> None:
        for action in actions:
            if isinstance(action, ReloadDone):
                self.results.append(action)
                if not action.success:
                    assert self.snapshot() == self.before_reload[action.generation]
                else:  # committed only once every slot serves the new generation
                    core = self.sim.core
                    for index in core.slots:
                        assert any(
                            w.slot == index and w.state.up and w.generation == action.generation
                            for w in core.workers.values()
                        ), f"slot {index} has no ready worker of generation {action.generation}"
            if isinstance(action, Kill) and action.signal == signal.SIGKILL:
                worker = self.sim.core.workers.get(action.pid)
                if worker is not None:  # the kill lands: the process is gone
                    self.do(self.sim.exited(action.pid, -signal.SIGKILL))

    def pids(self, *states: State) -> list[int]:
        return sorted(w.pid for w in self.sim.core.workers.values() if w.state in states)

    def pick(self, index: int, *states: State) -> int | None:
        pids = self.pids(*states)
        return pids[index % len(pids)] if pids else None

    def boot(self, pid: int) -> None:
        """The worker finishes booting: ready, or failing if its code is bad."""
        sim = self.sim
        if sim.core.workers[pid].generation in self.bad_generations:
            sim.core.boot_failed(pid, 4, "SyntaxError")
            self.do(sim.exited(pid, 4))
        else:
            self.do(sim.ready(pid))

    def step(self, kind: str, arg: float) -> None:
        sim, core = self.sim, self.sim.core
        if kind == "ready":
            pid = self.pick(int(arg), State.STARTING)
            if pid is not None:
                self.boot(pid)
        elif kind == "crash":
            pid = self.pick(int(arg), *UP)
            if pid is not None:
                self.do(sim.exited(pid, -signal.SIGKILL))
        elif kind == "boot_fail":
            pid = self.pick(int(arg), State.STARTING)
            if pid is not None:
                core.boot_failed(pid, 3, "startup failed")
                self.do(sim.exited(pid, 3))
        elif kind == "due":
            pid = self.pick(int(arg), *UP)
            if pid is not None:
                self.do(sim.do(core.due(pid, "max_requests", sim.now)))
        elif kind == "exit_drained":
            pid = self.pick(int(arg), State.DRAINING)
            if pid is not None:
                self.do(sim.exited(pid, 0))
        elif kind == "heartbeat":
            for pid in self.pids(*UP, State.DRAINING):
                core.heartbeat(pid, sim.now, {})
        elif kind == "wait":
            self.do(sim.advance(arg))
        elif kind in ("reload", "bad_reload"):
            # A failure goes back to the committed state, even from a reload
            # that replaced another still in progress.
            before = self.before_reload[core.pending.generation] if core.pending else None
            before = before or self.snapshot()
            actions = sim.do(core.reload(int(arg), sim.now))
            assert core.pending is not None
            self.before_reload[core.pending.generation] = before
            if kind == "bad_reload":
                self.bad_generations.add(core.pending.generation)
            self.do(actions)
        elif kind == "scale":
            self.do(sim.do(core.scale(int(arg), sim.now)))

    def check_covered(self) -> None:
        """Each slot is served, or has a worker on its way, queued or in backoff."""
        core = self.sim.core
        for index, slot in core.slots.items():
            serving = core.serving(index) is not None
            starting = any(
                w.slot == index and w.state is State.STARTING for w in core.workers.values()
            )
            planned = slot.respawn_at or core.queued(index)
            assert serving or starting or planned, f"slot {index} is abandoned"
            if slot.respawn_at and not serving:
                assert slot.failures >= 2, "only repeated boot failures wait"

    def settle(self) -> None:
        """Let every worker boot, drain and exit, and every backoff pass."""
        sim, core = self.sim, self.sim.core
        for _ in range(400):
            for pid in self.pids(State.STARTING):
                if pid in core.workers and core.workers[pid].state is State.STARTING:
                    self.boot(pid)
            for pid in self.pids(State.DRAINING):
                self.do(sim.exited(pid, 0))
            quiet = (
                core.pending is None
                and not self.pids(State.STARTING, State.DRAINING)
                and not any(s.respawn_at for s in core.slots.values())
                and not self.pids(State.HUNG)
            )
            if quiet:
                return
            self.step("heartbeat", 0)
            self.do(sim.advance(TIMEOUTS.backoff_cap))
        raise AssertionError("the supervisor never settled")


@settings(max_examples=int(os.environ.get("CORE_EXAMPLES", "300")), deadline=None)
@given(st.integers(1, 3), st.lists(EVENTS, max_size=40))
def test_random_histories_keep_every_slot_covered(
    count: int, events: list[tuple[str, float]]
) -> None:
    history = History(count)
    core = history.sim.core
    for kind, arg in events:
        history.step(kind, arg)
        history.check_covered()
    history.settle()
    history.check_covered()
    # Settled: one ready worker per slot, all of the committed generation.
    ready = [w for w in core.workers.values() if w.state.up]
    assert sorted(w.slot for w in ready) == sorted(core.slots)
    assert {w.generation for w in ready} == {core.generation}
    assert core.count == len(core.slots)
    for result in history.results:
        if result.success:
            assert result.generation not in history.bad_generations
