"""``_core.Supervisor`` without processes: events and ``now`` in, actions out.

``Sim`` plays the master: it gives every ``Spawn`` a fresh pid and reports it
spawned, so a test reads as the story of a few workers and asserts on what
the supervisor decides.
"""

from __future__ import annotations

import signal

import pytest
from simulation import TIMEOUTS, Sim, drains, kills, messages, of

from asgid._wire import WorkerExit
from asgid.supervisor._core import (
    TRANSITIONS,
    Event,
    Exit,
    Notify,
    Reason,
    ReloadDone,
    Restarted,
    Spawn,
    State,
    StopListening,
    Timeouts,
    TransitionError,
    WorkerInfo,
)

# -- lifecycle table ------------------------------------------------------------------------


def test_the_lifecycle_table() -> None:
    assert TRANSITIONS == {
        (State.STARTING, Event.READY): State.READY,
        (State.STARTING, Event.DRAIN): State.DRAINING,
        (State.STARTING, Event.EXIT): State.EXITED,
        (State.READY, Event.LATE): State.LATE,
        (State.READY, Event.HANG): State.HUNG,
        (State.READY, Event.DRAIN): State.DRAINING,
        (State.READY, Event.EXIT): State.EXITED,
        (State.LATE, Event.HANG): State.HUNG,
        (State.LATE, Event.DRAIN): State.DRAINING,
        (State.LATE, Event.EXIT): State.EXITED,
        (State.HUNG, Event.DRAIN): State.DRAINING,
        (State.HUNG, Event.EXIT): State.EXITED,
        (State.DRAINING, Event.HANG): State.DRAINING,
        (State.DRAINING, Event.DRAIN): State.DRAINING,
        (State.DRAINING, Event.EXIT): State.EXITED,
    }


def test_every_state_is_in_the_table() -> None:
    reachable = {state for pair, state in TRANSITIONS.items()} | {state for state, _ in TRANSITIONS}
    assert reachable == set(State)


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (State.READY, Event.READY),
        (State.DRAINING, Event.READY),
        (State.EXITED, Event.READY),
        (State.EXITED, Event.DRAIN),
        (State.EXITED, Event.EXIT),
        (State.STARTING, Event.LATE),
        (State.STARTING, Event.HANG),
        (State.LATE, Event.LATE),
        (State.HUNG, Event.HANG),
    ],
)
def test_illegal_transitions_raise(state: State, event: Event) -> None:
    worker = WorkerInfo(pid=7, slot=0, generation=1, started=0.0, state=state)
    match = f"worker 7: cannot {event.value} while {state.value}"
    with pytest.raises(TransitionError, match=match):
        worker.move(event)
    assert worker.state is state


# -- start and ready ----------------------------------------------------------------------------


def test_start_spawns_every_slot() -> None:
    sim = Sim(3)
    assert sim.start() == [Spawn(0, 1), Spawn(1, 1), Spawn(2, 1)]
    assert len(sim.starting()) == 3
    assert sim.core.counts() == {"starting": 3, "ready": 0, "draining": 0}


def test_ready_is_notified_once_every_worker_is_ready() -> None:
    sim = Sim(2)
    sim.start()
    first, second = sim.starting()
    assert of(Notify, sim.ready(first)) == []
    assert sim.core.status() == "1/2 workers ready, 1 starting"
    assert of(Notify, sim.ready(second)) == [Notify("READY", "2/2 workers ready")]
    assert sim.core.ever_ready
    # Only once: a later replacement does not announce READY again.
    (pid,) = sim.serving(0)
    sim.exited(pid, -9)
    (new,) = sim.starting(0)
    assert of(Notify, sim.ready(new)) == []


def test_ready_twice_or_from_a_stranger_is_ignored() -> None:
    sim = Sim(1)
    (pid,) = sim.up()
    assert sim.ready(pid) == []
    assert sim.ready(4242) == []
    assert sim.exited(4242) == []


def test_next_deadline_follows_boot_heartbeat_and_kill() -> None:
    sim = Sim(1)
    assert sim.core.next_deadline() is None
    sim.start()
    assert sim.core.next_deadline() == sim.now + TIMEOUTS.boot
    (pid,) = sim.starting()
    sim.ready(pid)
    assert sim.core.next_deadline() == sim.now + TIMEOUTS.late
    sim.now += 4
    sim.core.heartbeat(pid, sim.now, {})
    assert sim.core.next_deadline() == sim.now + TIMEOUTS.late
    sim.advance(TIMEOUTS.late + 0.5)  # late: a stand-in starts; next, the hang deadline
    assert sim.core.next_deadline() == sim.now - TIMEOUTS.late - 0.5 + TIMEOUTS.heartbeat


