"""The supervisor's decisions, without processes: lifecycles and replacement policy.

Everything that decides what happens to a worker lives here: its lifecycle
(a transition table), heartbeat and boot deadlines, crash backoff, and the
"new before old" replacement that reloads, recycling and scaling share. The
master feeds events in (spawned, ready, heartbeat, exited, signals) with the
current monotonic time and carries out the ``Action``s that come back; this
module never forks, signals, sleeps or reads the clock.
"""

from __future__ import annotations

import enum
import signal
from collections import deque
from dataclasses import dataclass


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    EXITED = "exited"


# (state, event) -> next state; a missing pair is an illegal transition.
TRANSITIONS: dict[tuple[State, str], State] = {
    (State.STARTING, "ready"): State.READY,
    (State.STARTING, "drain"): State.DRAINING,
    (State.STARTING, "exit"): State.EXITED,
    (State.READY, "drain"): State.DRAINING,
    (State.READY, "exit"): State.EXITED,
    (State.DRAINING, "drain"): State.DRAINING,
    (State.DRAINING, "exit"): State.EXITED,
}


class TransitionError(Exception):
    pass


# Why a worker was replaced; these are also the metrics' `reason` labels.
CRASH, HANG, MAX_REQUESTS, MEMORY, RELOAD, SCALE = (
    "crash",
    "hang",
    "max_requests",
    "memory",
    "reload",
    "scale",
)


@dataclass(frozen=True, slots=True)
class Timeouts:
    heartbeat: float = 30.0
    boot: float = 60.0
    graceful: float = 30.0
    kill_grace: float = 3.0  # after SIGABRT (hang) or SIGQUIT, before SIGKILL
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    stable_after: float = 10.0  # a worker that lived this long resets the crash count


# -- actions the master carries out -------------------------------------------


@dataclass(frozen=True, slots=True)
class Spawn:
    slot: int
    generation: int


@dataclass(frozen=True, slots=True)
class Kill:
    pid: int
    signal: int


@dataclass(frozen=True, slots=True)
class Log:
    level: str  # "info" | "warning" | "error"
    message: str


@dataclass(frozen=True, slots=True)
class Notify:
    """Tell systemd: ``READY``, ``RELOADING`` or ``STOPPING``, plus a status line."""

    state: str
    status: str


@dataclass(frozen=True, slots=True)
class Restarted:
    """A worker was replaced for ``reason`` (for metrics)."""

    reason: str


@dataclass(frozen=True, slots=True)
class ReloadDone:
    success: bool


@dataclass(frozen=True, slots=True)
class Exit:
    code: int
    message: str = ""


Action = Spawn | Kill | Log | Notify | Restarted | ReloadDone | Exit


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
    reason: str = ""  # why this worker was started, when it replaces another
    hung: bool = False
    boot_error: str = ""
    boot_code: int = 0
    requests: int = 0
    connections: int = 0
    in_progress: int = 0
    loop_lag: float = 0.0

    def move(self, event: str) -> None:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise TransitionError(
                f"worker {self.pid}: cannot {event} while {self.state.value}"
            ) from None


@dataclass(slots=True)
class Slot:
    index: int
    failures: int = 0
    respawn_at: float = 0.0  # crash backoff: when to start the next worker; 0 = none due
    retired: bool = False


@dataclass(slots=True)
class _Replacement:
    slot: int
    reason: str
    old: int | None
    pid: int = 0  # the new worker, once spawned


