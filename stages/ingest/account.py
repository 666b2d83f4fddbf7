"""GET /v1/account and POST /v1/account/resume: the SES account, our own rates, the guard.

SES's figures come from the sender's last GetAccount (it re-reads it every
SES_QUOTA_REFRESH_S, a minute by default); on the outbox backend they are null. Our own
rolling 24-hour bounce and complaint rates and the guard's state come from the recorder,
which owns the guard.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pipeline.messages import AccountResumed, GetGuard, GuardReport, ResumeAccount
from stages.ingest.events import quota
from stages.ingest.keys import CTX
from stages.ingest.talk import ask, wake_scheduler
from stages.ingest.views import iso_ms


def rate(part: int, whole: int) -> float | None:
    return None if whole <= 0 else part / whole


async def get_account(request: web.Request) -> web.Response:
    settings = request.app[CTX].settings
    report = await ask(request, "recorder", lambda corr_id: GetGuard(corr_id, "ingest"))
    if not isinstance(report, GuardReport):
        raise TypeError(f"the recorder answered GetGuard with {type(report).__name__}")
    answer: dict[str, Any] = {"backend": settings.ses.backend}
    answer.update(await quota(request, with_rate=True))
    answer["rates"] = {
        "window_hours": 24,
        "sent": report.sent,
        "hard_bounces": report.hard_bounces,
        "complaints": report.complaints,
        "bounce_rate": rate(report.hard_bounces, report.sent),
        "complaint_rate": rate(report.complaints, report.sent),
    }
    answer["guard"] = {
        "state": "holding" if report.paused_reason else "sending",
        "reason": report.paused_reason,
        "resumed_at": iso_ms(report.resumed_at_ms),
        "bounce_rate_limit": settings.guard.bounce_rate,
        "complaint_rate_limit": settings.guard.complaint_rate,
        "min_sent": settings.guard.min_sent,
    }
    return web.json_response(answer)


async def resume_account(request: web.Request) -> web.Response:
    """The operator's decision: sending goes on, and the guard judges only what comes after."""
    reply = await ask(request, "recorder", lambda corr_id: ResumeAccount(corr_id, "ingest"))
    if not isinstance(reply, AccountResumed):
        raise TypeError(f"the recorder answered ResumeAccount with {type(reply).__name__}")
    await wake_scheduler(request, 0)
    return web.json_response({"resumed": reply.was_paused})