# -- crashes and backoff ------------------------------------------------------------------------


def test_a_worker_that_served_is_replaced_at_once_however_often_it_dies() -> None:
    sim = Sim(1)
    (pid,) = sim.up()
    for _ in range(5):
        sim.now += TIMEOUTS.boot_window + 1  # it served for a while
        actions = sim.exited(pid, -signal.SIGKILL)
        assert of(Restarted, actions) == [Restarted(Reason.CRASH)]
        assert f"worker 0 (pid {pid}) died (signal SIGKILL)" in messages(actions)
        assert of(Spawn, actions) == [Spawn(0, 1)]  # no backoff: it was not a boot failure
        (pid,) = sim.starting()
        sim.ready(pid)
    assert sim.core.slots[0].failures == 0


def test_failures_to_boot_are_retried_at_once_then_with_exponential_backoff() -> None:
    sim = Sim(1)
    (pid,) = sim.up()
    sim.now += TIMEOUTS.boot_window + 1
    sim.exited(pid, -signal.SIGKILL)
    delays = []
    for attempt in range(7):
        (pid,) = sim.starting()
        if attempt % 2:  # dying right after READY counts as failing to boot too
            sim.ready(pid)
            sim.now += TIMEOUTS.boot_window / 2
        actions = sim.exited(pid, 1)
        spawns = of(Spawn, actions)
        if attempt == 0:
            assert spawns == [Spawn(0, 1)]  # the first failure: at once
            continue
        assert spawns == []
        respawn_at = sim.core.slots[0].respawn_at
        delays.append(respawn_at - sim.now)
        assert f"retrying in {delays[-1]:.1f}s" in messages(actions)
        assert sim.core.next_deadline() == respawn_at
        assert of(Spawn, sim.advance(delays[-1] - 0.01)) == []
        assert of(Spawn, sim.advance(0.01)) == [Spawn(0, 1)]
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]  # doubling, capped at backoff_cap


def test_a_worker_that_serves_past_the_boot_window_resets_the_backoff() -> None:
    sim = Sim(1)
    (pid,) = sim.up()
    sim.now += TIMEOUTS.boot_window + 1
    sim.exited(pid, 1)
    for _ in range(2):
        (pid,) = sim.starting()
        sim.exited(pid, 3)
        sim.advance(sim.core.slots[0].respawn_at - sim.now)
    assert sim.core.slots[0].failures == 2
    (pid,) = sim.starting()
    sim.ready(pid)
    sim.now += TIMEOUTS.boot_window
    actions = sim.exited(pid, -signal.SIGSEGV)
    assert of(Spawn, actions) == [Spawn(0, 1)]  # immediate again
    assert sim.core.slots[0].failures == 0


def test_a_crash_while_stopping_is_not_replaced() -> None:
    sim = Sim(2)
    first, second = sim.up()
    sim.do(sim.core.shutdown(sim.now, graceful=True))
    assert of(Spawn, sim.exited(first, -9)) == []
    assert of(Exit, sim.exited(second, 0)) == [Exit(0)]


# -- boot failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "expected"), [(4, 4), (3, 3), (0, 3)])
def test_a_boot_failure_before_anything_served_exits(code: int, expected: int) -> None:
    sim = Sim(2)
    sim.start()
    first, second = sim.starting()
    if code:
        sim.core.boot_failed(first, code, "could not import module 'nope'")
    actions = sim.exited(first, code or -signal.SIGKILL)
    assert kills(actions) == [(second, signal.SIGQUIT)]
    (exit_,) = of(Exit, actions)
    assert exit_.code == expected
    if code:
        assert exit_.message == "could not import module 'nope'"
    else:
        assert exit_.message == "worker exited during boot (signal SIGKILL)"
    assert of(Spawn, actions) == []


def test_a_worker_that_does_not_boot_in_time_is_killed() -> None:
    sim = Sim(1)
    sim.start()
    (pid,) = sim.starting()
    assert kills(sim.advance(TIMEOUTS.boot - 1)) == []
    assert kills(sim.advance(2)) == [(pid, signal.SIGKILL)]
    (exit_,) = of(Exit, sim.exited(pid, -signal.SIGKILL))
    assert exit_ == Exit(3, f"not ready within {TIMEOUTS.boot:g}s")


