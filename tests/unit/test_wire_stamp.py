"""The rate limiter's window starts when a request is written, not when it was admitted:
a request that waited for a connection counts from when it left (over real HTTP, to the
fake SES, through the client open_backend makes)."""

from __future__ import annotations

import asyncio
import functools
import time

import pytest

from config.settings import SesSettings
from pipeline.limiter import LogEntry, RateLimiter
from pipeline.mail import OutgoingMail
from pipeline.ses import open_backend
from pipeline.wire_stamp import WIRE_STAMP
from tests.fakes.fake_ses import FakeSes

POOL = 10  # open_backend's smallest connection pool


def mail(i: int) -> OutgoingMail:
    return OutgoingMail(
        recipient_id=i, to=f"user{i}@example.com", subject="Hi", html="<p>Hi</p>", text="Hi", tags=(), headers=()
    )


async def test_a_request_that_waited_for_a_connection_counts_from_when_it_was_written(
    fake_ses: FakeSes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an SES that answers in 300 ms and one more request at once than there are connections
    fake_ses.latency_s = 0.3
    monkeypatch.setenv("AWS_ENDPOINT_URL", fake_ses.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = SesSettings(backend="ses", region="us-east-1", from_email="news@example.org", bulk=False)
    limiter = RateLimiter(1000)
    admitted: list[tuple[float, LogEntry]] = []

    async def admission() -> None:  # what the sender's admit does at botocore's before-send
        entry = await limiter.admit()
        admitted.append((entry.at, entry))
        WIRE_STAMP.set(functools.partial(limiter.restamp, entry))

    async with open_backend(settings, max_in_flight=1) as backend:
        backend.admission = admission
        started = time.monotonic()
        await asyncio.gather(*(backend.send(mail(i)) for i in range(POOL + 1)))

    # Then each was admitted at once, and the one that waited for a free connection counts
    # from when it was written (about 300 ms later); the others from about when they were admitted
    assert len(fake_ses.sent()) == POOL + 1
    assert all(at - started < 0.2 for at, _ in admitted)
    moved = sorted(entry.at - at for at, entry in admitted)
    assert moved[-1] >= 0.25, moved
    assert all(0 <= m < 0.2 for m in moved[:-1]), moved