class Supervisor:
    """The policy for N worker slots. Feed it events; act on what it returns."""

    def __init__(self, count: int, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self.count = count
        self.workers: dict[int, WorkerInfo] = {}
        self.slots: dict[int, Slot] = {}
        self.generation = 0
        self.ever_ready = False
        self.stopping = False
        self.reloading = False
        self._queue: deque[_Replacement] = deque()
        self._inflight: _Replacement | None = None
        self._announced_ready = False
        self.last_reload = ""

    # -- queries ------------------------------------------------------------

    def live(self) -> list[WorkerInfo]:
        return [w for w in self.workers.values() if w.state is not State.EXITED]

    def serving(self, slot: int) -> WorkerInfo | None:
        """The worker currently serving ``slot`` (ready, not draining)."""
        for w in self.workers.values():
            if w.slot == slot and w.state is State.READY:
                return w
        return None

    def counts(self) -> dict[str, int]:
        result = {s.value: 0 for s in (State.STARTING, State.READY, State.DRAINING)}
        for w in self.live():
            result[w.state.value] += 1
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
        times: list[float] = []
        for w in self.live():
            if w.kill_at:
                times.append(w.kill_at)
            elif w.state is State.STARTING:
                times.append(w.started + self.timeouts.boot)
            elif w.state is State.READY:
                times.append(w.last_seen + self.timeouts.heartbeat)
        times.extend(s.respawn_at for s in self.slots.values() if s.respawn_at)
        return min(times) if times else None

    # -- events ---------------------------------------------------------------

    def start(self) -> list[Action]:
        self.generation += 1
        actions: list[Action] = []
        for index in range(self.count):
            self.slots[index] = Slot(index)
            actions.append(Spawn(index, self.generation))
        return actions

    def spawned(self, pid: int, slot: int, generation: int, now: float) -> None:
        worker = WorkerInfo(pid, slot, generation, started=now, last_seen=now)
        inflight = self._inflight
        if inflight is not None and inflight.slot == slot and not inflight.pid:
            inflight.pid = pid
            if inflight.old is not None:
                worker.replaces = inflight.old
                worker.reason = inflight.reason
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
        worker.move("ready")
        worker.ready_at = worker.last_seen = now
        actions: list[Action] = [
            Log("info", f"worker {worker.slot} (pid {pid}) ready, generation {worker.generation}")
        ]
        if self.stopping:
            return actions + self._drain(worker, now, restart=False)
        old = self.workers.get(worker.replaces) if worker.replaces else None
        if old is not None and old.state is not State.EXITED:
            actions.append(Restarted(worker.reason))
            actions += self._drain(old, now)
        if self._inflight is not None and self._inflight.slot == worker.slot:
            self._inflight = None
            actions += self._advance(now)
        if not self._announced_ready and self._all_ready():
            self.ever_ready = self._announced_ready = True
            actions.append(Notify("READY", self.status()))
        return actions

    def boot_failed(self, pid: int, code: int, message: str) -> None:
        worker = self.workers.get(pid)
        if worker is not None:
            worker.boot_error, worker.boot_code = message, code

    def due(self, pid: int, reason: str, now: float) -> list[Action]:
        """The worker asks to be replaced (max_requests) or is too big (memory)."""
        worker = self.workers.get(pid)
        if worker is None or worker.state is not State.READY or self.stopping:
            return []
        if any(r.old == pid for r in self._queue) or (
            self._inflight is not None and self._inflight.old == pid
        ):
            return []
        self._queue.append(_Replacement(worker.slot, reason, pid))
        return [
            Log("info", f"worker {worker.slot} (pid {pid}) is due for replacement: {reason}"),
            *self._advance(now),
        ]

    def exited(self, pid: int, status: int, now: float) -> list[Action]:
        """``status`` is the exit code, or minus the signal number that killed it."""
        worker = self.workers.pop(pid, None)
        if worker is None:
            return []
        previous = worker.state
        worker.move("exit")
        how = f"exit code {status}" if status >= 0 else f"signal {_signame(-status)}"
        actions: list[Action] = []
        slot = self.slots.get(worker.slot)
        if self.stopping:
            actions.append(Log("info", f"worker {worker.slot} (pid {pid}) stopped ({how})"))
            if not self.live():
                actions.append(Exit(0))
            return actions
        if previous is State.DRAINING:
            actions.append(Log("info", f"worker {worker.slot} (pid {pid}) drained and exited"))
            return actions + self._advance(now)
        if previous is State.STARTING:
            reason = worker.boot_error or f"worker exited during boot ({how})"
            if not self.ever_ready:
                return [
                    Log("error", f"worker {worker.slot} (pid {pid}) failed to boot: {reason}"),
                    *self._shutdown_all(now, graceful=False),
                    Exit(worker.boot_code or 3, reason),
                ]
            inflight = self._inflight
            if inflight is not None and inflight.pid == pid:
                self._inflight = None
                if inflight.reason == RELOAD:
                    self._queue = deque(r for r in self._queue if r.reason != RELOAD)
                    self.last_reload = "failed"
                    self.reloading = False
                    return [
                        Log(
                            "error",
                            f"reload failed: new worker {worker.slot} (pid {pid}) did not boot: "
                            f"{reason}; the previous workers keep serving",
                        ),
                        ReloadDone(False),
                        Notify("READY", self.status()),
                        *self._advance(now),
                    ]
                if inflight.old is not None and inflight.old in self.workers:
                    # The old worker keeps serving; try again after a backoff.
                    actions.append(
                        Log(
                            "error",
                            f"replacement for worker {worker.slot} failed to boot: {reason}; "
                            "keeping the old worker",
                        )
                    )
                    return actions + self._backoff(worker, now, retry=inflight)
            actions.append(
                Log("error", f"worker {worker.slot} (pid {pid}) failed to boot: {reason}")
            )
            if self._replacement_starting(worker.slot):
                return actions  # another worker for this slot is already on its way
            return actions + self._backoff(worker, now)
        # READY and gone: a crash (or the hang kill we sent).
        reason = HANG if worker.hung else CRASH
        actions.append(
            Log(
                "error" if reason == CRASH else "warning",
                f"worker {worker.slot} (pid {pid}) "
                + ("was killed after it stopped responding" if worker.hung else f"died ({how})"),
            )
        )
        actions.append(Restarted(reason))
        if slot is None or slot.retired or self.serving(worker.slot) is not None:
            return actions + self._advance(now)
        if self._replacement_starting(worker.slot):
            return actions  # its replacement is already on the way
        if now - worker.started >= self.timeouts.stable_after and slot is not None:
            slot.failures = 0
        return actions + self._backoff(worker, now)

    # -- commands -------------------------------------------------------------

    def reload(self, count: int, now: float) -> list[Action]:
        """Replace every worker, slot by slot, new before old; then scale to ``count``."""
        if self.stopping:
            return []
        self.generation += 1
        self.reloading = True
        actions: list[Action] = [
            Notify("RELOADING", f"reloading: {self.status()}"),
            Log("info", f"reload started: replacing {self.count} worker(s)"),
        ]
        self._queue = deque(r for r in self._queue if r.reason != RELOAD)
        for index in sorted(self.slots):
            slot = self.slots[index]
            if slot.retired:
                continue
            current = self.serving(index)
            self._queue.append(_Replacement(index, RELOAD, current.pid if current else None))
        actions += self.scale_to(count, now)
        return actions + self._advance(now)

    def scale_to(self, count: int, now: float) -> list[Action]:
        actions: list[Action] = []
        while self.count < count:
            actions += self.scale(+1, now)
        while self.count > count:
            actions += self.scale(-1, now)
        return actions

    def scale(self, delta: int, now: float) -> list[Action]:
        if self.stopping:
            return []
        if delta > 0:
            index = self.count
            self.count += 1
            self.slots[index] = Slot(index)
            self._queue.append(_Replacement(index, SCALE, None))
            return [Log("info", f"scaling up to {self.count} workers"), *self._advance(now)]
        if self.count <= 1:
            return [Log("warning", "not scaling below 1 worker")]
        self.count -= 1
        index = self.count
        slot = self.slots.pop(index)
        slot.retired = True
        self._queue = deque(r for r in self._queue if r.slot != index)
        if self._inflight is not None and self._inflight.slot == index:
            self._inflight = None  # its worker is drained below and will never take over
        actions: list[Action] = [Log("info", f"scaling down to {self.count} workers")]
        for worker in self.live():
            if worker.slot == index:
                actions.append(Restarted(SCALE))
                actions += self._drain(worker, now)
        return actions + self._advance(now)

    def shutdown(self, now: float, *, graceful: bool) -> list[Action]:
        first = not self.stopping
        self.stopping = True
        self._queue.clear()
        self._inflight = None
        actions: list[Action] = []
        if first:
            actions.append(Notify("STOPPING", "stopping"))
            actions.append(Log("info", "graceful shutdown" if graceful else "immediate shutdown"))
        actions += self._shutdown_all(now, graceful=graceful)
        if not self.live():
            actions.append(Exit(0))
        return actions

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        t = self.timeouts
        for worker in self.live():
            if worker.kill_at and now >= worker.kill_at:
                worker.kill_at = now + t.kill_grace
                actions.append(Log("warning", f"worker {worker.slot} (pid {worker.pid}) killed"))
                actions.append(Kill(worker.pid, signal.SIGKILL))
            elif worker.state is State.STARTING and now - worker.started > t.boot:
                worker.boot_error = worker.boot_error or f"not ready within {t.boot:g}s"
                worker.kill_at = now + t.kill_grace
                actions.append(Kill(worker.pid, signal.SIGKILL))
            elif (
                worker.state is State.READY
                and not worker.hung
                and now - worker.last_seen > t.heartbeat
            ):
                worker.hung = True
                worker.kill_at = now + t.kill_grace
                actions.append(
                    Log(
                        "error",
                        f"worker {worker.slot} (pid {worker.pid}) sent no heartbeat for "
                        f"{now - worker.last_seen:.1f}s: its event loop is blocked; "
                        "dumping its stack (SIGABRT) and replacing it",
                    )
                )
                actions.append(Kill(worker.pid, signal.SIGABRT))
                if not self.stopping and not self._replacement_starting(worker.slot):
                    actions.append(Spawn(worker.slot, self.generation))
        for slot in self.slots.values():
            if slot.respawn_at and now >= slot.respawn_at and not self.stopping:
                slot.respawn_at = 0.0
                actions.append(Spawn(slot.index, self.generation))
        return actions

    # -- internals --------------------------------------------------------------

    def _all_ready(self) -> bool:
        return all(self.serving(index) is not None for index in self.slots)

    def _holder(self, slot: int) -> WorkerInfo | None:
        """The newest worker that serves ``slot`` or is starting to."""
        candidates = [
            w
            for w in self.workers.values()
            if w.slot == slot
            and (w.state is State.STARTING or (w.state is State.READY and not w.hung))
        ]
        return max(candidates, key=lambda w: w.started, default=None)

    def _replacement_starting(self, slot: int) -> bool:
        return any(w.slot == slot and w.state is State.STARTING for w in self.workers.values())

    def _advance(self, now: float) -> list[Action]:
        """Start the next queued replacement when none is in flight."""
        actions: list[Action] = []
        while self._inflight is None and self._queue and not self.stopping:
            job = self._queue.popleft()
            if job.slot not in self.slots:
                continue
            old = self.workers.get(job.old) if job.old is not None else None
            if old is None or old.state is not State.READY or old.hung:
                # The worker the job was for is gone (or going): replace whoever
                # holds the slot now, unless it is already of this generation
                # (a reload) or any worker at all holds it (recycling).
                holder = self._holder(job.slot)
                if holder is not None and (
                    job.reason != RELOAD or holder.generation == self.generation
                ):
                    continue
                job = _Replacement(job.slot, job.reason, holder.pid if holder else None)
            self._inflight = job
            self.slots[job.slot].respawn_at = 0.0  # this spawn covers a pending respawn
            actions.append(Spawn(job.slot, self.generation))
        if self._inflight is None and not self._queue and self.reloading:
            self.reloading = False
            self.last_reload = "succeeded"
            actions.append(Log("info", "reload finished"))
            actions.append(ReloadDone(True))
            actions.append(Notify("READY", self.status()))
        return actions

    def _drain(self, worker: WorkerInfo, now: float, *, restart: bool = True) -> list[Action]:
        """Ask a worker to finish in-flight work and exit.

        SIGUSR2 drains for a replacement (WebSockets get close code 1012,
        service restart); SIGTERM drains for shutdown (1001, going away).
        """
        if worker.state is State.DRAINING:
            return []
        worker.move("drain")
        worker.kill_at = now + self.timeouts.graceful + self.timeouts.kill_grace
        return [Kill(worker.pid, signal.SIGUSR2 if restart else signal.SIGTERM)]

    def _shutdown_all(self, now: float, *, graceful: bool) -> list[Action]:
        actions: list[Action] = []
        for slot in self.slots.values():
            slot.respawn_at = 0.0
        for worker in self.live():
            if graceful:
                actions += self._drain(worker, now, restart=False)
            else:
                if worker.state is not State.DRAINING:
                    worker.move("drain")
                worker.kill_at = now + self.timeouts.kill_grace
                actions.append(Kill(worker.pid, signal.SIGQUIT))
        return actions

    def _backoff(
        self, worker: WorkerInfo, now: float, retry: _Replacement | None = None
    ) -> list[Action]:
        slot = self.slots.get(worker.slot)
        if slot is None:
            return []
        slot.failures += 1
        delay = min(
            self.timeouts.backoff_cap, self.timeouts.backoff_base * 2 ** (slot.failures - 1)
        )
        if slot.failures == 1 and retry is None:
            delay = 0.0  # the first crash is replaced at once
        if retry is not None:
            retry.pid = 0
            self._inflight = retry  # the tick spawns it again when the backoff ends
            slot.respawn_at = now + delay
            return [Log("warning", f"retrying worker {slot.index} in {delay:.1f}s")]
        if delay == 0.0:
            return [Spawn(slot.index, self.generation)]
        slot.respawn_at = now + delay
        return [
            Log(
                "warning",
                f"worker {slot.index} crashed {slot.failures} times in a row; "
                f"restarting it in {delay:.1f}s",
            )
        ]


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