def test_a_boot_failure_after_serving_backs_off() -> None:
    sim = Sim(1)
    (pid,) = sim.up()
    sim.exited(pid, -9)
    (pid,) = sim.starting()
    sim.core.boot_failed(pid, 4, "SyntaxError")
    actions = sim.exited(pid, 4)
    assert of(Exit, actions) == []
    assert "failed to boot: SyntaxError" in messages(actions)
    assert sim.core.slots[0].respawn_at == sim.now + 1.0


# -- hangs --------------------------------------------------------------------------------------


def test_a_late_worker_gets_a_stand_in_then_sigabrt_then_sigkill() -> None:
    sim = Sim(2)
    hung, other = sim.up()
    sim.advance(TIMEOUTS.late / 2)
    sim.core.heartbeat(other, sim.now, {})
    actions = sim.advance(TIMEOUTS.late / 2 + 0.1)
    assert of(Spawn, actions) == [Spawn(0, 1)]  # late: its stand-in boots at once
    assert kills(actions) == []  # it may still be finishing work
    assert "sent no heartbeat for 5.1s: starting its replacement" in messages(actions)
    (stand_in,) = sim.starting(0)
    sim.core.heartbeat(other, sim.now, {})
    actions = sim.advance(TIMEOUTS.heartbeat - TIMEOUTS.late)
    assert kills(actions) == [(hung, signal.SIGABRT)]  # a stack dump
    assert of(Spawn, actions) == []  # the stand-in is on its way
    assert "sent no heartbeat for 10.1s" in messages(actions)
    assert kills(sim.advance(TIMEOUTS.kill_grace - 0.1)) == []
    assert kills(sim.advance(0.1)) == [(hung, signal.SIGKILL)]
    actions = sim.ready(stand_in)
    assert drains(actions) == [(hung, True)]
    assert of(Restarted, actions) == [Restarted(Reason.HANG)]
    actions = sim.exited(hung, -signal.SIGKILL)
    assert of(Spawn, actions) == []
    assert sim.serving() == sorted([stand_in, other])


def test_a_late_worker_that_recovers_is_still_replaced_new_before_old() -> None:
    sim = Sim(1)
    (slow,) = sim.up()
    sim.advance(TIMEOUTS.late + 0.1)
    (stand_in,) = sim.starting()
    sim.core.heartbeat(slow, sim.now, {})  # its loop runs again
    assert kills(sim.advance(TIMEOUTS.heartbeat)) == []
    assert drains(sim.ready(stand_in)) == [(slow, True)]
    assert sim.serving() == [stand_in]


def test_a_hung_worker_is_replaced_when_late_detection_is_off() -> None:
    sim = Sim(1, Timeouts(heartbeat=10.0, late=0.0))
    (hung,) = sim.up()
    assert of(Spawn, sim.advance(9.0)) == []
    actions = sim.advance(1.1)
    assert kills(actions) == [(hung, signal.SIGABRT)]
    assert of(Spawn, actions) == [Spawn(0, 1)]


def test_a_hung_worker_that_dies_before_its_replacement_is_ready() -> None:
    sim = Sim(1)
    (hung,) = sim.up()
    sim.advance(TIMEOUTS.heartbeat + 1)
    (replacement,) = sim.starting()
    actions = sim.exited(hung, -signal.SIGABRT)
    assert of(Restarted, actions) == [Restarted(Reason.HANG)]
    assert of(Spawn, actions) == []  # the replacement is on its way
    sim.ready(replacement)
    assert sim.serving() == [replacement]


def test_a_draining_worker_whose_loop_blocks_is_killed() -> None:
    sim = Sim(1, Timeouts(heartbeat=10.0, graceful=60.0))
    (old,) = sim.up()
    sim.do(sim.core.due(old, Reason.MAX_REQUESTS, sim.now))
    (new,) = sim.starting()
    sim.core.heartbeat(old, sim.now, {})
    sim.ready(new)
    sim.core.heartbeat(new, sim.now + 10, {})
    actions = sim.advance(10.1)
    assert kills(actions) == [(old, signal.SIGABRT)]  # not after graceful (60 s)
    assert of(Spawn, actions) == []


