"""A small fake of SES v2 over real HTTP, for what moto cannot do on demand.

It speaks just enough of the SESv2 rest-json wire (SendEmail, SendBulkEmail, GetAccount)
for aiobotocore, records every call with its arrival time, and can add latency,
throttle a share of calls, fail a share with 500, reject chosen addresses, or go
down (connections reset). It runs on its own event loop in a thread, so tests and
benchmarks drive it with plain method calls.

SendBulkEmail: each entry is recorded as its own `Call`, whose `request` is shaped like a
SendEmail Simple request holding what SES would have rendered for that recipient (so
`sent()`, `tags`, `html`, `subject`, `text` and `headers` work per recipient), with the
entry as sent under "BulkEmailEntry". `throttle_ratio`, `error_ratio` and `down` apply to
the whole call; `reject`, `entry_status`, `entry_throttle_ratio` and `entry_transient_ratio`
answer single entries with a failed Status; `drop_results` answers with fewer results than
entries. `bulk_calls` holds one record per call, with its entry count.

The fake renders only what the sender sends: an inline `TemplateContent` whose variables are
plain names, `{{name}}` or `{{{name}}}`, both filled raw ("SES doesn't escape HTML content
when rendering", the SES guide's advanced-personalization page), from the entry's
ReplacementTemplateData over the default TemplateData. Anything else in braces (sections,
dotted or snake_case names) is a 400 "Template contains unsupported operations", as SES
answers for inline templates (aws/aws-sdk-js-v3#6657); a stored template is a 404. A
variable the data lacks is accepted with SUCCESS, as SES does, and recorded as
"render_failed" (SES's asynchronous Rendering Failure), never as sent.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
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
    outcome: str  # "sent", "throttled", "error", "rejected"; bulk also "render_failed", "bad_request", status.lower()
    request: dict[str, Any]
    status: str = ""  # a bulk entry's Status as answered ("" for SendEmail and a failed whole call)
    bulk_call: int | None = None  # a bulk entry's index in FakeSes.bulk_calls

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


@dataclass(frozen=True, slots=True)
class BulkCall:
    """One SendBulkEmail that reached the fake."""

    at: float
    wall: float
    entries: int
    outcome: str  # "answered" (per-entry statuses), or the whole call's "throttled", "error", "bad_request"


# The per-entry statuses the fake answers, with SES's wording where known, and how a Call names them.
ENTRY_ERRORS: dict[str, str] = {
    "MESSAGE_REJECTED": "Email address is not verified.",
    "ACCOUNT_THROTTLED": "Maximum sending rate exceeded.",
    "ACCOUNT_DAILY_QUOTA_EXCEEDED": "Daily message quota exceeded.",
    "TRANSIENT_FAILURE": "Temporary failure; please retry.",
    "ACCOUNT_SENDING_PAUSED": "Sending is paused for this account.",
}
ENTRY_OUTCOMES: dict[str, str] = {
    "SUCCESS": "sent",
    "MESSAGE_REJECTED": "rejected",
    "ACCOUNT_THROTTLED": "throttled",
    "TRANSIENT_FAILURE": "error",
}
MAX_BULK_ENTRIES = 50
MAX_TEMPLATE_DATA_CHARS = 262_144
VARIABLE = re.compile(r"\{\{\{\s*([A-Za-z0-9]+)\s*\}\}\}|\{\{\s*([A-Za-z0-9]+)\s*\}\}")


class Unsupported(ValueError):
    """A request the fake (and, as far as we know, SES) refuses as a whole: a 400 or 404."""

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message


def render(template: str, data: dict[str, Any]) -> tuple[str, set[str]]:
    """The template with each plain variable filled raw, and the names the data lacks."""
    missing: set[str] = set()

    def fill(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        value = data.get(name)
        if value is None:
            missing.add(name)
            return ""
        return value if isinstance(value, str) else json.dumps(value)

    if "{{" in VARIABLE.sub("", template):
        raise Unsupported("BadRequestException", 400, "Template contains unsupported operations.")
    return VARIABLE.sub(fill, template), missing


def merged(defaults: list[dict[str, str]], overrides: list[dict[str, str]]) -> list[dict[str, str]]:
    """Name/value pairs: a default keeps its place unless an override of the same name (any
    case) replaces it; overrides of a new name follow, in order (ReplacementHeaders' rules)."""
    replaced = {o["Name"].lower() for o in overrides}
    return [d for d in defaults if d["Name"].lower() not in replaced] + list(overrides)


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
    # SendBulkEmail only: address -> the Status its entry gets (any of the model's names).
    entry_status: dict[str, str] = field(default_factory=dict)
    entry_throttle_ratio: float = 0.0  # share of entries answered ACCOUNT_THROTTLED
    entry_transient_ratio: float = 0.0  # share of entries answered TRANSIENT_FAILURE
    drop_results: int = 0  # answer each call with this many results fewer than its entries
    bulk_denied: bool = False  # SendBulkEmail answers 403 AccessDenied (a policy with ses:SendEmail only)
    bulk_calls: list[BulkCall] = field(default_factory=list)

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

    def bulk_sizes(self) -> list[int]:
        """The number of entries in each SendBulkEmail call, in arrival order."""
        with self._lock:
            return [c.entries for c in self.bulk_calls]

    # --- the server ----------------------------------------------------------------------

    def _serve(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v2/email/outbound-emails", self._send_email)
        app.router.add_post("/v2/email/outbound-bulk-emails", self._send_bulk_email)
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

    async def _send_bulk_email(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        if self.down:
            request.transport.abort()  # type: ignore[union-attr]  # connection reset, as in an outage
            return web.Response(status=503)
        raw = await request.read()
        if self.bulk_denied:
            with self._lock:
                self.bulk_calls.append(BulkCall(arrived, time.time(), raw.count(b'"Destination":'), "denied"))
            return self._error("AccessDeniedException", 403, "not authorized to perform: ses:SendBulkEmail")
        if self.lean:
            return await self._lean_bulk(arrived, raw)
        body = json.loads(raw)
        try:
            rendered = self._render_all(body)
        except Unsupported as problem:
            self._record_bulk(arrived, body.get("BulkEmailEntries", []), "bad_request")
            await self._delay()
            return self._error(problem.code, problem.status, problem.message)
        outcome = self._decide_call()
        if outcome != "sent":
            self._record_bulk(arrived, [synthesized for synthesized, _ in rendered], outcome)
            await self._delay()
            return self._answer(outcome)
        statuses = [self._entry_status(synthesized["Destination"]["ToAddresses"][0]) for synthesized, _ in rendered]
        with self._lock:
            batch = len(self.bulk_calls)
            wall = time.time()
            self.bulk_calls.append(BulkCall(arrived, wall, len(rendered), "answered"))
            for (synthesized, missing), status in zip(rendered, statuses, strict=True):
                # SES says SUCCESS, then fails to render: its Rendering Failure event, never a send.
                named = "render_failed" if status == "SUCCESS" and missing else self._entry_outcome(status)
                to = synthesized["Destination"]["ToAddresses"][0]
                self.calls.append(Call(arrived, wall, to, named, synthesized, status, batch))
        await self._delay()
        return web.json_response({"BulkEmailEntryResults": self._results(statuses)})

    def _record_bulk(self, arrived: float, requests: list[dict[str, Any]], outcome: str) -> None:
        """A whole call that failed: one record for it, and one per entry with its outcome."""
        with self._lock:
            batch = len(self.bulk_calls)
            wall = time.time()
            self.bulk_calls.append(BulkCall(arrived, wall, len(requests), outcome))
            for request in requests:
                to = request.get("Destination", {}).get("ToAddresses", [""])[0]
                self.calls.append(Call(arrived, wall, to, outcome, request, "", batch))

    async def _delay(self) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)

    async def _lean_bulk(self, arrived: float, raw: bytes) -> web.Response:
        # Counted, not parsed: a key cannot appear unescaped inside a JSON string value.
        count = raw.count(b'"Destination":')
        wall = time.time()
        self.walls.extend([wall] * count)
        self.bulk_calls.append(BulkCall(arrived, wall, count, "answered"))
        await self._delay()
        return web.json_response({"BulkEmailEntryResults": self._results(["SUCCESS"] * count)})

    def _render_all(self, body: dict[str, Any]) -> list[tuple[dict[str, Any], set[str]]]:
        """Each entry as the SendEmail Simple request SES would have rendered for it, and the
        variables its data lacked."""
        entries = body.get("BulkEmailEntries", [])
        if not 1 <= len(entries) <= MAX_BULK_ENTRIES:
            raise Unsupported("BadRequestException", 400, f"BulkEmailEntries: 1 to {MAX_BULK_ENTRIES} entries.")
        template = body.get("DefaultContent", {}).get("Template", {})
        content = template.get("TemplateContent")
        if content is None:
            raise Unsupported("NotFoundException", 404, "The fake has no stored templates; send TemplateContent.")
        defaults = self._data(template.get("TemplateData") or "{}")
        return [self._render_entry(body, template, content, defaults, entry) for entry in entries]

    def _render_entry(
        self,
        body: dict[str, Any],
        template: dict[str, Any],
        content: dict[str, str],
        defaults: dict[str, Any],
        entry: dict[str, Any],
    ) -> tuple[dict[str, Any], set[str]]:
        own = entry.get("ReplacementEmailContent", {}).get("ReplacementTemplate", {}).get("ReplacementTemplateData")
        data = {**defaults, **self._data(own or "{}")}
        missing: set[str] = set()
        parts: dict[str, str] = {}
        for part in ("Subject", "Html", "Text"):
            if part in content:
                parts[part], lacking = render(content[part], data)
                missing |= lacking
        bodies = {part: {"Data": parts[part], "Charset": "UTF-8"} for part in ("Html", "Text") if part in parts}
        simple = {
            "Subject": {"Data": parts.get("Subject", ""), "Charset": "UTF-8"},
            "Body": bodies,
            "Headers": merged(template.get("Headers", []), entry.get("ReplacementHeaders", [])),
        }
        synthesized: dict[str, Any] = {
            "FromEmailAddress": body.get("FromEmailAddress"),
            "Destination": entry["Destination"],
            "Content": {"Simple": simple},
            "EmailTags": merged(body.get("DefaultEmailTags", []), entry.get("ReplacementTags", [])),
            "BulkEmailEntry": entry,
        }
        if "ConfigurationSetName" in body:
            synthesized["ConfigurationSetName"] = body["ConfigurationSetName"]
        return synthesized, missing

    @staticmethod
    def _data(text: str) -> dict[str, Any]:
        if len(text) > MAX_TEMPLATE_DATA_CHARS:
            raise Unsupported("BadRequestException", 400, f"Template data over {MAX_TEMPLATE_DATA_CHARS} characters.")
        try:
            data = json.loads(text)
        except ValueError:
            raise Unsupported("BadRequestException", 400, "Template data is not valid JSON.") from None
        if not isinstance(data, dict):
            raise Unsupported("BadRequestException", 400, "Template data is not a JSON object.")
        return data

    def _decide_call(self) -> str:
        roll = self._rng.random()
        if roll < self.throttle_ratio:
            return "throttled"
        if roll < self.throttle_ratio + self.error_ratio:
            return "error"
        return "sent"

    def _entry_status(self, to: str) -> str:
        if to in self.entry_status:
            return self.entry_status[to]
        if to in self.reject:
            return "MESSAGE_REJECTED"
        if not (self.entry_throttle_ratio or self.entry_transient_ratio):
            return "SUCCESS"
        roll = self._rng.random()
        if roll < self.entry_throttle_ratio:
            return "ACCOUNT_THROTTLED"
        if roll < self.entry_throttle_ratio + self.entry_transient_ratio:
            return "TRANSIENT_FAILURE"
        return "SUCCESS"

    @staticmethod
    def _entry_outcome(status: str) -> str:
        return ENTRY_OUTCOMES.get(status, status.lower())

    def _results(self, statuses: list[str]) -> list[dict[str, str]]:
        results: list[dict[str, str]] = []
        for status in statuses[: max(0, len(statuses) - self.drop_results)]:
            if status == "SUCCESS":
                results.append({"Status": status, "MessageId": f"fake-{uuid.uuid4()}"})
            else:
                results.append({"Status": status, "Error": ENTRY_ERRORS.get(status, f"{status} (fake)")})
        return results

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
        return FakeSes._error(code, status, message)

    @staticmethod
    def _error(code: str, status: int, message: str) -> web.Response:
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
    """`python -m tests.fakes.fake_ses --latency-ms 50`: serve until killed, print the URL.

    SendEmail and SendBulkEmail are both served; with --lean every bulk entry counts as one arrival.
    """
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
