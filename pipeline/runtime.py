"""run_stage(): the life of one stage process, from spawn to exit code.

The supervisor spawns `run_stage(spec)`. It names the process, sets up logging and
Sentry, turns SIGTERM into `ctx.stopping`, watches the supervisor, bridges the inbox,
runs the stage's `async run(ctx)` on uvloop, and maps how it ended to an exit code.
Stages never install signal handlers and never read the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import importlib
import json
import logging
import multiprocessing
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

from config.settings import ConfigError, Settings
from pipeline.channels import PRODUCERS, AnyQueue, ChannelFull, Inbox, Outbox, StageInbox, StageOutbox
from pipeline.exitcodes import ExitCode
from pipeline.messages import EndOfStream
from pipeline.scrub import make_before_breadcrumb, make_before_send
from pipeline.supervision import StageStates

FLUSH_TIMEOUT_S = 1.0
# How long a stopping stage waits for room to say EndOfStream on each outbox.
END_OF_STREAM_TIMEOUT_S = 0.5


class BootError(Exception):
    """The stage cannot start, and restarting it will not help (exit code BOOT)."""


@dataclass(frozen=True, slots=True)
class StageContext:
    """What a stage gets: arq's `ctx`, typed and immutable.

    The channels are Protocols: queues between processes here, in memory in stage tests.
    """

    name: str
    settings: Settings
    inbox: StageInbox
    outboxes: Mapping[str, StageOutbox]
    stopping: asyncio.Event
    log: logging.Logger
    ready: Callable[[], None]
    listen_socket: socket.socket | None = None
    states: StageStates | None = None


StageMain = Callable[[StageContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StageSpec:
    """Everything a stage process is handed at spawn (pickled by multiprocessing)."""

    name: str
    entry: str  # "module:function", imported in the child so the supervisor stays light
    settings: Settings
    inbox: AnyQueue
    outboxes: dict[str, AnyQueue]
    status: Connection
    listen_socket: socket.socket | None = None
    states: StageStates | None = None


def configure_logging(level: str, form: str = "text") -> None:
    """Stage name and pid on every record; %-style arguments everywhere. `form` "json": one
    JSON object per line (LOG_FORMAT=json), for a log shipper."""
    handler = logging.StreamHandler(sys.stderr)
    if form == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(True)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, process, pid, logger, message,
    and the traceback as `exception` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": record.processName,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def init_sentry(settings: Settings, stage: str) -> None:
    """Report errors to Sentry only when SENTRY_DSN is set, and never what they held.

    An unauthenticated request can cause an error, so a report must not carry local
    variables (PyJWT's `key` is JWT_SECRET), source lines or bodies; the scrubber then
    takes secrets, tokens, addresses and markup out of every string that is left.
    """
    if not settings.sentry_dsn:
        return
    import sentry_sdk

    secrets = (settings.auth.jwt_secret, settings.auth.api_key)
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        server_name=stage,
        send_default_pii=False,
        include_local_variables=False,
        include_source_context=False,
        max_request_body_size="never",
        # The SDK types an event as a TypedDict; the scrubber walks it as the plain dict it is.
        before_send=make_before_send(secrets),  # type: ignore[arg-type]
        before_send_transaction=make_before_send(secrets),  # type: ignore[arg-type]
        before_breadcrumb=make_before_breadcrumb(secrets),
    )
    sentry_sdk.set_tag("stage", stage)


def set_title(stage: str) -> None:
    """`ps` and `top` show which stage a process is (gunicorn does the same)."""
    try:
        import setproctitle
    except ImportError:  # pragma: no cover - it is a declared dependency
        return
    setproctitle.setproctitle(f"ses-sender: {stage}")


def run_stage(spec: StageSpec) -> None:
    """The target of every stage process."""
    # Under honcho the whole group gets SIGINT on Ctrl-C; the supervisor decides for us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD})
    set_title(spec.name)
    configure_logging(spec.settings.log_level, spec.settings.log_format)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    init_sentry(spec.settings, spec.name)
    log = logging.getLogger(f"stages.{spec.name}")
    code = ExitCode.CRASH
    try:
        import uvloop

        uvloop.run(_main(spec, log))
        code = ExitCode.OK
    except BootError as problem:
        log.error("cannot start: %s", problem)
        code = ExitCode.BOOT
    except ConfigError as problem:
        log.error("bad settings: %s", problem)
        code = ExitCode.CONFIG
    except Exception:
        log.exception("crashed")
        code = ExitCode.CRASH
    finally:
        _flush_queues([*spec.outboxes.values(), spec.inbox])
    sys.exit(int(code))


async def _main(spec: StageSpec, log: logging.Logger) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    inbox = Inbox(spec.inbox, spec.name)

    def request_stop(why: str) -> None:
        # Setting it again does nothing: under honcho a child gets TERM twice.
        if not stopping.is_set():
            log.info("%s: draining", why)
            stopping.set()
            inbox.wake()

    loop.add_signal_handler(signal.SIGTERM, request_stop, "SIGTERM")
    parent = multiprocessing.parent_process()
    if parent is not None:
        # Readable the moment the supervisor dies: drain instead of running orphaned.
        sentinel = parent.sentinel

        def on_parent_gone() -> None:
            loop.remove_reader(sentinel)
            request_stop("supervisor gone")

        loop.add_reader(sentinel, on_parent_gone)
    inbox.start()
    ctx = StageContext(
        name=spec.name,
        settings=spec.settings,
        inbox=inbox,
        outboxes={name: Outbox(q, name) for name, q in spec.outboxes.items()},
        stopping=stopping,
        log=log,
        ready=lambda: _report_ready(spec),
        listen_socket=spec.listen_socket,
        states=spec.states,
    )
    try:
        await run_to_the_end(resolve_entry(spec.entry), ctx)
    finally:
        # Joined in a worker thread so a slow join cannot stall the loop's other cleanup.
        clean = await asyncio.to_thread(inbox.close)
        if not clean:
            log.warning("inbox reader did not stop in time")


async def run_to_the_end(main: StageMain, ctx: StageContext) -> None:
    """The stage's `run(ctx)`, then, from a producer, EndOfStream on every outbox: the
    recorder serves until each producer has said it (the one place it is sent)."""
    try:
        await main(ctx)
    except Exception:
        await announce_end(ctx)
        raise
    await announce_end(ctx)


async def announce_end(ctx: StageContext) -> None:
    if ctx.name not in PRODUCERS:
        return
    for name, outbox in ctx.outboxes.items():
        try:
            await outbox.put(EndOfStream(ctx.name), timeout_s=END_OF_STREAM_TIMEOUT_S)
        except ChannelFull:
            ctx.log.warning("could not tell %s that the %s stopped", name, ctx.name)


def resolve_entry(entry: str) -> StageMain:
    """Import `module:function`."""
    module_name, _, attr = entry.partition(":")
    function: StageMain = getattr(importlib.import_module(module_name), attr)
    return function


def _report_ready(spec: StageSpec) -> None:
    # What exists now (botocore's models, the app) lives for the whole process: keep the
    # cyclic GC from walking it, or a full collection stalls the loop for tens of ms.
    gc.freeze()
    with contextlib.suppress(BrokenPipeError, OSError):
        spec.status.send(("ready", spec.name))


def _flush_queues(queues: Any) -> None:
    """Give each queue's feeder thread a moment to write, then stop waiting for it.

    multiprocessing joins feeder threads at exit, which hangs forever when the reader is
    dead and the pipe is full. What matters is acknowledged by protocol, so a bounded
    flush is enough.
    """
    for q in queues:
        q.close()
        joiner = threading.Thread(target=q.join_thread, daemon=True)
        joiner.start()
        joiner.join(FLUSH_TIMEOUT_S)
        if joiner.is_alive():
            q.cancel_join_thread()