def test_heartbeats_keep_a_worker_alive() -> None:
    sim = Sim(1)
    sim.up()
    for _ in range(10):
        sim.now += TIMEOUTS.heartbeat - 1
        sim.heartbeat_all()
        assert kills(sim.advance(0)) == []


# -- reload -------------------------------------------------------------------------------------


def test_reload_replaces_one_slot_at_a_time_new_before_old() -> None:
    sim = Sim(3)
    old = sim.up()
    actions = sim.do(sim.core.reload(3, sim.now))
    assert of(Notify, actions)[0].state == "RELOADING"
    assert of(Spawn, actions) == [Spawn(0, 2)]  # one at a time
    assert kills(actions) == []  # nothing old goes before its successor is ready
    new = []
    for slot in range(3):
        (pid,) = sim.starting(slot)
        new.append(pid)
        sim.now += 0.5
        actions = sim.ready(pid)
        assert drains(actions) == [(old[slot], True)]
        assert of(Restarted, actions) == [Restarted(Reason.RELOAD)]
        if slot < 2:
            assert of(Spawn, actions) == [Spawn(slot + 1, 2)]
            assert of(ReloadDone, actions) == []
    assert of(ReloadDone, actions) == [ReloadDone(True, 2)]
    assert of(Notify, actions) == [
        Notify("READY", "3/3 workers ready, 3 draining; last reload succeeded")
    ]
    assert sim.draining() == old
    for pid in old:
        assert "drained and exited" in messages(sim.exited(pid, 0))
    assert sim.serving() == new
    assert {w.generation for w in sim.core.workers.values()} == {2}


def test_reload_aborts_when_a_new_worker_fails_to_boot() -> None:
    sim = Sim(2)
    old = sim.up()
    sim.do(sim.core.reload(2, sim.now))
    (new,) = sim.starting(0)
    sim.core.boot_failed(new, 4, "error while importing 'app': SyntaxError")
    actions = sim.exited(new, 4)
    assert "reload failed" in messages(actions)
    assert "SyntaxError" in messages(actions)
    assert of(ReloadDone, actions) == [ReloadDone(False, 2)]
    assert of(Notify, actions) == [Notify("READY", "2/2 workers ready; last reload failed")]
    assert kills(actions) == []
    assert of(Spawn, actions) == []
    assert of(Exit, actions) == []
    assert sim.serving() == old  # the old workers keep serving, same pids
    assert not sim.core.reloading
    # Nothing left over: the next reload starts from scratch.
    actions = sim.do(sim.core.reload(2, sim.now))
    assert of(Spawn, actions) == [Spawn(0, 3)]


def test_reload_can_change_the_worker_count() -> None:
    sim = Sim(2)
    old = sim.up()
    sim.do(sim.core.reload(3, sim.now))
    for _ in range(3):
        (pid,) = sim.starting()
        sim.ready(pid)
    for pid in old:
        sim.exited(pid)
    assert len(sim.serving()) == 3
    assert sim.core.count == 3
    assert not sim.core.reloading


def test_a_second_reload_during_a_reload_replaces_every_worker_again() -> None:
    sim = Sim(2)
    sim.up()
    sim.do(sim.core.reload(2, sim.now))
    (first_new,) = sim.starting(0)
    sim.do(sim.core.reload(2, sim.now))  # SIGHUP again before the first finished
    for _ in range(10):
        starting = sim.starting()
        if not starting:
            break
        for pid in starting:
            sim.ready(pid)
        for pid in sim.draining():
            sim.exited(pid)
    assert not sim.core.reloading
    assert len(sim.serving()) == 2
    assert {sim.core.workers[pid].generation for pid in sim.serving()} == {3}
    assert first_new not in sim.serving()


def test_reload_while_a_crashed_worker_restarts_keeps_one_worker_per_slot() -> None:
    sim = Sim(2)
    first, _ = sim.up()
    sim.exited(first, -9)
    (respawn,) = sim.starting(0)  # booting with the old code when SIGHUP comes
    sim.do(sim.core.reload(2, sim.now))
    for _ in range(10):
        starting = sim.starting()
        if not starting:
            break
        for pid in starting:
            sim.ready(pid)
        for pid in sim.draining():
            sim.exited(pid)
    assert len(sim.serving(0)) == 1
    assert len(sim.serving(1)) == 1
    assert {sim.core.workers[pid].generation for pid in sim.serving()} == {2}
    assert respawn not in sim.serving()


