"""The master process: sockets, forking, signals, and the select loop.

The master is deliberately boring: no asyncio loop and no threads, so forking
is always safe. Signal handlers do nothing; ``signal.set_wakeup_fd`` writes
each signal's number into a pipe the loop selects on. Every decision is made
by ``_core.Supervisor``; this module feeds it events (signals, worker messages,
exits, the monotonic clock, ``asgid ctl`` commands from ``_control``) and
carries out the actions it returns.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import selectors
import signal
import socket
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import setproctitle

from .. import _logging, _runtime
from .. import _wire as wire
from .._exceptions import AppLoadError, BootError
from .._limits import raise_nofile_limit
from .._privileges import worker_ids, writable_by
from .._sockets import Listeners
from .._sockets import describe as _describe
from .._tls import certificate_expiry, make_ssl_context
from .._wire import WorkerExit
from ..config import Config, ConfigError, Share
from ..config._load import Origin, load_config_with_origins
from ..worker._main import preload, worker_main
from . import _archive, _core, _memory, _reaper
from ._control import ControlServer
from ._cpus import available_cpus
from ._exporter import Exporter, sample_process
from ._http import MetricsServer
from ._store import MetricsStore, Refresh
from ._systemd import Notifier, listen_fds
from ._watch import Spec, Watcher

logger = logging.getLogger("asgid.error")

HANDLED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGCHLD,
)
MEMORY_CHECK_SECONDS = 5.0
# A worker's loop sends a heartbeat every second; one this late has missed
# two, and a stand-in for it starts booting (it is killed at [workers].timeout).
LATE_SECONDS = 2.5
# How long a /metrics scrape or `asgid ctl status` waits for the workers' fresh counts.
FRESH_WAIT = 0.5
FRESH_SILENCE = 2.0  # a worker not heard from this long is not asked (it is late or stuck)


def preflight(config: Config) -> tuple[int, int]:
    """What a start checks before it binds or forks; the workers' (uid, gid).

    The workers' user and group must exist, and the TLS files must load (the
    key matching the certificate). Raises ``ConfigError`` naming the setting,
    so that ``--check-config`` and a start fail alike, with exit status 2.
    """
    ids = worker_ids(config.process)
    try:
        make_ssl_context(config.server, http2=config.http.http2)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc), key="server.ssl_certfile") from None
    return ids


def worker_count(config: Config) -> int:
    """``[workers].count``, or for "auto" (0) the CPUs this process may really use."""
    return config.workers.count or available_cpus()[0]


def timeouts(config: Config) -> _core.Timeouts:
    w = config.workers
    return _core.Timeouts(
        heartbeat=w.timeout,
        late=min(LATE_SECONDS, w.timeout),
        boot=w.boot_timeout,
        graceful=w.graceful_timeout,
        shutdown_delay=w.shutdown_delay,
    )


@dataclass(frozen=True, slots=True)
class Deployment:
    """What the workers of one generation run: its config, user and listeners."""

    generation: int
    config: Config
    worker_ids: tuple[int, int]  # (uid, gid) of [process].user/group; -1: the master's
    sockets: list[socket.socket]
    origins: Mapping[str, Origin]  # where each setting that is not a default came from


class Master:
    def __init__(
        self,
        config: Config,
        *,
        config_path: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        origins: Mapping[str, Origin] | None = None,
    ) -> None:
        self.config = config  # the committed configuration
        self.config_path = config_path
        self.overrides = dict(overrides or {})
        self.origins: Mapping[str, Origin] = dict(origins or {})
        self.core = _core.Supervisor(worker_count(config), timeouts(config))
        self.notifier = Notifier()
        self.selector = selectors.DefaultSelector()
        self.channels: dict[int, socket.socket] = {}  # pid -> master end of the socketpair
        self.decoders: dict[int, wire.Decoder] = {}
        self.listeners = Listeners()
        self.exit: _core.Exit | None = None
        self._wakeup_r = self._wakeup_w = -1
        self._next_memory_check = 0.0
        self._next_watchdog = 0.0
        self.metrics = MetricsStore()
        self.metrics_dir = ""
        self._owns_metrics_dir = False
        self._metrics_dir_ids = (-1, -1)  # whom the metrics directory was given to
        self.metrics_server: MetricsServer | None = None
        self.control: ControlServer | None = None
        self.refresh = Refresh()  # scrapes waiting for the workers' fresh counts
        self.started = time.monotonic()
        self.last_reload: dict[str, Any] | None = None  # when, generation, result, reason
        self.tls_expiry: dict[str, float] = {}  # listener -> certificate notAfter
        self.worker_ids = (-1, -1)  # (uid, gid) of [process].user/group; -1: the master's
        self.deployments: dict[int, Deployment] = {}  # the committed and the pending one
        self.watcher: Watcher | None = None  # --reload
        self._previous_handlers: dict[int, Any] = {}
        self.memory: _memory.Available | None = None  # for a max_memory share; read at start
        self._was_subreaper: bool | None = None  # None: unknown, left alone

    # -- running ------------------------------------------------------------------

    def run(self) -> None:
        """Serve until stopped.

        Raises ``ConfigError`` when a check before the start fails, ``OSError``
        when a listener cannot be bound, and ``AppLoadError`` or ``BootError``
        when the first workers cannot boot; ``cli`` turns them into exit codes.
        """
        title = self.config_path or self.config.app.target
        setproctitle.setproctitle(f"asgid: master [{title}]")
        _logging.set_role("master")
        self.worker_ids = preflight(self.config)
        if self.config.metrics.bind:
            # Before the application's listeners: once a client can connect
            # there, /metrics and /readyz accept connections too.
            self._start_metrics()
        inherited = [socket.socket(fileno=fd) for fd in listen_fds()]
        self.listeners = Listeners(inherited)
        try:
            sockets = self.listeners.acquire(self.config.server)
        except OSError as exc:
            self._stop_metrics()
            raise OSError(f"cannot bind: {exc}") from exc
        for line in self.listeners.describe():
            logger.info("listening on %s", line)
        if self.metrics_server is not None:
            logger.info("metrics on http://%s/metrics", self.config.metrics.bind)
        try:
            self._start_control()
        except OSError:
            self._stop_metrics()
            self.listeners.close()
            raise
        raise_nofile_limit()  # before forking: the workers inherit it
        # Orphans below the master come to it, to be reaped.
        self._was_subreaper = _reaper.set_subreaper(True)
        preload()
        self._install_signals()
        self._write_pidfile()  # once it exists, signals are handled, not fatal
        try:
            logger.info(
                "master started (pid %d), %d worker(s) for %s",
                os.getpid(),
                self.core.count,
                self.config.app.target,
            )
            if not self.config.workers.count:
                logger.info("workers = auto: %d, from the %s", *available_cpus())
            if self.config.workers.max_memory:
                self._check_memory_fits()
            actions = self.core.start()
            self.deployments[self.core.generation] = Deployment(
                self.core.generation, self.config, self.worker_ids, sockets, self.origins
            )
            self._read_certificates(self.config, sockets)
            self._execute(actions)
            self._sync_watcher()
            while self.exit is None:
                self._step()
        finally:
            self._cleanup()
        if self.exit.code is WorkerExit.APP_LOAD_FAILED:
            raise AppLoadError(self.exit.message)
        if self.exit.code is not WorkerExit.OK:
            raise BootError(self.exit.message)

    def _step(self) -> None:
        now = time.monotonic()
        timeout = 1.0
        deadline = self.core.next_deadline()
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - now))
        if self.notifier.watchdog_interval:  # a WatchdogSec below 2 s needs pings within 1 s
            timeout = min(timeout, max(0.0, self._next_watchdog - now))
        for waiting in (self.refresh.next_deadline(), self._control_deadline()):
            if waiting is not None:
                timeout = min(timeout, max(0.0, waiting - now))
        for key, mask in self.selector.select(timeout):
            if key.fd == self._wakeup_r:
                self._read_signals()
            elif isinstance(key.data, int):
                self._read_channel(key.data)
            else:
                key.data(mask)  # a metrics or control endpoint socket, the file watcher
        self._reap()
        now = time.monotonic()
        self._execute(self.core.tick(now))
        if self.config.workers.max_memory and now >= self._next_memory_check:
            self._next_memory_check = now + MEMORY_CHECK_SECONDS
            self._check_memory(now)
        self.refresh.expire(now)
        if self.metrics_server is not None:
            self.metrics_server.expire(now)
        if self.control is not None:
            if self.core.shutting_down:
                self.control.stopping()
            self.control.expire(now)
        if self.notifier.watchdog_interval and now >= self._next_watchdog:
            self._next_watchdog = now + self.notifier.watchdog_interval
            self.notifier.watchdog()

    # -- events -----------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            # Restored at the end: asgid.run() hands the process back to its program.
            self._previous_handlers[signum] = signal.signal(signum, _record_signal)
        if os.getpid() == 1:  # the CLI held them blocked: what came meanwhile is handled now
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        self.selector.register(self._wakeup_r, selectors.EVENT_READ)

    def _read_signals(self) -> None:
        try:
            data = os.read(self._wakeup_r, 4096)
        except BlockingIOError:
            return
        for signum in data:
            handler = _SIGNAL_HANDLERS.get(signum)
            if handler is not None:
                handler(self)

    def handle_sighup(self) -> None:
        logger.info("SIGHUP: reloading %s", self.config_path or "the configuration")
        self.reload()

    def _on_files_changed(self, mask: int) -> None:
        if self.watcher is None:  # stopped earlier in the same select() batch
            return
        events = self.watcher.read()
        if events is None:
            if not self.core.shutting_down:
                logger.error("the file watcher exited; files are no longer watched")
            self._stop_watcher()
            return
        for event in events:
            if "watching" in event:
                logger.info("watching %s for changes", ", ".join(event["watching"]))
        changed = sorted({path for event in events for path in event.get("changed", ())})
        if not changed or self.core.shutting_down:
            return
        shown = ", ".join(changed[:5]) + (
            f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        )
        logger.info("changed: %s; reloading", shown)
        self.reload()

    def _sync_watcher(self) -> None:
        """Run the --reload watcher the committed configuration asks for (or none)."""
        wanted = (
            Spec.from_config(self.config, self.config_path) if self.config.reload.enabled else None
        )
        if self.watcher is not None and (wanted is None or wanted != self.watcher.spec):
            self._stop_watcher()
        if wanted is None or self.watcher is not None:
            return
        if self.config.process.user or self.notifier.enabled:
            logger.warning("--reload is a development feature; this looks like a deployment")
        self.watcher = Watcher(wanted)
        self.watcher.start()
        self.selector.register(self.watcher.fileno(), selectors.EVENT_READ, self._on_files_changed)

    def _stop_watcher(self) -> None:
        if self.watcher is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.watcher.fileno())
        self.watcher.stop()
        self.watcher = None

    def handle_sigterm(self) -> None:
        self.stop(graceful=True)

    handle_sigint = handle_sigterm

    def handle_sigquit(self) -> None:
        self.stop(graceful=False)

    def stop(self, *, graceful: bool) -> None:
        self._execute(self.core.shutdown(time.monotonic(), graceful=graceful))

    def handle_sigttin(self) -> None:
        self._execute(self.core.scale(+1, time.monotonic()))

    def handle_sigttou(self) -> None:
        self._execute(self.core.scale(-1, time.monotonic()))

    def handle_sigusr1(self) -> None:
        logger.info("reopening log files")
        _logging.reopen_files()
        for pid in self.channels:
            self._kill(pid, signal.SIGUSR1)

    def handle_sigchld(self) -> None:
        pass  # reaping happens on every step

    def reload(self) -> tuple[int, str, str]:
        """Start a reload as one pending change: committed or rolled back whole.

        Returns the new generation, or 0, the kind of failure (``config``,
        ``error``, ``refused``) and why it did not start.

        The new configuration is loaded and its new listeners bound now; the
        master's own settings (timeouts, logging, the metrics directory's
        owner) change only when the core commits, once every slot has a new
        worker. Until then the old workers serve, and replacements for them
        keep the old configuration and listeners.
        """
        if self.core.shutting_down:
            logger.info("not reloading: shutting down")
            return 0, "refused", "shutting down"
        try:
            config, origins = load_config_with_origins(self.config_path, self.overrides)
            ids = worker_ids(config.process)
            sockets = self.listeners.acquire(config.server)
        except (ConfigError, OSError) as exc:
            logger.error("reload aborted, still serving the previous configuration: %s", exc)
            self.core.last_reload = "failed (configuration)"
            self.metrics.reloaded(False)
            self._record_reload(0, "failed", f"configuration: {exc}")
            # With Type=notify-reload systemd waits for RELOADING=1, then READY=1,
            # after every SIGHUP it sends: a reload that ends at once still says both.
            self.notifier.reloading("reloading")
            self.notifier.ready(self.core.status())
            return 0, "config" if isinstance(exc, ConfigError) else "error", str(exc)
        self._give_metrics_dir(ids)  # new workers may run as another user
        actions = self.core.reload(worker_count(config), time.monotonic())
        pending = self.core.pending
        assert pending is not None
        self.deployments = {g: d for g, d in self.deployments.items() if g == self.core.generation}
        self.deployments[pending.generation] = Deployment(
            pending.generation, config, ids, sockets, origins
        )
        self._record_reload(pending.generation, "in progress", "")
        if self.control is not None:
            self.control.reload_started(pending.generation)
        self._execute(actions)
        return pending.generation, "", ""

    def _record_reload(self, generation: int, result: str, reason: str) -> None:
        self.last_reload = {
            "at": time.time(),
            "generation": generation,
            "result": result,
            "reason": reason,
        }

    def _reload_done(self, done: _core.ReloadDone) -> None:
        success, generation = done.success, done.generation
        self._record_reload(generation, "succeeded" if success else "failed", done.reason)
        if self.control is not None:
            self.control.reload_done(success, generation, done.reason, done.code)
        deployment = self.deployments.pop(generation, None)
        if success and deployment is not None:
            self.deployments = {generation: deployment}
            previous, self.config = self.config, deployment.config
            self.origins = deployment.origins
            self._read_certificates(deployment.config, deployment.sockets)
            self.worker_ids = deployment.worker_ids
            self.core.timeouts = timeouts(deployment.config)
            # Unchanged settings leave logging alone: it may be a program's own
            # (asgid.run(log_config=None or a dict)).
            if deployment.config.logging != previous.logging:
                try:
                    _logging.configure(deployment.config.logging)
                except ConfigError as exc:  # its workers booted with it: an edit raced
                    logger.error("cannot apply the new logging configuration: %s", exc)
            self._sync_watcher()
        else:
            self._give_metrics_dir(self.worker_ids)
        self.metrics.reloaded(success)
        keep = [sock for d in self.deployments.values() for sock in d.sockets]
        self.listeners.release(keep)

    def _read_channel(self, pid: int) -> None:
        channel = self.channels.get(pid)
        if channel is None:
            return
        try:
            data = channel.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_channel(pid)
            return
        try:
            messages = self.decoders[pid].feed(data)
        except wire.FrameError as exc:
            logger.error("worker pid %d sent garbage (%s); killing it", pid, exc)
            self._kill(pid, signal.SIGKILL)
            return
        now = time.monotonic()
        for message in messages:
            if message.kind is wire.Kind.HEARTBEAT:
                self.core.heartbeat(pid, now, message.data)
                self.metrics.heartbeat(pid, message.data)
            elif message.kind is wire.Kind.STATS:
                seq = message.data.pop("seq", 0)
                self.core.heartbeat(pid, now, message.data)
                self.metrics.report(pid, message.data)
                self.refresh.answered(pid, int(seq) if isinstance(seq, int) else 0)
            elif message.kind is wire.Kind.READY:
                self._execute(self.core.ready(pid, now))
            elif message.kind is wire.Kind.DUE:
                # A worker asks only for max_requests; the master decides on memory.
                self._execute(self.core.due(pid, _core.Reason.MAX_REQUESTS, now))
            elif message.kind is wire.Kind.BOOT_FAILED:
                try:
                    code = wire.WorkerExit(int(message.data.get("code", 0)))
                except (TypeError, ValueError):
                    code = wire.WorkerExit.BOOT_FAILED
                self.core.boot_failed(pid, code, str(message.data.get("message", "")))

    def _reap(self) -> None:
        """Reap every exited child: workers, and orphans adopted as subreaper or PID 1."""
        while (pid := _reaper.next_exited()) is not None:
            worker = self.core.workers.get(pid)
            if worker is not None or pid in self.channels:
                # Whatever the worker started dies with it: unreaped, it still
                # holds its pid, so its group id cannot have been reused.
                _reaper.kill_group(pid)
            try:
                code = _reaper.reap(pid)
            except ChildProcessError:
                continue
            if self.watcher is not None and pid == self.watcher.pid:
                continue  # its pipe's end tells the loop
            if worker is None and pid not in self.channels:
                logger.debug("reaped pid %d, not a worker (%s)", pid, _how(code))
                continue  # an orphan adopted as subreaper or PID 1: nothing else to do
            # Read what the worker said last (READY/BOOT_FAILED) before its exit.
            if pid in self.channels:
                self._read_channel(pid)
            self._close_channel(pid)
            if worker is not None:
                self.metrics.exited(pid, worker.slot)
            if self.metrics_dir:
                try:
                    _archive.merge_dead_files(self.metrics_dir, pid)
                except Exception:
                    logger.exception("could not merge the metrics files of worker pid %d", pid)
            self.refresh.gone(pid)
            self._execute(self.core.exited(pid, code, time.monotonic()))

    def _check_memory(self, now: float) -> None:
        import psutil  # only when max_memory is set

        setting = self.config.workers.max_memory
        if isinstance(setting, Share) and self.memory is None:
            self.memory = _memory.available()  # a reload turned the share on
        limit = _memory.per_worker(setting, self.core.count, self.memory)
        for worker in self.core.live():
            if not worker.state.up:
                continue
            try:
                rss = psutil.Process(worker.pid).memory_info().rss
            except psutil.Error:
                continue
            if rss > limit:
                logger.warning(
                    "worker %d (pid %d) uses %d MiB, above max_memory %d MiB",
                    worker.slot,
                    worker.pid,
                    rss >> 20,
                    limit >> 20,
                )
                self._execute(self.core.due(worker.pid, _core.Reason.MEMORY, now))

    def _check_memory_fits(self) -> None:
        """Say what max_memory comes to, and warn when the workers will not fit."""
        import psutil

        setting = self.config.workers.max_memory
        self.memory = _memory.available()
        logger.info("%s", _memory.describe(setting, self.core.count, self.memory))
        rss = psutil.Process().memory_info().rss
        warning = _memory.fit_warning(setting, self.core.count, self.memory, rss)
        if warning:
            logger.warning("%s", warning)

    # -- actions ------------------------------------------------------------------------

    def _execute(self, actions: list[_core.Action]) -> None:
        for action in actions:
            if isinstance(action, _core.Spawn):
                self._spawn(action.slot, action.generation)
            elif isinstance(action, _core.Drain):
                self._drain(action.pid, action.restart)
            elif isinstance(action, _core.Kill):
                self._kill(action.pid, action.signal)
            elif isinstance(action, _core.StopListening):
                self.deployments.clear()
                self.listeners.close()
                self._stop_watcher()
            elif isinstance(action, _core.Log):
                logger.log(action.level, action.message)
            elif isinstance(action, _core.Notify):
                self._notify(action)
            elif isinstance(action, _core.Restarted):
                self.metrics.restarted(action.reason)
            elif isinstance(action, _core.ReloadDone):
                self._reload_done(action)
            elif isinstance(action, _core.Exit):
                self.exit = action
                return

    def _notify(self, action: _core.Notify) -> None:
        if action.state is _core.NotifyState.READY:
            self.notifier.ready(action.status)
        elif action.state is _core.NotifyState.RELOADING:
            self.notifier.reloading(action.status)
        elif action.state is _core.NotifyState.STOPPING:
            self.notifier.stopping(action.status)

    def _drain(self, pid: int, restart: bool) -> None:
        # Over the worker's channel, not as a signal: a SIGTERM or ^C sent to
        # the whole process group (systemd's default KillMode, a terminal) is
        # decided by the master alone, and workers ignore both.
        channel = self.channels.get(pid)
        if channel is None:
            return
        try:
            channel.send(wire.encode(wire.Kind.DRAIN, restart=restart))
        except OSError:
            pass  # gone or wedged: the kill deadline takes care of it

    def _kill(self, pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def _spawn(self, slot: int, generation: int) -> None:
        deployment = self.deployments[generation]
        config, sockets = deployment.config, deployment.sockets
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # A signal that reaches the child before it has set up its own handlers
        # would run the master's (which does nothing there) and be lost: block
        # them across the fork; the child unblocks once its handlers are set.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        pid = -1
        try:
            pid = os.fork()
        finally:
            if pid != 0:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if pid == 0:  # pragma: no cover - the child process, measured by the process tests
            try:
                os.setpgid(0, 0)  # its own group, killed with it (_reaper)
                parent.close()
                self._close_in_child(keep=sockets)
                worker_main(
                    slot=slot,
                    config=config,
                    sockets=sockets,
                    channel=child,
                    logging_changed=config.logging != self.config.logging,
                )
            finally:
                os._exit(1)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # as the child does: set before anything kills the group
        child.close()
        parent.setblocking(False)
        self.channels[pid] = parent
        self.decoders[pid] = wire.Decoder()
        self.selector.register(parent, selectors.EVENT_READ, data=pid)
        self.core.spawned(pid, slot, generation, time.monotonic())
        logger.info("worker %d booting (pid %d)", slot, pid)

    def _close_in_child(self, keep: list[socket.socket]) -> None:
        """In a new worker: drop the master's fds the worker must not hold."""
        signal.set_wakeup_fd(-1)
        for fd in (self._wakeup_r, self._wakeup_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        for channel in self.channels.values():
            channel.close()
        kept = {id(sock) for sock in keep}
        for sock in self.listeners.all():
            if id(sock) not in kept:
                sock.close()
        if self.metrics_server is not None:
            self.metrics_server.close_in_child()
        if self.control is not None:
            self.control.close_in_child()
        if self.watcher is not None:
            with contextlib.suppress(OSError):
                os.close(self.watcher.fileno())
        self.selector.close()
        self.notifier.close()

    def _close_channel(self, pid: int) -> None:
        channel = self.channels.pop(pid, None)
        self.decoders.pop(pid, None)
        if channel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(channel)
            channel.close()

    def _give_metrics_dir(self, ids: tuple[int, int]) -> None:
        """Workers from now on run as ``ids``: hand them the metrics directory."""
        if self.metrics_dir and ids != self._metrics_dir_ids:
            try:
                _archive.give_to_workers(self.metrics_dir, self._owns_metrics_dir, ids)
            except OSError as exc:
                logger.error("cannot give the metrics directory to the workers' user: %s", exc)
            else:
                self._metrics_dir_ids = ids

    def _start_metrics(self) -> None:
        self.metrics_dir, self._owns_metrics_dir = _archive.setup_multiproc_dir(self.worker_ids)
        self._metrics_dir_ids = self.worker_ids
        exporter = Exporter(
            self.metrics, lambda: self.core, self.metrics_dir, tls_expiry=lambda: self.tls_expiry
        )
        try:
            self.metrics_server = MetricsServer(
                self.config.metrics.bind,
                self.selector,
                exporter,
                self._readiness,
                fresh=self.fresh_counts,
            )
        except BaseException:
            self._stop_metrics()
            raise

    def _stop_metrics(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        if self._owns_metrics_dir:
            _archive.remove_dir(self.metrics_dir)
            self._owns_metrics_dir = False

    # -- what `asgid ctl` asks (see _control) -------------------------------------------

    def _start_control(self) -> None:
        """Listen on ``[control].socket``; ``auto`` puts it where ``asgid ctl -c`` looks."""
        path = self.config.control.socket
        if not path:
            return
        if path != _runtime.AUTO:
            self.control = ControlServer(path, self.selector, self)
        elif self.config_path:  # else nothing to name it after: `asgid ctl -c` could not find it
            # A second master from the same file (a blue/green switch) runs
            # without one: `asgid ctl -c` keeps reaching the first.
            try:
                path = _runtime.server_socket_path(self.config_path)
                self.control = ControlServer(path, self.selector, self)
            except OSError as exc:
                logger.warning("no control socket: %s", exc)
        if self.control is not None:
            logger.info("control socket at %s", path)

    def _control_deadline(self) -> float | None:
        return self.control.next_deadline() if self.control is not None else None

    def fresh_counts(self, then: Callable[[], None]) -> None:
        """Ask every worker whose loop runs for its counts now; call ``then`` once
        they are all in (or after ``FRESH_WAIT``): a request answered before
        this call is counted in what ``then`` reads."""
        # Only workers heard from lately: their loops read the channel, so the
        # small frames sent here never pile up in front of a stuck one.
        now = time.monotonic()
        asked = [
            w.pid
            for w in self.core.live()
            if w.state in (_core.State.READY, _core.State.DRAINING)
            and now - w.last_seen < FRESH_SILENCE
            and w.pid in self.channels
        ]
        seq = self.refresh.seq + 1
        frame = wire.encode(wire.Kind.SCRAPE, seq=seq)
        reached = []
        for pid in asked:
            try:
                self.channels[pid].send(frame)
            except OSError:
                continue  # wedged or gone: the scrape goes on without it
            reached.append(pid)
        self.refresh.start(reached, now + FRESH_WAIT, then)

    def scale_to(self, count: int) -> None:
        self._execute(self.core.scale_to(count, time.monotonic()))

    def recycle(self, pid: int) -> int:
        """Replace worker ``pid``, new before old; its slot."""
        self._execute(self.core.recycle(pid, time.monotonic()))
        return self.core.workers[pid].slot

    def status_report(self) -> dict[str, Any]:
        """``asgid ctl status``: the master and each worker (JSON-ready)."""
        now, wall = time.monotonic(), time.time()
        core = self.core
        if core.shutting_down:
            state = "stopping"
        elif core.reloading:
            state = "reloading"
        else:
            state = "running"
        workers = []
        for w in sorted(core.live(), key=lambda w: (w.slot, w.started)):
            sample = sample_process(w.pid)
            workers.append(
                {
                    "slot": w.slot,
                    "pid": w.pid,
                    "generation": w.generation,
                    "state": w.state.value,
                    "age": round(now - w.started, 3),
                    "requests": w.requests,
                    "connections": w.connections,
                    "in_progress": w.in_progress,
                    "rss": sample.rss if sample is not None else None,
                    "lag": w.loop_lag,
                    "last_heartbeat": round(now - w.last_seen, 3),
                    "started_for": w.reason.value if w.reason is not None else None,
                }
            )
        return {
            "master": {
                "pid": os.getpid(),
                "uptime": round(now - self.started, 3),
                "started_at": self.metrics.started,
                "now": wall,
                "config_path": self.config_path,
                "app": self.config.app.target,
                "state": state,
                "generation": core.generation,
                "pending_generation": core.pending.generation if core.pending else None,
                "workers_wanted": core.count,
                "counts": core.counts(),
                "last_reload": self.last_reload,
                "listeners": self.listeners.describe(),
                "control_socket": self.control.path if self.control is not None else None,
            },
            "workers": workers,
        }

    def _read_certificates(self, config: Config, sockets: list[socket.socket]) -> None:
        """The notAfter of the certificate each TLS listener serves (for /metrics)."""
        self.tls_expiry = {}
        if not config.server.ssl_certfile:
            return
        try:
            not_after = certificate_expiry(config.server.ssl_certfile)
        except (OSError, ValueError) as exc:
            logger.warning("cannot read the certificate's expiry: %s", exc)
            return
        for sock in sockets:
            with contextlib.suppress(OSError):
                self.tls_expiry[_describe(sock)] = not_after

    def _readiness(self) -> tuple[bool, str]:
        ready = self.core.counts()["ready"]
        wanted = max(1, self.config.metrics.ready_min_workers)
        if self.core.shutting_down:
            return False, "shutting down"
        if ready < wanted:
            return False, f"{ready} worker(s) ready, {wanted} needed"
        return True, f"{ready} worker(s) ready"

    def _write_pidfile(self) -> None:
        """Write the master's pid: owned by the master, mode 0644.

        Workers running as another user can read it, never rewrite it. The
        file is created afresh (never through a link left in its place) and
        renamed over the path, so a reader sees the old pid or the new one.
        """
        path = self.config.process.pidfile
        if not path:
            return
        tmp = f"{path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o644)
        with open(fd, "w") as f:
            os.fchmod(fd, 0o644)  # whatever the umask
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, path)
        directory = os.stat(os.path.dirname(os.path.abspath(path)))
        uid, gid = self.worker_ids
        if (
            uid not in (-1, os.getuid())
            and not directory.st_mode & stat.S_ISVTX  # /tmp: only the owner may replace it
            and writable_by(directory, uid, gid)
        ):
            logger.warning(
                "workers can write in the directory of the pidfile %s, and so could replace it",
                path,
            )

    def _cleanup(self) -> None:
        self._stop_watcher()
        for pid in {*self.channels, *self.core.workers}:  # not reaped: the group is theirs
            _reaper.kill_group(pid)
        deadline = time.monotonic() + 5
        while self.channels and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self._close_channel(pid)
        if self._was_subreaper is False:
            _reaper.set_subreaper(False)
        gc.unfreeze()  # preload() froze them for the workers; asgid.run() gets them back
        signal.set_wakeup_fd(-1)
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._stop_metrics()
        if self.control is not None:
            self.control.close()
            self.control = None
        self.listeners.close()
        self.selector.close()
        self.notifier.close()
        if self.config.process.pidfile:
            with contextlib.suppress(OSError):
                os.unlink(self.config.process.pidfile)
        for fd in (self._wakeup_r, self._wakeup_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _how(code: int) -> str:
    return f"exit code {code}" if code >= 0 else f"signal {_core._signame(-code)}"


def _record_signal(signum: int, frame: object) -> None:
    """Signals are dispatched from the wakeup pipe by the loop; nothing happens here."""


_SIGNAL_HANDLERS = {
    int(signum): getattr(Master, f"handle_{signum.name.lower()}") for signum in HANDLED_SIGNALS
}
