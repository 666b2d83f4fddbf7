"""The root process: spawns the stages, watches them, restarts them, shuts them down.

    python supervisor.py            run the server (the Procfile's `web:` line)
    python supervisor.py migrate    apply database migrations and exit (`release:`)
    python supervisor.py import-original PATH [--resend-processed]
                                    bring the original server's database in (server stopped)

This is the shell around `pipeline.tree.Tree`, which holds the tree's phase and makes
every decision (the phase diagram is there; the child states are in
pipeline/supervision.py). Here live the OS parts: the listening socket (clients wait
in the backlog while ingest restarts), the queues (fresh ones after any death that may
have poisoned one), the processes, and the signals. Signal handlers only record the
signal; the loop sleeps in `connection.wait()` on the children's sentinels, their
status pipes and a wake-up fd, and tells the tree what happened.
"""

from __future__ import annotations

import asyncio
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
from types import ModuleType
from typing import Any

from config.settings import ConfigError, Settings, load_from_process
from pipeline import metrics_folder
from pipeline.channels import STAGES, AnyQueue, create_inboxes, outboxes_of, release_queues
from pipeline.exitcodes import ExitCode
from pipeline.guardrails import SES_REVIEW_BOUNCE_RATE, SES_REVIEW_COMPLAINT_RATE
from pipeline.runtime import StageSpec, configure_logging, run_stage
from pipeline.supervision import ChildState, StageStates
from pipeline.tree import Phase, Tree

log = logging.getLogger("supervisor")


def metrics() -> ModuleType:
    """pipeline.metrics, imported only once main() has named the metrics folder (it decides
    there, at import, whether this process's metrics go to that folder)."""
    import pipeline.metrics

    return pipeline.metrics


ENTRIES = {name: f"stages.{name}:run" for name in STAGES}
# Ingest keeps no state the others rely on, so a clean crash of it restarts it alone.
RESTART_ALONE = frozenset({"ingest"})
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
IDLE_WAIT_S = 60.0  # nothing is due: wake now and then anyway


@dataclass(slots=True)
class Child:
    process: BaseProcess
    status: Connection  # the stage sends ("ready", name) here once