def test_reload_while_stopping_is_ignored() -> None:
    sim = Sim(1)
    sim.up()
    sim.do(sim.core.shutdown(sim.now, graceful=True))
    assert sim.core.reload(1, sim.now) == []


# -- recycling --------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", [Reason.MAX_REQUESTS, Reason.MEMORY])
def test_a_due_worker_is_replaced_new_before_old(reason: str) -> None:
    sim = Sim(2)
    old, other = sim.up()
    actions = sim.do(sim.core.due(old, reason, sim.now))
    assert f"is due for replacement: {reason}" in messages(actions)
    assert of(Spawn, actions) == [Spawn(0, 1)]
    assert kills(actions) == []
    assert sim.do(sim.core.due(old, reason, sim.now)) == []  # asked again: nothing new
    (new,) = sim.starting(0)
    actions = sim.ready(new)
    assert drains(actions) == [(old, True)]
    assert of(Restarted, actions) == [Restarted(reason)]
    assert sim.do(sim.core.due(old, reason, sim.now)) == []  # draining: nothing new
    sim.exited(old, 0)
    assert sim.serving() == sorted([new, other])


def test_due_workers_are_replaced_one_at_a_time() -> None:
    sim = Sim(2)
    first, second = sim.up()
    sim.do(sim.core.due(first, Reason.MAX_REQUESTS, sim.now))
    assert of(Spawn, sim.do(sim.core.due(second, Reason.MAX_REQUESTS, sim.now))) == []
    (new,) = sim.starting()
    assert of(Spawn, sim.ready(new)) == [Spawn(1, 1)]


def test_a_replacement_that_fails_to_boot_keeps_the_old_worker_and_retries() -> None:
    sim = Sim(1)
    (old,) = sim.up()
    sim.do(sim.core.due(old, Reason.MAX_REQUESTS, sim.now))
    (new,) = sim.starting()
    actions = sim.exited(new, 3)
    assert "keeping the old worker" in messages(actions)
    assert kills(actions) == []
    assert sim.serving() == [old]
    assert of(Spawn, actions) == [Spawn(0, 1)]  # the first retry: at once
    (new,) = sim.starting()
    actions = sim.exited(new, 3)
    retry = sim.core.slots[0].respawn_at - sim.now
    assert retry > 0
    assert of(Spawn, actions) == []
    assert sim.do(sim.core.due(old, Reason.MAX_REQUESTS, sim.now)) == []  # the retry is pending
    assert of(Spawn, sim.advance(retry)) == [Spawn(0, 1)]
    (new,) = sim.starting()
    assert drains(sim.ready(new)) == [(old, True)]


# -- scaling ----------------------------------------------------------------------------------


def test_scale_up_and_down() -> None:
    sim = Sim(2)
    first, second = sim.up()
    actions = sim.do(sim.core.scale(+1, sim.now))
    assert of(Spawn, actions) == [Spawn(2, 1)]
    (third,) = sim.starting(2)
    sim.ready(third)
    assert sim.core.count == 3
    actions = sim.do(sim.core.scale(-1, sim.now))
    assert drains(actions) == [(third, True)]
    assert of(Restarted, actions) == [Restarted(Reason.SCALE)]
    assert sim.core.count == 2
    assert 2 not in sim.core.slots
    sim.exited(third, 0)
    assert sim.serving() == [first, second]
    sim.do(sim.core.scale(-1, sim.now))
    assert "not scaling below 1 worker" in messages(sim.do(sim.core.scale(-1, sim.now)))
    assert sim.core.count == 1


def test_scale_down_of_a_worker_still_starting_does_not_stall_replacements() -> None:
    sim = Sim(1)
    (first,) = sim.up()
    sim.do(sim.core.scale(+1, sim.now))
    (booting,) = sim.starting(1)
    actions = sim.do(sim.core.scale(-1, sim.now))  # TTIN, then TTOU at once
    assert drains(actions) == [(booting, True)]
    sim.ready(booting)
    sim.exited(booting, 0)
    # Later replacements still happen.
    assert of(Spawn, sim.do(sim.core.due(first, Reason.MAX_REQUESTS, sim.now))) == [Spawn(0, 1)]


# -- shutdown -----------------------------------------------------------------------------------


