"""The root process: spawns the stages, watches them, restarts them, shuts them down.

    python supervisor.py            run the server (the Procfile's `web:` line)
    python supervisor.py migrate    apply database migrations and exit (`release:`)
    python supervisor.py import-original PATH [--resend-processed]
                                    bring the original server's database in (server stopped)

It owns the listening socket (clients wait in the backlog while ingest restarts), the
queues (fresh ones after any death that may have poisoned one) and the exit code.
Signal handlers only record the signal; the loop sleeps in `connection.wait()` on the
children's sentinels, their status pipes and a wake-up fd, and calls `handle_<signal>`.

Child states (pipeline/supervision.py has the policy):

    STARTING --ready--> RUNNING --exit--> EXITED --> BACKOFF --delay--> STARTING
                                             \\--> FATAL (never-retry code, or flapping)
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from config.settings import ConfigError, Settings, load_from_process
from pipeline.channels import STAGES, AnyQueue, create_inboxes, outboxes_of, release_queues
from pipeline.exitcodes import ExitCode
from pipeline.runtime import StageSpec, configure_logging, run_stage
from pipeline.supervision import ChildState, RestartTracker, Scope, StageStates, describe_exit

log = logging.getLogger("supervisor")
ENTRIES = {name: f"stages.{name}:run" for name in STAGES}
# Ingest keeps no state the others rely on, so a clean crash of it restarts it alone.
RESTART_ALONE = frozenset({"ingest"})
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Survivors of a death cannot finish their drain (a producer is gone), and all they hold
# is either committed or claimed-and-requeued, so a tree restart waits only this long.
TEARDOWN_TIMEOUT_S = 2.0


@dataclass(slots=True)
class Child:
    name: str
    process: BaseProcess
    status: Connection
    started_at: float
    state: ChildState = ChildState.STARTING


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mp = multiprocessing.get_context("spawn")
        self.states = StageStates(self.mp, STAGES)
        self.tracker = RestartTracker(settings.restart)
        self.children: dict[str, Child] = {}
        self.queues: dict[str, AnyQueue] = create_inboxes(self.mp)
        self.to_start: list[str] = []
        self.restart_at: float | None = None
        self.stop_deadline: float | None = None
        self.tearing_down = False  # a tree restart is waiting for the old children to exit
        self.pending_delay_s = 0.0
        self.teardown_deadline: float | None = None
        self.exit_code: int | None = None
        self.signals: list[int] = []
        self.sock = bind_listener(settings)

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, lambda signum, _frame: self.signals.append(signum))
        self.begin_start(list(STAGES))
        while self.children or self.to_start or self.restart_at is not None:
            if self.stop_deadline is not None and not self.children:
                break
            ready = wait([*self.waitables(), wake_r], timeout=self.next_timeout_s())
            if wake_r in ready:
                wake_r.recv(4096)
            while self.signals:
                self.handle_signal(self.signals.pop(0))
            for obj in ready:
                self.on_readable(obj)
            self.on_tick(time.monotonic())
        self.sock.close()
        release_queues(self.queues.values())
        code = self.exit_code if self.exit_code is not None else int(ExitCode.OK)
        log.info("supervisor exiting with code %d", code)
        return code

    def waitables(self) -> list[Any]:
        objs: list[Any] = []
        for child in self.children.values():
            objs.append(child.process.sentinel)
            if child.state is ChildState.STARTING:
                objs.append(child.status)
        return objs

    def next_timeout_s(self) -> float:
        now = time.monotonic()
        deadlines = [d for d in (self.restart_at, self.stop_deadline, self.teardown_deadline) if d is not None]
        deadlines += [
            c.started_at + self.settings.restart.boot_timeout_s
            for c in self.children.values()
            if c.state is ChildState.STARTING
        ]
        return max(0.0, min(deadlines) - now) if deadlines else 60.0

    def on_readable(self, obj: Any) -> None:
        for child in list(self.children.values()):
            if obj is child.status:
                self.on_status(child)
            elif obj == child.process.sentinel:
                self.reap(child)

    def on_tick(self, now: float) -> None:
        if self.stop_deadline is not None and now >= self.stop_deadline:
            self.kill_stragglers()
            self.stop_deadline = now + 5.0  # reap them; a kill cannot be refused
        if self.teardown_deadline is not None and now >= self.teardown_deadline:
            self.kill_stragglers()
            self.teardown_deadline = None
        if self.restart_at is not None and now >= self.restart_at and self.stop_deadline is None:
            self.restart_at = None
            self.spawn_next()
        for child in list(self.children.values()):
            if child.state is ChildState.STARTING and now - child.started_at > self.settings.restart.boot_timeout_s:
                log.error(
                    "%s did not become ready in %.0fs; killing it", child.name, self.settings.restart.boot_timeout_s
                )
                child.process.kill()

    # --- signals --------------------------------------------------------------------------

    def handle_signal(self, signum: int) -> None:
        if signum in HANDLED_SIGNALS:
            self.handle_term(signal.Signals(signum).name)

    def handle_term(self, name: str) -> None:
        if self.stop_deadline is None:
            log.info("%s received: draining (deadline %.1fs)", name, self.settings.shutdown_timeout_s)
            self.stop_all(self.settings.shutdown_timeout_s)

    # --- children -------------------------------------------------------------------------

    def begin_start(self, names: list[str], delay_s: float = 0.0) -> None:
        self.to_start = [n for n in STAGES if n in names]
        self.restart_at = time.monotonic() + delay_s

    def spawn_next(self) -> None:
        """Start the next stage of the start order; the one after waits for its Ready."""
        if not self.to_start:
            return
        name = self.to_start.pop(0)
        status_r, status_w = self.mp.Pipe(duplex=False)
        spec = StageSpec(
            name=name,
            entry=ENTRIES[name],
            settings=self.settings,
            inbox=self.queues[name],
            outboxes=outboxes_of(name, self.queues),
            status=status_w,
            listen_socket=self.sock if name == "ingest" else None,
            states=self.states,
        )
        process = self.mp.Process(target=run_stage, args=(spec,), name=name)
        # Blocked while spawning so a TERM cannot land between start() and our bookkeeping.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        status_w.close()
        self.children[name] = Child(name, process, status_r, time.monotonic())
        self.states.set(name, ChildState.STARTING)
        log.info("%s started (pid %s)", name, process.pid)

    def on_status(self, child: Child) -> None:
        try:
            message = child.status.recv()
        except (EOFError, OSError):
            return  # it died; its sentinel tells us
        if message == ("ready", child.name) and child.state is ChildState.STARTING:
            child.state = ChildState.RUNNING  # STARTING -> RUNNING: it said so itself
            self.states.set(child.name, ChildState.RUNNING)
            log.info("%s is ready", child.name)
            if self.to_start:
                self.spawn_next()
            elif all(c.state is ChildState.RUNNING for c in self.children.values()):
                self.tracker.on_all_running(time.monotonic())
                log.info("all stages running")

    def reap(self, child: Child) -> None:
        child.process.join()
        child.status.close()
        del self.children[child.name]
        self.states.set(child.name, ChildState.EXITED)
        code = child.process.exitcode
        if self.stop_deadline is not None or self.tearing_down:
            log.info("%s %s", child.name, describe_exit(code))
            if code != 0 and self.exit_code is None and self.stop_deadline is not None and not self.tearing_down:
                self.exit_code = 1 if code is None or code < 0 else code
            if self.tearing_down and not self.children:
                self.finish_teardown()
            return
        decision = self.tracker.on_exit(child.name, code, child.name in RESTART_ALONE, time.monotonic())
        if decision.give_up:
            log.error("%s", decision.reason)
            self.states.set(child.name, ChildState.FATAL)
            self.exit_code = decision.exit_code
            self.stop_all(self.settings.shutdown_timeout_s)
            return
        log.warning("%s", decision.reason)
        self.states.set(child.name, ChildState.BACKOFF)
        if decision.scope is Scope.CHILD:
            self.begin_start([child.name], decision.delay_s)
            return
        self.pending_delay_s = decision.delay_s
        self.tearing_down = True
        self.to_start, self.restart_at = [], None
        self.teardown_deadline = time.monotonic() + min(TEARDOWN_TIMEOUT_S, self.settings.shutdown_timeout_s)
        self.stop_children()
        if not self.children:
            self.finish_teardown()

    def finish_teardown(self) -> None:
        """Every old child is gone: fresh queues, then the whole tree after the backoff."""
        self.tearing_down = False
        self.teardown_deadline = None
        release_queues(self.queues.values())
        self.queues = create_inboxes(self.mp)
        self.begin_start(list(STAGES), self.pending_delay_s)

    def kill_stragglers(self) -> None:
        for child in self.children.values():
            log.warning("%s did not stop in time; killing it", child.name)
            child.process.kill()

    def stop_children(self) -> None:
        for child in self.children.values():
            child.state = ChildState.STOPPING  # RUNNING/STARTING -> STOPPING: we asked it to
            self.states.set(child.name, ChildState.STOPPING)
            if child.process.is_alive():
                os.kill(child.process.pid or 0, signal.SIGTERM)

    def stop_all(self, timeout_s: float) -> None:
        """TERM every child (they drain by data, as under honcho's killpg); KILL at the deadline."""
        self.to_start, self.restart_at = [], None
        self.tearing_down = False
        self.stop_deadline = time.monotonic() + timeout_s
        self.stop_children()


def bind_listener(settings: Settings) -> socket.socket:
    """The API socket, owned here so that it outlives ingest restarts."""
    family = socket.AF_INET6 if ":" in settings.server_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.server_host, settings.server_port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def warn_about(settings: Settings) -> None:
    """Start-up lines an operator should see once."""
    log.info("email backend: %s (%s)", settings.ses.backend, settings.ses.backend_reason)
    if settings.auth.disabled:
        log.warning("AUTH_DISABLED=true: the API accepts requests from anyone who can reach it")
    if settings.server_host_reason not in ("default", "SERVER_HOST"):
        log.warning("listening on %s only: %s", settings.server_host, settings.server_host_reason)
    if settings.sns.allow_any_topic:
        log.warning("SNS_ALLOW_ANY_TOPIC=true: SES events are accepted from any SNS topic, in any AWS account")
    elif not settings.sns.topic_arns:
        log.warning("SES events are off until SNS_TOPIC_ARNS is set: the webhook refuses every notification")
    log.info("scheduled_at without an offset is read as %s time (TIMEZONE)", settings.timezone)
    if settings.ses.backend == "ses" and settings.server_url_is_local:
        log.warning(
            "SERVER_URL is %s: recipients cannot reach the tracking pixel; set it to the public URL",
            settings.server_url,
        )


def main(argv: list[str]) -> int:
    try:
        settings = load_from_process()
    except ConfigError as problem:
        print(f"ses-sender: configuration error: {problem}", file=sys.stderr)
        return int(ExitCode.CONFIG)
    configure_logging(settings.log_level)
    if argv[1:2] == ["migrate"]:
        from pipeline.db.original import OriginalDatabase, refuse_original
        from pipeline.db.schema import migrate_file

        try:
            refuse_original(settings.database_path)
        except OriginalDatabase as problem:
            log.error("%s", problem)
            return int(ExitCode.CONFIG)
        applied = migrate_file(settings.database_path)
        log.info("database %s: %d migration(s) applied", settings.database_path, applied)
        return 0
    if argv[1:2] == ["import-original"]:
        from stages.recorder.import_original import main as import_original

        return import_original(argv[2:], settings.database_path)
    warn_about(settings)
    try:
        supervisor = Supervisor(settings)
    except OSError as problem:
        log.error("cannot listen on %s:%s: %s", settings.server_host, settings.server_port, problem)
        return int(ExitCode.BOOT)
    log.info("listening on http://%s:%d", settings.server_host, supervisor.sock.getsockname()[1])
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