class Processes:
    """The tree's spawner: stage processes on the spawn context, with the queues they share."""

    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        self.settings = settings
        self.sock = sock
        self.mp = multiprocessing.get_context("spawn")
        self.states = StageStates(self.mp, STAGES)
        self.queues: dict[str, AnyQueue] = create_inboxes(self.mp)
        self.children: dict[str, Child] = {}
        self.started: set[str] = set()

    def spawn(self, name: str) -> None:
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
        self.children[name] = Child(process, status_r)
        log.info("%s started (pid %s)", name, process.pid)
        if name in self.started:
            metrics().RESTARTS.labels(name).inc()
        self.started.add(name)

    def terminate(self, name: str) -> None:
        process = self.children[name].process
        if process.is_alive():
            os.kill(process.pid or 0, signal.SIGTERM)

    def kill(self, name: str) -> None:
        self.children[name].process.kill()

    def fresh_queues(self) -> None:
        release_queues(self.queues.values())
        self.queues = create_inboxes(self.mp)

    def reap(self, name: str) -> int | None:
        """Collect a child whose sentinel fired; its exit code (< 0: the signal that killed it)."""
        child = self.children.pop(name)
        child.process.join()
        child.status.close()
        metrics().process_died(child.process.pid)
        return child.process.exitcode

    def publish(self, states: dict[str, ChildState]) -> None:
        """Copy the tree's view of every stage into shared memory, where ingest reads it (/ready)."""
        for name, state in states.items():
            self.states.set(name, state)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sock = bind_listener(settings)
        self.processes = Processes(settings, self.sock)
        self.tree = Tree(STAGES, RESTART_ALONE, settings.restart, settings.shutdown_timeout_s, self.processes)
        self.signals: list[int] = []

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, lambda signum, _frame: self.signals.append(signum))
        self.tree.start(time.monotonic())
        self.processes.publish(self.tree.states)
        while self.tree.phase is not Phase.HALTED:
            readable = wait([*self.waitables(), wake_r], timeout=self.timeout_s())
            if wake_r in readable:
                wake_r.recv(4096)
            while self.signals:
                self.handle_signal(self.signals.pop(0))
            for obj in readable:
                self.on_readable(obj)
            self.tree.tick(time.monotonic())
            self.processes.publish(self.tree.states)
        self.sock.close()
        release_queues(self.processes.queues.values())
        code = self.tree.exit_code if self.tree.exit_code is not None else int(ExitCode.OK)
        log.info("supervisor exiting with code %d", code)
        return code

    def waitables(self) -> list[Any]:
        objs: list[Any] = []
        for name, child in self.processes.children.items():
            objs.append(child.process.sentinel)
            if self.tree.states[name] is ChildState.STARTING:
                objs.append(child.status)
        return objs

    def timeout_s(self) -> float:
        deadline = self.tree.next_deadline()
        return IDLE_WAIT_S if deadline is None else max(0.0, deadline - time.monotonic())

    def on_readable(self, obj: Any) -> None:
        for name, child in list(self.processes.children.items()):
            if obj is child.status:
                self.on_status(name, child)
            elif obj == child.process.sentinel:
                code = self.processes.reap(name)
                self.tree.on_exit(name, code, time.monotonic())

    def on_status(self, name: str, child: Child) -> None:
        try:
            message = child.status.recv()
        except (EOFError, OSError):
            return  # it died; its sentinel tells us
        if message == ("ready", name):
            self.tree.on_ready(name, time.monotonic())

    # --- signals --------------------------------------------------------------------------

    def handle_signal(self, signum: int) -> None:
        if signum in HANDLED_SIGNALS:
            self.handle_term(signal.Signals(signum).name)

    def handle_term(self, name: str) -> None:
        self.tree.stop(f"{name} received", time.monotonic())


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
    if settings.ses.backend == "ses" and not settings.server_url.startswith("https://"):
        log.warning(
            "SERVER_URL is not https: Gmail and Yahoo ignore a one-click unsubscribe link"
            " that is not (RFC 8058); set SERVER_URL to the public https URL",
        )
    if (
        settings.guard.bounce_rate >= SES_REVIEW_BOUNCE_RATE
        or settings.guard.complaint_rate >= SES_REVIEW_COMPLAINT_RATE
    ):
        log.warning(
            "GUARD_BOUNCE_RATE %g / GUARD_COMPLAINT_RATE %g: at or above the rates at which SES reviews"
            " the account (%g / %g); the guard will not stop a list before SES does",
            settings.guard.bounce_rate,
            settings.guard.complaint_rate,
            SES_REVIEW_BOUNCE_RATE,
            SES_REVIEW_COMPLAINT_RATE,
        )
    if settings.ses.backend == "ses" and settings.server_url_is_local:
        log.warning(
            "SERVER_URL is %s: recipients cannot reach the tracking pixel; set it to the public URL",
            settings.server_url,
        )


def migrate_postgres(url: str) -> int:
    """`supervisor.py migrate` with DATABASE_URL=postgresql://…: safe while other nodes migrate too."""
    import asyncpg

    from pipeline.db.postgres import migrate_url

    try:
        applied = asyncio.run(migrate_url(url))
    except (OSError, asyncpg.PostgresError) as problem:  # the URL is never echoed: it may hold a password
        log.error("cannot migrate the PostgreSQL database: %s: %s", type(problem).__name__, problem)
        return int(ExitCode.BOOT)
    log.info("PostgreSQL database: %d migration(s) applied", applied)
    return 0


def main(argv: list[str]) -> int:
    try:
        settings = load_from_process()
    except ConfigError as problem:
        print(f"ses-sender: configuration error: {problem}", file=sys.stderr)
        return int(ExitCode.CONFIG)
    configure_logging(settings.log_level, settings.log_format)
    if argv[1:2] == ["migrate"] and settings.postgres_url is not None:
        return migrate_postgres(settings.postgres_url)
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
    metrics_folder.prepare(settings.database_path)
    try:
        supervisor = Supervisor(settings)
    except OSError as problem:
        log.error("cannot listen on %s:%s: %s", settings.server_host, settings.server_port, problem)
        return int(ExitCode.BOOT)
    log.info("listening on http://%s:%d", settings.server_host, supervisor.sock.getsockname()[1])
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