def test_graceful_shutdown_drains_then_kills_what_is_left() -> None:
    sim = Sim(2)
    first, second = sim.up()
    actions = sim.do(sim.core.shutdown(sim.now, graceful=True))
    assert of(Notify, actions) == [Notify("STOPPING", "stopping")]
    assert of(StopListening, actions) == [StopListening()]
    assert sorted(drains(actions)) == [(first, False), (second, False)]
    assert of(Exit, sim.exited(first, 0)) == []
    deadline = sim.now + TIMEOUTS.graceful + TIMEOUTS.kill_grace
    while sim.now < deadline - 1:  # its loop runs: it is draining, not hung
        sim.core.heartbeat(second, sim.now, {})
        assert kills(sim.advance(1)) == []
    sim.core.heartbeat(second, sim.now, {})
    assert kills(sim.advance(deadline - sim.now)) == [(second, signal.SIGKILL)]
    assert of(Exit, sim.exited(second, -signal.SIGKILL)) == [Exit(0)]


def test_immediate_shutdown_quits_at_once() -> None:
    sim = Sim(2)
    first, second = sim.up()
    actions = sim.do(sim.core.shutdown(sim.now, graceful=False))
    assert sorted(kills(actions)) == [(first, signal.SIGQUIT), (second, signal.SIGQUIT)]
    assert kills(sim.advance(TIMEOUTS.kill_grace)) == [
        (first, signal.SIGKILL),
        (second, signal.SIGKILL),
    ]


def test_graceful_then_immediate_shutdown() -> None:
    sim = Sim(1)
    (pid,) = sim.up()
    sim.do(sim.core.shutdown(sim.now, graceful=True))
    actions = sim.do(sim.core.shutdown(sim.now, graceful=False))
    assert of(Notify, actions) == []  # STOPPING was said once
    assert kills(actions) == [(pid, signal.SIGQUIT)]


def test_shutdown_drains_replacements_and_spawns_nothing() -> None:
    sim = Sim(1)
    (old,) = sim.up()
    sim.do(sim.core.due(old, Reason.MAX_REQUESTS, sim.now))
    (new,) = sim.starting()
    actions = sim.do(sim.core.shutdown(sim.now, graceful=True))
    assert drains(actions) == [(old, False)]
    assert kills(actions) == [(new, signal.SIGQUIT)]  # booting: nothing to finish
    assert sim.ready(new) == []
    assert of(Spawn, sim.exited(new, 0)) == []
    assert of(Exit, sim.exited(old, 0)) == [Exit(0)]


def test_shutdown_with_no_workers_exits_at_once() -> None:
    sim = Sim(1)
    (pid,) = sim.up()
    sim.exited(pid, 1)
    (pid,) = sim.starting()
    sim.ready(pid)
    sim.exited(pid, 1)  # now in backoff: no worker at all
    assert sim.core.live() == []
    actions = sim.do(sim.core.shutdown(sim.now, graceful=True))
    assert of(Exit, actions) == [Exit(0)]
    assert of(Spawn, sim.advance(60)) == []


def test_an_old_worker_failing_to_boot_during_a_reload_does_not_abort_it() -> None:
    sim = Sim(2)
    first, _ = sim.up()
    sim.exited(first, -9)
    (respawn,) = sim.starting(0)  # the old code, booting when SIGHUP comes
    sim.do(sim.core.reload(2, sim.now))
    new = [pid for pid in sim.starting(0) if pid != respawn]
    assert len(new) == 1
    sim.core.boot_failed(respawn, 4, "SyntaxError")
    actions = sim.exited(respawn, 4)
    assert of(ReloadDone, actions) == []
    assert of(Spawn, actions) == []  # the new worker covers the slot
    assert sim.core.reloading
    sim.ready(new[0])
    (second,) = sim.starting(1)
    actions = sim.ready(second)
    assert of(ReloadDone, actions) == [ReloadDone(True, 2)]


# -- reloads as one pending change ---------------------------------------------------------


def test_a_failed_reload_moves_slots_already_replaced_back() -> None:
    sim = Sim(2)
    old = sim.up()
    sim.do(sim.core.reload(2, sim.now))
    (first_new,) = sim.starting(0)
    sim.ready(first_new)  # slot 0 now runs the new code, its old worker drains
    (second_new,) = sim.starting(1)
    sim.core.boot_failed(second_new, 4, "SyntaxError")
    actions = sim.exited(second_new, 4)
    assert of(ReloadDone, actions) == [ReloadDone(False, 2)]
    assert of(Spawn, actions) == [Spawn(0, 1)]  # slot 0 goes back, new before old
    assert sim.core.generation == 1
    assert sim.core.pending is None
    (back,) = sim.starting(0)
    assert drains(sim.ready(back)) == [(first_new, True)]
    assert sim.serving() == sorted([back, old[1]])


