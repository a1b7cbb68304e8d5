"""The supervisor's decisions, without processes: lifecycles, replacements, reloads.

Everything that decides what happens to a worker lives here: its lifecycle
(a transition table), heartbeat and boot deadlines, crash backoff, the
"new before old" replacement that reloads, recycling, hangs and scaling
share, and a reload as one pending change that is committed or rolled back
whole. The master feeds events in (spawned, ready, heartbeat, exited,
signals) with the current monotonic time and carries out the ``Action``s
that come back; this module never forks, signals, sleeps or reads the clock.

Every worker of a generation accepts on every listener of that generation
(one shared socket per address), so routing needs no decision here: a worker
that is booting, stuck, dead or draining simply does not accept, and its
siblings do. What this module guarantees is that each slot always has a
worker serving it or one on the way, and that the only waits are the
backoff after failures to boot.
"""

from __future__ import annotations

import enum
import logging
import signal
from collections import deque
from dataclasses import dataclass, field

from .._wire import WorkerExit


class State(enum.Enum):
    STARTING = "starting"  # forked, not READY yet
    READY = "ready"  # serving, heartbeats on time
    LATE = "late"  # serving, heartbeat late: a stand-in is on its way
    HUNG = "hung"  # no heartbeat for [workers].timeout: SIGABRT sent, SIGKILL next
    DRAINING = "draining"  # finishing its work; exits by itself or is killed
    EXITED = "exited"

    @property
    def serving(self) -> bool:
        """Accepting and answering (as far as the master knows)."""
        return self in (State.READY, State.LATE)

    @property
    def up(self) -> bool:
        """Was READY and is not draining: serving, or stuck while it was."""
        return self in (State.READY, State.LATE, State.HUNG)

    @property
    def label(self) -> str:
        """The ``state`` label of ``asgid_workers``: starting, ready or draining."""
        return State.READY.value if self.up else self.value


class Event(enum.Enum):
    READY = "ready"  # the worker said so
    LATE = "late"  # its heartbeat is ``Timeouts.late`` overdue
    HANG = "hang"  # its heartbeat is ``Timeouts.heartbeat`` overdue
    DRAIN = "drain"  # asked to finish and exit (or to quit, while starting)
    EXIT = "exit"  # the process is gone


# (state, event) -> next state; a missing pair is an illegal transition.
TRANSITIONS: dict[tuple[State, Event], State] = {
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
    # A draining worker's loop can block too: it is killed sooner, and stays draining.
    (State.DRAINING, Event.HANG): State.DRAINING,
    (State.DRAINING, Event.DRAIN): State.DRAINING,
    (State.DRAINING, Event.EXIT): State.EXITED,
}


class TransitionError(Exception):
    pass


class Refused(Exception):
    """An operator's command (``asgid ctl``) that cannot be carried out now; says why."""


class Reason(str, enum.Enum):
    """Why a worker was replaced; the values are the metrics' ``reason`` labels."""

    CRASH = "crash"
    HANG = "hang"
    MAX_REQUESTS = "max_requests"
    MEMORY = "memory"
    RELOAD = "reload"
    SCALE = "scale"
    MANUAL = "manual"  # asked for by an operator (``asgid ctl recycle``)

    def __str__(self) -> str:  # in messages, as in metrics: the value
        return self.value


class NotifyState(str, enum.Enum):
    """What the master tells systemd (sd_notify's READY=1, RELOADING=1, STOPPING=1)."""

    READY = "READY"
    RELOADING = "RELOADING"
    STOPPING = "STOPPING"


@dataclass(frozen=True, slots=True)
class Timeouts:
    heartbeat: float = 30.0  # no heartbeat this long: the loop is blocked, kill the worker
    late: float = 2.5  # no heartbeat this long: start its replacement (0: only at `heartbeat`)
    boot: float = 60.0
    graceful: float = 30.0
    shutdown_delay: float = 0.0  # SIGTERM: keep serving (not ready) this long, then drain
    kill_grace: float = 3.0  # after SIGABRT (hang) or SIGQUIT, before SIGKILL
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    boot_window: float = 1.0  # dying this soon after READY counts as failing to boot


# -- actions the master carries out -------------------------------------------


@dataclass(frozen=True, slots=True)
class Spawn:
    slot: int
    generation: int


@dataclass(frozen=True, slots=True)
class Drain:
    """Ask a worker to stop accepting, finish what it has and exit.

    ``restart`` says a successor takes over (WebSockets close with 1012,
    service restart) rather than the server stopping (1001, going away).
    """

    pid: int
    restart: bool


