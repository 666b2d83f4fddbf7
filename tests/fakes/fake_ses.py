"""A small fake of SES v2 over real HTTP, for what moto cannot do on demand.

It speaks just enough of the SESv2 rest-json wire (SendEmail, GetAccount) for
aiobotocore, records every call with its arrival time, and can add latency,
throttle a share of calls, fail a share with 500, reject chosen addresses, or go
down (connections reset). It runs on its own event loop in a thread, so tests and
benchmarks drive it with plain method calls.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Call:
    """One SendEmail that reached the fake, accepted or not."""

    at: float  # time.monotonic() at arrival
    wall: float  # time.time() at arrival, comparable across processes
    to: str
    outcome: str  # "sent", "throttled", "error", "rejected"
    request: dict[str, Any]

    @property
    def tags(self) -> dict[str, str]:
        return {t["Name"]: t["Value"] for t in self.request.get("EmailTags", [])}

    @property
    def html(self) -> str:
        return str(self.request["Content"]["Simple"]["Body"]["Html"]["Data"])

    @property
    def subject(self) -> str:
        return str(self.request["Content"]["Simple"]["Subject"]["Data"])

    @property
    def text(self) -> str:
        return str(self.request["Content"]["Simple"]["Body"]["Text"]["Data"])

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The message's own headers (SES v2 Content.Simple.Headers), in order, repeats kept."""
        return [(h["Name"], h["Value"]) for h in self.request["Content"]["Simple"].get("Headers", [])]


@dataclass
class FakeSes:
    latency_s: float = 0.0
    throttle_ratio: float = 0.0
    error_ratio: float = 0.0
    reject: set[str] = field(default_factory=set)
    down: bool = False
    max_send_rate: float = 14.0
    max_24_hour_send: float = 50_000.0
    seed: int = 1
    # Benchmarks: record arrival times only, so the fake is never the bottleneck.
    lean: bool = False
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self.walls: list[float] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- control -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeSes:
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True, name="fake-ses")
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake SES did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def sent(self) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.outcome == "sent"]

    def arrivals(self, outcome: str | None = None) -> list[float]:
        with self._lock:
            return sorted(c.at for c in self.calls if outcome is None or c.outcome == outcome)

    def count(self, outcome: str) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.outcome == outcome)

    # --- the server ----------------------------------------------------------------------

    def _serve(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v2/email/outbound-emails", self._send_email)
        app.router.add_get("/v2/email/account", self._get_account)
        app.router.add_get("/_arrivals", self._arrivals)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        # A full GC pass would stall this loop and bunch up the arrival times we record.
        import gc

        gc.freeze()
        loop.run_until_complete(self._warm_up())
        started.set()
        loop.run_forever()
        loop.close()

    async def _warm_up(self) -> None:
        """Serve a burst of throwaway requests, so first-use costs (imports, connection set-up
        paths) do not delay the first real arrivals and bunch up the times we record."""
        import aiohttp

        async with aiohttp.ClientSession() as session:

            async def one() -> None:
                async with session.get(f"{self.url}/v2/email/account") as response:
                    await response.read()

            await asyncio.gather(*(one() for _ in range(64)))

    async def _send_email(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        if self.down:
            request.transport.abort()  # type: ignore[union-attr]  # connection reset, as in an outage
            return web.Response(status=503)
        if self.lean:
            await request.read()
            self.walls.append(time.time())
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            return web.Response(body=b'{"MessageId":"fake-lean"}', content_type="application/json")
        body = json.loads(await request.read())
        to = body["Destination"]["ToAddresses"][0]
        outcome = self._decide(to)
        with self._lock:
            self.calls.append(Call(arrived, time.time(), to, outcome, body))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return self._answer(outcome)

    def _decide(self, to: str) -> str:
        if to in self.reject:
            return "rejected"
        roll = self._rng.random()
        if roll < self.throttle_ratio:
            return "throttled"
        if roll < self.throttle_ratio + self.error_ratio:
            return "error"
        return "sent"

    @staticmethod
    def _answer(outcome: str) -> web.Response:
        if outcome == "sent":
            return web.json_response({"MessageId": f"fake-{uuid.uuid4()}"})
        code, status, message = {
            "throttled": ("TooManyRequestsException", 429, "Maximum sending rate exceeded."),
            "error": ("InternalFailure", 500, "We encountered an internal error. Please try again."),
            "rejected": ("MessageRejected", 400, "Email address is not verified."),
        }[outcome]
        return web.json_response(
            {"message": message}, status=status, headers={"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/"}
        )

    async def _arrivals(self, request: web.Request) -> web.Response:
        """Wall-clock arrival times of accepted sends, for a benchmark in another process."""
        with self._lock:
            return web.json_response(self.walls + [c.wall for c in self.calls if c.outcome == "sent"])

    async def _get_account(self, request: web.Request) -> web.Response:
        sent = len(self.sent())
        return web.json_response(
            {
                "SendQuota": {
                    "Max24HourSend": self.max_24_hour_send,
                    "MaxSendRate": self.max_send_rate,
                    "SentLast24Hours": float(sent),
                },
                "SendingEnabled": True,
                "ProductionAccessEnabled": True,
                "EnforcementStatus": "HEALTHY",
            }
        )


def max_in_any_window(times: list[float], window_s: float = 1.0) -> int:
    """The most arrivals in any half-open window [t, t + window_s)."""
    import bisect

    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + window_s) - i for i, t in enumerate(ordered)), default=0)


def main() -> None:
    """`python -m tests.fakes.fake_ses --latency-ms 50`: serve until killed, print the URL."""
    import argparse
    import signal

    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--max-send-rate", type=float, default=14.0)
    parser.add_argument("--lean", action="store_true", help="record arrival times only")
    args = parser.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # sigwait below takes them
    fake = FakeSes(latency_s=args.latency_ms / 1000, max_send_rate=args.max_send_rate, lean=args.lean).start()
    print(fake.url, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    fake.stop()


if __name__ == "__main__":
    main()