def test_a_reload_to_fewer_workers_retires_slots_when_it_commits() -> None:
    sim = Sim(3)
    old = sim.up()
    actions = sim.do(sim.core.reload(1, sim.now))
    assert drains(actions) == []  # nothing retires before the new code serves
    (new,) = sim.starting(0)
    actions = sim.ready(new)
    assert sorted(drains(actions)) == [(pid, True) for pid in old]
    assert of(ReloadDone, actions) == [ReloadDone(True, 2)]
    assert sim.core.count == 1
    assert sorted(sim.core.slots) == [0]


def test_a_failed_reload_to_more_workers_retires_the_slots_it_added() -> None:
    sim = Sim(1)
    (old,) = sim.up()
    sim.do(sim.core.reload(3, sim.now))
    assert sim.core.count == 3
    (new,) = sim.starting(0)
    sim.core.boot_failed(new, 4, "ImportError")
    actions = sim.exited(new, 4)
    assert of(ReloadDone, actions) == [ReloadDone(False, 2)]
    assert sim.core.count == 1
    assert sim.serving() == [old]


def test_scaling_waits_for_a_reload_to_finish() -> None:
    sim = Sim(1)
    sim.up()
    sim.do(sim.core.reload(1, sim.now))
    actions = sim.do(sim.core.scale(+1, sim.now))
    assert "not scaling while a reload is in progress" in messages(actions)
    assert sim.core.count == 1


def test_one_stand_in_boots_at_a_time_when_every_loop_is_late() -> None:
    sim = Sim(3)
    sim.up()
    actions = sim.advance(TIMEOUTS.late + 0.1)  # a starved machine: every heartbeat is late
    assert len(of(Spawn, actions)) == 1
    (stand_in,) = sim.starting()
    sim.ready(stand_in)
    assert len(of(Spawn, sim.advance(0.1))) == 1  # the next one, once the first is up


def test_shutdown_delay_keeps_serving_then_drains() -> None:
    sim = Sim(2, Timeouts(heartbeat=10.0, shutdown_delay=5.0))
    first, second = sim.up()
    actions = sim.do(sim.core.shutdown(sim.now, graceful=True))
    assert of(StopListening, actions) == []  # still serving, but not ready
    assert drains(actions) == []
    assert sim.core.leaving_at == sim.now + 5.0
    assert sim.core.next_deadline() <= sim.now + 5.0
    assert sim.core.reload(2, sim.now) == []  # leaving: no reloads, no scaling
    for pid in (first, second):
        sim.core.heartbeat(pid, sim.now + 4.9, {})
    assert drains(sim.advance(4.9)) == []
    actions = sim.advance(0.1)
    assert of(StopListening, actions) == [StopListening()]
    assert sorted(drains(actions)) == [(first, False), (second, False)]


def test_a_second_sigterm_skips_the_shutdown_delay() -> None:
    sim = Sim(1, Timeouts(shutdown_delay=30.0))
    (pid,) = sim.up()
    sim.do(sim.core.shutdown(sim.now, graceful=True))
    actions = sim.do(sim.core.shutdown(sim.now + 1, graceful=True))
    assert drains(actions) == [(pid, False)]


def test_a_new_worker_dying_right_after_ready_rolls_the_reload_back() -> None:
    sim = Sim(2)
    old = sim.up()
    sim.do(sim.core.reload(2, sim.now))
    (new,) = sim.starting(0)
    assert drains(sim.ready(new)) == [(old[0], True)]  # slot 0 moved on
    sim.now += TIMEOUTS.boot_window / 2
    actions = sim.exited(new, -signal.SIGSEGV)  # the new code crashes at once
    assert of(ReloadDone, actions) == [ReloadDone(False, 2)]
    assert of(Spawn, actions) == [Spawn(0, 1)]  # slot 0 gets the old code back
    assert sim.core.generation == 1