@dataclass(frozen=True, slots=True)
class Kill:
    pid: int
    signal: int


@dataclass(frozen=True, slots=True)
class StopListening:
    """Shutdown: close the master's copies of the listeners.

    Once the draining workers close theirs too, new clients are refused at
    once instead of waiting in a queue nobody serves.
    """


@dataclass(frozen=True, slots=True)
class Log:
    level: int  # logging.INFO, WARNING or ERROR
    message: str


@dataclass(frozen=True, slots=True)
class Notify:
    """Tell systemd where the master stands, with a status line."""

    state: NotifyState
    status: str


@dataclass(frozen=True, slots=True)
class Restarted:
    """A worker was replaced for ``reason`` (for metrics)."""

    reason: Reason


@dataclass(frozen=True, slots=True)
class ReloadDone:
    """The reload to ``generation`` is over: commit it, or roll it back whole.

    A failed one says why (``reason``) and how the worker that failed exited
    (``code``: the app could not be imported, or it could not boot).
    """

    success: bool
    generation: int
    reason: str = field(default="", compare=False)
    code: WorkerExit = field(default=WorkerExit.OK, compare=False)


@dataclass(frozen=True, slots=True)
class Exit:
    """The master is done: stopped (``WorkerExit.OK``), or the first workers
    could not boot (``code`` says how, ``message`` why)."""

    code: WorkerExit
    message: str = ""


Action = Spawn | Drain | Kill | StopListening | Log | Notify | Restarted | ReloadDone | Exit


@dataclass(slots=True)
class WorkerInfo:
    pid: int
    slot: int
    generation: int
    started: float
    state: State = State.STARTING
    last_seen: float = 0.0
    ready_at: float = 0.0
    kill_at: float = 0.0  # when to escalate to SIGKILL; 0 = not scheduled
    replaces: int | None = None  # the pid this worker will take over from
    reason: Reason | None = None  # why this worker was started, when it replaces another
    aborted: bool = False  # SIGABRT sent for a blocked loop (see ``State.HUNG``)
    boot_error: str = ""
    boot_code: WorkerExit = WorkerExit.OK
    requests: int = 0
    connections: int = 0
    in_progress: int = 0
    loop_lag: float = 0.0

    def move(self, event: Event) -> None:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise TransitionError(
                f"worker {self.pid}: cannot {event.value} while {self.state.value}"
            ) from None


@dataclass(slots=True)
class _Replacement:
    """One worker to start for ``slot``, taking over from ``old`` once ready."""

    slot: int
    reason: Reason | None  # None: a slot's first worker
    old: int | None
    generation: int
    pid: int = 0  # the new worker, once spawned


@dataclass(slots=True)
class Slot:
    index: int
    failures: int = 0  # failures to boot in a row
    respawn_at: float = 0.0  # crash backoff: when to start the next worker; 0 = none due
    respawn: _Replacement | None = None  # what to start then


@dataclass(slots=True)
class PendingReload:
    """A reload in progress: what to commit when it succeeds, undo when it fails."""

    generation: int
    count: int  # the worker count it asks for; slots above it retire on commit
    added: list[int] = field(default_factory=list)  # slots it created (gone on rollback)