def test_a_reload_takes_over_a_replacement_waiting_in_backoff() -> None:
    sim = Sim(1)
    (old,) = sim.up()
    sim.do(sim.core.due(old, Reason.MAX_REQUESTS, sim.now))
    for _ in range(2):  # the committed code no longer boots: retried, then backoff
        (new,) = sim.starting()
        sim.exited(new, 3)
    assert sim.core.slots[0].respawn_at > sim.now
    actions = sim.do(sim.core.reload(1, sim.now))  # the operator fixed it: SIGHUP
    assert of(Spawn, actions) == [Spawn(0, 2)]  # at once, not behind the backoff
    (fixed,) = sim.starting()
    actions = sim.ready(fixed)
    assert of(ReloadDone, actions) == [ReloadDone(True, 2)]
    assert drains(actions) == [(old, True)]


def test_failures_to_boot_are_forgotten_once_a_worker_served_its_boot_window() -> None:
    sim = Sim(1)
    (old,) = sim.up()
    sim.do(sim.core.due(old, Reason.MAX_REQUESTS, sim.now))
    (new,) = sim.starting()
    sim.exited(new, 3)  # one failure; retried at once
    assert sim.core.slots[0].failures == 1
    (new,) = sim.starting()
    sim.ready(new)
    sim.core.heartbeat(new, sim.now + TIMEOUTS.boot_window, {})
    sim.advance(TIMEOUTS.boot_window)
    assert sim.core.slots[0].failures == 0


def test_a_reload_dropping_a_slot_in_backoff_keeps_it_covered_until_it_commits() -> None:
    sim = Sim(2)
    _, second = sim.up()
    sim.do(sim.core.due(second, Reason.MAX_REQUESTS, sim.now))
    for _ in range(2):  # its replacement fails twice: backoff, still in flight
        (new,) = sim.starting(1)
        sim.exited(new, 3)
    sim.exited(second, -signal.SIGKILL)  # and the old worker dies too
    sim.do(sim.core.reload(1, sim.now))  # slot 1 retires only when the reload commits
    assert sim.core.slots[1].respawn_at  # meanwhile its backoff respawn still stands


# -- events the core no longer expects -------------------------------------------------------
# The master reports what the kernel tells it; after a race (a worker reaped
# before its last message was read, a retired slot) an event can name a pid or
# a slot the core has already forgotten. Each is ignored or logged, never fatal.


def test_events_about_unknown_pids_change_nothing() -> None:
    sim = Sim(1)
    (pid,) = sim.up()
    before = sim.core.counts()
    sim.core.heartbeat(999, sim.now, {"requests": 5})
    sim.core.boot_failed(999, WorkerExit.APP_LOAD_FAILED, "nope")
    assert sim.ready(999) == []
    assert sim.do(sim.core.due(999, Reason.MEMORY, sim.now)) == []
    assert sim.exited(999) == []
    assert sim.core.counts() == before
    assert sim.serving() == [pid]


def test_scaling_waits_for_shutdown_and_reloads() -> None:
    sim = Sim(1)
    sim.up()
    sim.do(sim.core.reload(1, sim.now))
    actions = sim.do(sim.core.scale(1, sim.now))
    assert messages(actions) == "not scaling while a reload is in progress; try again after"
    sim.do(sim.core.shutdown(sim.now, graceful=True))
    assert sim.do(sim.core.scale(1, sim.now)) == []
    assert sim.do(sim.core.reload(2, sim.now)) == []


def test_a_worker_ready_during_shutdown_is_drained_at_once() -> None:
    sim = Sim(1)
    sim.start()
    (pid,) = sim.starting()
    sim.do(sim.core.shutdown(sim.now, graceful=True))
    # A booting worker is quit (SIGQUIT) at shutdown; if its READY was
    # already on the way, it is drained as well, never counted as serving.
    actions = sim.ready(pid)
    assert drains(actions) == []  # already draining: nothing more to ask
    assert sim.core.counts()["ready"] == 0


def test_a_starting_worker_of_a_retired_slot_is_not_replaced() -> None:
    sim = Sim(2)
    sim.up()
    sim.do(sim.core.scale(1, sim.now))  # slot 2 starts booting
    (new,) = sim.starting()
    sim.do(sim.core.scale(-1, sim.now))  # and is retired before it is ready
    assert drains(sim.actions[-2:]) == [(new, True)]
    actions = sim.exited(new, -signal.SIGQUIT)
    assert messages(actions) == f"worker 2 (pid {new}) drained and exited"
    assert of(Spawn, actions) == []


def test_an_unknown_signal_is_named_by_its_number() -> None:
    sim = Sim(1)
    (pid,) = sim.up()
    assert "died (signal 99)" in messages(sim.exited(pid, -99))