class Supervisor:
    """The policy for N worker slots. Feed it events; act on what it returns."""

    def __init__(self, count: int, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self._initial_count = count
        self.workers: dict[int, WorkerInfo] = {}
        self.slots: dict[int, Slot] = {}
        self.generation = 0  # the committed generation
        self.pending: PendingReload | None = None
        self._last_generation = 0
        self.ever_ready = False
        self.stopping = False
        self.leaving_at = 0.0  # shutdown_delay: when the drain starts; 0 = not leaving
        self._queue: deque[_Replacement] = deque()  # replacements, one at a time
        self._inflight: _Replacement | None = None
        self._spawning: deque[_Replacement] = deque()  # Spawns not yet reported spawned
        self._announced_ready = False
        self.last_reload = ""

    # -- queries ------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self.slots) if self.slots else self._initial_count

    @property
    def reloading(self) -> bool:
        return self.pending is not None

    @property
    def shutting_down(self) -> bool:
        """Stopping, or serving out ``shutdown_delay`` before the drain."""
        return self.stopping or bool(self.leaving_at)

    def live(self) -> list[WorkerInfo]:
        return [w for w in self.workers.values() if w.state is not State.EXITED]

    def serving(self, slot: int) -> WorkerInfo | None:
        """A worker serving ``slot`` (ready, not draining, not hung)."""
        for w in self.workers.values():
            if w.slot == slot and w.state.serving:
                return w
        return None

    def queued(self, slot: int) -> bool:
        """A replacement for ``slot`` waits its turn (one is started at a time)."""
        return any(job.slot == slot for job in self._jobs())

    def counts(self) -> dict[str, int]:
        result = {s.label: 0 for s in (State.STARTING, State.READY, State.DRAINING)}
        for w in self.live():
            result[w.state.label] += 1
        return result

    def status(self) -> str:
        counts = self.counts()
        text = f"{counts['ready']}/{self.count} workers ready"
        if counts["starting"]:
            text += f", {counts['starting']} starting"
        if counts["draining"]:
            text += f", {counts['draining']} draining"
        if self.last_reload:
            text += f"; last reload {self.last_reload}"
        return text

    def next_deadline(self) -> float | None:
        t = self.timeouts
        times: list[float] = []
        for w in self.live():
            if w.kill_at:
                times.append(w.kill_at)
            if w.state is State.STARTING:
                times.append(w.started + t.boot)
            elif not w.aborted:
                times.append(w.last_seen + t.heartbeat)
                if t.late and w.state is State.READY:
                    times.append(w.last_seen + t.late)
        times.extend(s.respawn_at for s in self.slots.values() if s.respawn_at)
        if self.leaving_at:
            times.append(self.leaving_at)
        return min(times) if times else None

    # -- events ---------------------------------------------------------------

    def start(self) -> list[Action]:
        self.generation = self._last_generation = 1
        actions: list[Action] = []
        for index in range(self._initial_count):
            self.slots[index] = Slot(index)
            actions.append(self._spawn(_Replacement(index, None, None, self.generation)))
        return actions

    def spawned(self, pid: int, slot: int, generation: int, now: float) -> None:
        """The master forked the worker for the oldest ``Spawn`` not yet reported."""
        worker = WorkerInfo(pid, slot, generation, started=now, last_seen=now)
        job = self._spawning.popleft() if self._spawning else None
        if job is not None and job.slot == slot:
            job.pid = pid
            worker.replaces, worker.reason = job.old, job.reason
        self.workers[pid] = worker

    def heartbeat(self, pid: int, now: float, stats: dict[str, float]) -> None:
        worker = self.workers.get(pid)
        if worker is None:
            return
        worker.last_seen = now
        worker.requests = int(stats.get("requests", worker.requests))
        worker.connections = int(stats.get("connections", worker.connections))
        worker.in_progress = int(stats.get("in_progress", worker.in_progress))
        worker.loop_lag = float(stats.get("lag", worker.loop_lag))

    def ready(self, pid: int, now: float) -> list[Action]:
        worker = self.workers.get(pid)
        if worker is None or worker.state is not State.STARTING:
            return []
        worker.move(Event.READY)
        worker.ready_at = worker.last_seen = now
        actions: list[Action] = [
            Log(
                logging.INFO,
                f"worker {worker.slot} (pid {pid}) ready, generation {worker.generation}",
            )
        ]
        if self.stopping:
            return actions + self._drain(worker, now, restart=False)
        if self._inflight is not None and self._inflight.pid == pid:
            self._inflight = None
        actions += self._settle(worker, now)
        actions += self._advance(now)
        if not self._announced_ready and self._all_ready():
            self.ever_ready = self._announced_ready = True
            actions.append(Notify(NotifyState.READY, self.status()))
        return actions

    def boot_failed(self, pid: int, code: WorkerExit, message: str) -> None:
        worker = self.workers.get(pid)
        if worker is not None:
            worker.boot_error, worker.boot_code = message, code

    def due(self, pid: int, reason: Reason, now: float) -> list[Action]:
        """The worker asks to be replaced (max_requests) or is too big (memory)."""
        worker = self.workers.get(pid)
        if worker is None or not worker.state.up or self.stopping:
            return []
        if any(job.old == pid for job in self._jobs()):
            return []
        generation = self._successor_generation(worker.generation)
        self._queue.append(_Replacement(worker.slot, reason, pid, generation))
        return [
            Log(logging.INFO, f"worker {worker.slot} (pid {pid}) is due for replacement: {reason}"),
            *self._advance(now),
        ]

    def exited(self, pid: int, status: int, now: float) -> list[Action]:
        """``status`` is the exit code, or minus the signal number that killed it."""
        worker = self.workers.pop(pid, None)
        if worker is None:
            return []
        previous = worker.state
        worker.move(Event.EXIT)
        how = f"exit code {status}" if status >= 0 else f"signal {_signame(-status)}"
        name = f"worker {worker.slot} (pid {pid})"
        if self.stopping:
            actions: list[Action] = [Log(logging.INFO, f"{name} stopped ({how})")]
            if not self.live():
                actions.append(Exit(WorkerExit.OK))
            return actions
        if previous is State.DRAINING:
            return [Log(logging.INFO, f"{name} drained and exited"), *self._advance(now)]
        slot = self.slots.get(worker.slot)
        if slot is None:  # its slot was retired while it was starting
            return [Log(logging.INFO, f"{name} exited ({how})"), *self._advance(now)]
        if previous is State.STARTING:
            reason = worker.boot_error or f"worker exited during boot ({how})"
            return self._failed_to_boot(
                worker, slot, f"{name} failed to boot: {reason}", now, reason=reason
            )
        return self._died(worker, slot, previous is State.HUNG, how, now)

    # -- commands -------------------------------------------------------------

    def reload(self, count: int, now: float) -> list[Action]:
        """Replace every worker, slot by slot, new before old; then scale to ``count``.

        The reload is pending until every slot has a worker of the new
        generation: then slots above ``count`` retire and ``ReloadDone(True)``
        commits it. If a new worker fails to boot, ``ReloadDone(False)`` rolls
        it back whole: the slots it added retire, and any slot it already
        moved to the new generation is moved back, new before old again.
        """
        if self.shutting_down:
            return []
        actions: list[Action] = []
        if self.pending is not None:  # SIGHUP again: the newest configuration wins
            actions += self._forget(self.pending, now, restore=False)
        if self._inflight is not None and not self._inflight.pid:
            # A replacement waiting in backoff must not hold the reload up. It
            # stays the slot's backoff respawn; the reload's job for the slot,
            # if it keeps the slot, starts a worker at once and clears it.
            self._inflight = None
        self._last_generation += 1
        pending = self.pending = PendingReload(self._last_generation, max(1, count))
        actions += [
            Notify(NotifyState.RELOADING, f"reloading: {self.status()}"),
            Log(
                logging.INFO, f"reload started: generation {pending.generation}, {count} worker(s)"
            ),
        ]
        for index in range(max(self.count, count)):
            if index not in self.slots:
                self.slots[index] = Slot(index)
                pending.added.append(index)
            if index < count:
                current = self._holder(index)
                job = _Replacement(
                    index, Reason.RELOAD, current.pid if current else None, pending.generation
                )
                self._queue.append(job)
        return actions + self._advance(now)

    def scale(self, delta: int, now: float) -> list[Action]:
        if self.shutting_down:
            return []
        if self.pending is not None:
            return [
                Log(logging.WARNING, "not scaling while a reload is in progress; try again after")
            ]
        if delta > 0:
            index = self.count
            self.slots[index] = Slot(index)
            self._queue.append(_Replacement(index, Reason.SCALE, None, self.generation))
            return [Log(logging.INFO, f"scaling up to {self.count} workers"), *self._advance(now)]
        if self.count <= 1:
            return [Log(logging.WARNING, "not scaling below 1 worker")]
        actions = self._retire(max(self.slots), Reason.SCALE, now)
        return [
            Log(logging.INFO, f"scaling down to {self.count} workers"),
            *actions,
            *self._advance(now),
        ]

    def scale_to(self, count: int, now: float) -> list[Action]:
        """Set the number of slots to ``count``: new ones boot one at a time, the
        highest retire (drained). Raises ``Refused`` when it cannot be done now."""
        if self.shutting_down:
            raise Refused("shutting down")
        if self.pending is not None:
            raise Refused("a reload is in progress; try again after it")
        if count < 1:
            raise Refused(f"cannot scale to {count}: at least 1 worker")
        actions: list[Action] = [Log(logging.INFO, f"scaling to {count} workers")]
        while self.count < count:
            index = self.count
            self.slots[index] = Slot(index)
            self._queue.append(_Replacement(index, Reason.SCALE, None, self.generation))
        while self.count > count:
            actions += self._retire(max(self.slots), Reason.SCALE, now)
        return actions + self._advance(now)

    def recycle(self, pid: int, now: float) -> list[Action]:
        """An operator asks for ``pid`` to be replaced, new before old.

        Raises ``Refused`` for a pid that is not a serving worker, or one
        whose replacement is already on its way.
        """
        if self.shutting_down:
            raise Refused("shutting down")
        worker = self.workers.get(pid)
        if worker is None or worker.state is State.EXITED:
            raise Refused(f"no worker with pid {pid}")
        if not worker.state.up:
            raise Refused(f"worker {worker.slot} (pid {pid}) is {worker.state.value}")
        if any(job.old == pid for job in self._jobs()):
            raise Refused(f"worker {worker.slot} (pid {pid}) is already being replaced")
        return self.due(pid, Reason.MANUAL, now)

    def slot_pid(self, slot: int) -> int:
        """The pid of the worker that serves ``slot`` (for ``recycle SLOT``)."""
        if slot not in self.slots:
            raise Refused(f"no slot {slot}; slots are 0 to {self.count - 1}")
        candidates = [w for w in self.workers.values() if w.slot == slot and w.state.up]
        worker = max(candidates, key=lambda w: w.started, default=None)
        if worker is None:
            raise Refused(f"slot {slot} has no serving worker")
        return worker.pid

    def shutdown(self, now: float, *, graceful: bool) -> list[Action]:
        """Stop every worker; with ``shutdown_delay``, a graceful stop first keeps
        serving that long while readiness says no (see ``leaving``)."""
        delay = self.timeouts.shutdown_delay
        if graceful and delay and not self.leaving_at and not self.stopping:
            self.leaving_at = now + delay
            return [
                Notify(NotifyState.STOPPING, "stopping"),
                Log(logging.INFO, f"graceful shutdown in {delay:g}s: not ready, still serving"),
            ]
        self.leaving_at = 0.0
        first = not self.stopping
        self.stopping = True
        self._queue.clear()
        self._inflight = None
        self.pending = None
        actions: list[Action] = []
        if first:
            actions.append(StopListening())
            if not self.timeouts.shutdown_delay or not graceful:
                actions.append(Notify(NotifyState.STOPPING, "stopping"))
            actions.append(
                Log(logging.INFO, "graceful shutdown" if graceful else "immediate shutdown")
            )
        actions += self._shutdown_all(now, graceful=graceful)
        if not self.live():
            actions.append(Exit(WorkerExit.OK))
        return actions

    def tick(self, now: float) -> list[Action]:
        if self.leaving_at and now >= self.leaving_at:
            return self.shutdown(now, graceful=True)
        actions: list[Action] = []
        t = self.timeouts
        for worker in self.live():
            name = f"worker {worker.slot} (pid {worker.pid})"
            silent = now - worker.last_seen
            slot = self.slots.get(worker.slot)
            booted = worker.state.up and now - worker.ready_at >= t.boot_window
            if slot is not None and slot.failures and booted:
                slot.failures = 0  # past its boot window: the slot boots again
            if worker.kill_at and now >= worker.kill_at:
                worker.kill_at = now + t.kill_grace
                actions.append(Log(logging.WARNING, f"{name} killed"))
                actions.append(Kill(worker.pid, signal.SIGKILL))
            elif worker.state is State.STARTING:
                if now - worker.started > t.boot:
                    worker.boot_error = worker.boot_error or f"not ready within {t.boot:g}s"
                    worker.kill_at = now + t.kill_grace
                    actions.append(Kill(worker.pid, signal.SIGKILL))
            elif not worker.aborted and silent > t.heartbeat:
                worker.move(Event.HANG)
                worker.aborted = True
                worker.kill_at = now + t.kill_grace
                actions.append(
                    Log(
                        logging.ERROR,
                        f"{name} sent no heartbeat for {silent:.1f}s: its event loop is "
                        "blocked; dumping its stack (SIGABRT) and replacing it",
                    )
                )
                actions.append(Kill(worker.pid, signal.SIGABRT))
                actions += self._cover(worker, Reason.HANG)
            elif (
                worker.state is State.READY
                and t.late
                and silent > t.late
                and not self._stand_in_booting()
            ):
                worker.move(Event.LATE)
                actions.append(
                    Log(
                        logging.WARNING,
                        f"{name} sent no heartbeat for {silent:.1f}s: starting its "
                        f"replacement (killed if still silent after {t.heartbeat:g}s)",
                    )
                )
                actions += self._cover(worker, Reason.HANG)
        for slot in self.slots.values():
            if slot.respawn_at and now >= slot.respawn_at and not self.stopping:
                job = _Replacement(slot.index, Reason.CRASH, None, self.generation)
                actions.append(self._respawn(slot, job))
        return actions

    # -- internals --------------------------------------------------------------

    def _jobs(self) -> list[_Replacement]:
        """The queued replacements and the one in flight."""
        return [*self._queue, *([self._inflight] if self._inflight else [])]

    def _spawn(self, job: _Replacement) -> Spawn:
        # A job may have waited (in backoff, in the queue) past its generation's
        # end: a rolled-back or superseded reload. Only the committed and the
        # pending generation are ever started; the master has no other config.
        job.generation = self._successor_generation(job.generation)
        self._spawning.append(job)
        return Spawn(job.slot, job.generation)

    @property
    def _pending_generation(self) -> int | None:
        return self.pending.generation if self.pending is not None else None

    def _successor_generation(self, generation: int) -> int:
        """The generation a worker of ``generation`` is replaced with."""
        pending = self._pending_generation
        if generation in (self.generation, pending):
            return generation
        return pending if pending is not None else self.generation

    def _rank(self, worker: WorkerInfo) -> tuple[bool, bool]:
        return (worker.generation == self._pending_generation, worker.generation == self.generation)

    def _all_ready(self) -> bool:
        return all(self.serving(index) is not None for index in self.slots)

    def _holder(self, slot: int) -> WorkerInfo | None:
        """The newest worker that serves ``slot`` or is starting to."""
        candidates = [
            w
            for w in self.workers.values()
            if w.slot == slot and (w.state is State.STARTING or w.state.serving)
        ]
        return max(candidates, key=lambda w: w.started, default=None)

    def _replacement_starting(self, slot: int) -> bool:
        return any(w.slot == slot and w.state is State.STARTING for w in self.workers.values())

    def _stand_in_booting(self) -> bool:
        """One stand-in for a late worker boots at a time: when a starved machine
        makes every loop late, doubling the processes would starve it more."""
        return any(job.reason == Reason.HANG for job in self._spawning) or any(
            w.state is State.STARTING and w.reason == Reason.HANG for w in self.workers.values()
        )

    def _cover(self, worker: WorkerInfo, reason: Reason) -> list[Action]:
        """Start a worker for the slot of a stuck ``worker``, unless one is on its way."""
        if self.stopping or worker.slot not in self.slots or not worker.state.up:
            return []
        if self._replacement_starting(worker.slot) or any(
            w is not worker and w.slot == worker.slot and w.state is State.READY
            for w in self.workers.values()
        ):
            return []
        generation = self._successor_generation(worker.generation)
        job = _Replacement(worker.slot, reason, worker.pid, generation)
        return [self._respawn(self.slots[worker.slot], job)]

    def _settle(self, new: WorkerInfo, now: float) -> list[Action]:
        """One ready worker per slot: ``new`` or a better one; drain the others.

        New before old: the newest worker wins, unless another ready worker
        of the slot is of a generation that ranks higher (pending over
        committed over stale), as when a hang's stand-in of the old code
        comes up after the reload already moved its slot on.
        """
        others = [
            w for w in self.workers.values() if w is not new and w.slot == new.slot and w.state.up
        ]
        if any(self._rank(w) > self._rank(new) for w in others if w.state.serving):
            return self._drain(new, now)
        actions: list[Action] = []
        if new.slot not in self.slots:  # retired while it was starting
            return self._drain(new, now)
        for old in others:
            if old.pid == new.replaces and new.reason is not None:
                actions.append(Restarted(new.reason))
            actions += self._drain(old, now)
        if self._rank(new) == (False, False):
            # Started before a reload moved past its generation: serve for now,
            # and move it on like the rest, new before old.
            generation = self._successor_generation(new.generation)
            self._queue.append(_Replacement(new.slot, Reason.RELOAD, new.pid, generation))
        return actions

    def _advance(self, now: float) -> list[Action]:
        """Start the next queued replacement when none is in flight; finish a reload.

        A reload commits once every slot it keeps has a ready worker of its
        generation; a slot that lost its new worker on the way (a crash) gets
        one more job first.
        """
        actions = self._start_queued()
        pending = self.pending
        if pending is None or self._inflight is not None or self._queue:
            return actions
        missing = [
            index
            for index in sorted(self.slots)
            if index < pending.count
            and not any(
                w.slot == index and w.state.up and w.generation == pending.generation
                for w in self.workers.values()
            )
        ]
        if not missing:
            return actions + self._commit(now)
        for index in missing:
            holder = self._holder(index)
            job = _Replacement(
                index, Reason.RELOAD, holder.pid if holder else None, pending.generation
            )
            self._queue.append(job)
        return actions + self._start_queued()

    def _start_queued(self) -> list[Action]:
        actions: list[Action] = []
        while self._inflight is None and self._queue and not self.stopping:
            job = self._queue.popleft()
            slot = self.slots.get(job.slot)
            if slot is None:
                continue
            old = self.workers.get(job.old) if job.old is not None else None
            if old is None or not old.state.serving:
                # The worker the job was for is gone (or going): replace whoever
                # holds the slot now, unless it is already of the job's
                # generation (a reload) or any worker at all holds it (recycling).
                holder = self._holder(job.slot)
                if holder is not None and job.reason == Reason.RELOAD:
                    if holder.generation == job.generation:
                        if holder.state is State.STARTING:
                            # Already on its way (a crash's replacement): the
                            # reload waits for it to boot, or fails with it.
                            job.pid = holder.pid
                            self._inflight = job
                        continue
                elif holder is not None:
                    continue
                job.old = holder.pid if holder else None
            self._inflight = job
            slot.respawn_at, slot.respawn = 0.0, None  # this spawn covers a pending respawn
            actions.append(self._spawn(job))
        return actions

    def _commit(self, now: float) -> list[Action]:
        pending = self.pending
        assert pending is not None
        self.pending = None
        self.generation = pending.generation
        actions: list[Action] = []
        for index in sorted(i for i in self.slots if i >= pending.count):
            actions += self._retire(index, Reason.SCALE, now)
        self.last_reload = "succeeded"
        return [
            *actions,
            Log(logging.INFO, f"reload finished: generation {self.generation} serves"),
            ReloadDone(True, pending.generation),
            Notify(NotifyState.READY, self.status()),
            *self._advance(now),
        ]

    def _rollback(
        self, why: str, now: float, code: WorkerExit = WorkerExit.BOOT_FAILED
    ) -> list[Action]:
        pending = self.pending
        assert pending is not None
        self._inflight = None
        actions = self._forget(pending, now, restore=True)
        self.last_reload = "failed"
        return [
            Log(logging.ERROR, f"reload failed: {why}; the previous workers keep serving"),
            *actions,
            ReloadDone(False, pending.generation, why, code),
            Notify(NotifyState.READY, self.status()),
            *self._advance(now),
        ]

    def _forget(self, pending: PendingReload, now: float, *, restore: bool) -> list[Action]:
        """Undo what ``pending`` changed: its slots and its queue.

        With ``restore``, slots it already moved to its generation are queued
        to move back, new before old (a newer reload replaces them itself).
        """
        self.pending = None
        self._queue = deque(j for j in self._queue if j.generation != pending.generation)
        if self._inflight is not None and self._inflight.generation == pending.generation:
            self._inflight = None
        actions: list[Action] = []
        for index in pending.added:
            if index in self.slots:
                actions += self._retire(index, Reason.RELOAD, now)
        if not restore:
            return actions
        for index in sorted(self.slots):  # emptied while the reload ran: start one now
            if self._holder(index) is None:
                job = _Replacement(index, Reason.CRASH, None, self.generation)
                actions.append(self._respawn(self.slots[index], job))
        for worker in self.live():
            if (
                worker.slot in self.slots
                and worker.generation != self.generation
                and worker.state is not State.DRAINING
                and not any(j.old == worker.pid for j in self._queue)
            ):
                self._queue.append(
                    _Replacement(worker.slot, Reason.RELOAD, worker.pid, self.generation)
                )
        return actions

    def _retire(self, index: int, reason: Reason, now: float) -> list[Action]:
        self.slots.pop(index, None)
        self._queue = deque(j for j in self._queue if j.slot != index)
        if self._inflight is not None and self._inflight.slot == index:
            self._inflight = None  # its worker is drained below and will never take over
        actions: list[Action] = []
        for worker in self.live():
            if worker.slot == index and worker.state is not State.DRAINING:
                if worker.state.up:
                    actions.append(Restarted(reason))
                actions += self._drain(worker, now)
        return actions

    def _died(
        self, worker: WorkerInfo, slot: Slot, hung: bool, how: str, now: float
    ) -> list[Action]:
        """``worker`` was up (READY, LATE or HUNG) and is gone: replace it at once,
        unless it died so soon after READY that it counts as failing to boot."""
        name = f"worker {worker.slot} (pid {worker.pid})"
        after = now - worker.ready_at
        if after < self.timeouts.boot_window and not hung:
            reason = f"died ({how}) {after:.1f}s after it became ready"
            actions = self._failed_to_boot(worker, slot, f"{name} {reason}", now, reason=reason)
            return [Restarted(Reason.CRASH), *actions] if self.ever_ready else actions
        slot.failures = 0
        if hung:
            cause = Reason.HANG
            log = Log(logging.WARNING, f"{name} was killed after it stopped responding")
        else:
            cause, log = Reason.CRASH, Log(logging.ERROR, f"{name} died ({how})")
        replaced: list[Action] = [log, Restarted(cause)]
        if self.serving(worker.slot) is None and not self._replacement_starting(worker.slot):
            generation = self._successor_generation(worker.generation)
            replaced.append(self._respawn(slot, _Replacement(slot.index, cause, None, generation)))
        return replaced + self._advance(now)

    def _failed_to_boot(
        self, worker: WorkerInfo, slot: Slot, message: str, now: float, *, reason: str
    ) -> list[Action]:
        """``worker`` died before it was READY, or within the boot window after."""
        if not self.ever_ready:
            return [
                Log(logging.ERROR, message),
                *self._shutdown_all(now, graceful=False),
                Exit(worker.boot_code or WorkerExit.BOOT_FAILED, reason),
            ]
        inflight = self._inflight
        if inflight is not None and inflight.pid == worker.pid:
            if self.pending is not None and inflight.generation == self.pending.generation:
                return self._rollback(message, now, worker.boot_code or WorkerExit.BOOT_FAILED)
            if inflight.old is not None and inflight.old in self.workers:
                # The old worker keeps serving; try again after a backoff.
                return [
                    Log(logging.ERROR, f"{message}; keeping the old worker"),
                    *self._backoff(slot, now, inflight),
                ]
            self._inflight = None
        if self.pending is not None and worker.generation == self.pending.generation:
            # The new code: it was ready (its old worker already drains) but died
            # in its boot window, or it is a crash's stand-in that failed too.
            return self._rollback(message, now, worker.boot_code or WorkerExit.BOOT_FAILED)
        actions: list[Action] = [Log(logging.ERROR, message)]
        if self.serving(worker.slot) is not None or self._replacement_starting(worker.slot):
            return actions + self._advance(now)  # the slot is covered
        job = _Replacement(
            worker.slot, Reason.CRASH, None, self._successor_generation(worker.generation)
        )
        return actions + self._backoff(slot, now, job) + self._advance(now)

    def _drain(self, worker: WorkerInfo, now: float, *, restart: bool = True) -> list[Action]:
        """Ask a worker to finish in-flight work and exit (killed past the deadline)."""
        if worker.state is State.DRAINING:
            return []
        worker.move(Event.DRAIN)
        deadline = now + self.timeouts.graceful + self.timeouts.kill_grace
        if not worker.kill_at or deadline < worker.kill_at:  # a hang's earlier kill stands
            worker.kill_at = deadline
        return [Drain(worker.pid, restart)]

    def _shutdown_all(self, now: float, *, graceful: bool) -> list[Action]:
        actions: list[Action] = []
        for slot in self.slots.values():
            slot.respawn_at, slot.respawn = 0.0, None
        for worker in self.live():
            if graceful and worker.state is not State.STARTING:
                actions += self._drain(worker, now, restart=False)
                continue
            # Quick: a booting worker has nothing to finish, and until its loop
            # runs it would hold the listeners open with nobody accepting.
            actions += self._quit(worker, now)
        return actions

    def _quit(self, worker: WorkerInfo, now: float) -> list[Action]:
        """Stop a worker quickly (SIGQUIT), then for good (SIGKILL)."""
        if worker.state is not State.DRAINING:
            worker.move(Event.DRAIN)
        worker.kill_at = now + self.timeouts.kill_grace
        return [Kill(worker.pid, signal.SIGQUIT)]

    def _respawn(self, slot: Slot, job: _Replacement) -> Spawn:
        """Start a worker for ``slot`` now: the one its backoff waits for, if any."""
        if slot.respawn is not None:
            job = slot.respawn
        slot.respawn_at, slot.respawn = 0.0, None
        return self._spawn(job)

    def _backoff(self, slot: Slot, now: float, job: _Replacement) -> list[Action]:
        """Start ``job`` after a delay that doubles with each failure to boot in a row.

        A slot waits for one job at a time: one already waiting is kept (it
        may be the replacement the queue waits for).
        """
        job = slot.respawn or job
        slot.failures += 1
        delay = min(
            self.timeouts.backoff_cap, self.timeouts.backoff_base * 2 ** (slot.failures - 1)
        )
        if slot.failures == 1:
            delay = 0.0  # the first failure is retried at once
        job.pid = 0  # an in-flight job stays in flight: the queue waits for its retry
        if delay == 0.0:
            return [self._spawn(job)]
        slot.respawn_at, slot.respawn = now + delay, job
        return [
            Log(
                logging.WARNING,
                f"worker {slot.index} failed to boot {slot.failures} times in a row; "
                f"retrying in {delay:.1f}s",
            )
        ]


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
