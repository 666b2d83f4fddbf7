"""The reputation guard: pauses a topic, or all sending, before SES pauses the account.

SES reviews an account at a 5% bounce rate or a 0.1% complaint rate (issue #16). The
guard is fed what the recorder learns (mail sent, hard bounces, complaints, each with
a time in ms and a topic) and answers with what must stop: `PauseTopic` when a topic's
own rate crosses a limit, `PauseAccount` when the account's rolling 24-hour rate does.

- A rate is judged only once `min_sent` mail is in its sample, and only on the event
  that changes it, so each pause is said once until the next resume.
- A topic's sample is everything since it started, or since its last resume. The
  account's is the last 24 hours, to the minute, since its last resume. A resume is
  the operator's decision, so only events stamped at or after it count afterwards;
  feed arrival times, so that "stamped after" is "arrived after".
- The 24 hours live in 1,440 per-minute buckets, so memory does not grow with volume.
  An event older than the window is left out of the account (its topic still counts it).

Pure and synchronous: the recorder owns it, feeds it, and carries out its effects.
`Guard.restore` rebuilds it at start from counts the database holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

MINUTE_MS: Final = 60_000
WINDOW_MINUTES: Final = 24 * 60
WINDOW_MS: Final = WINDOW_MINUTES * MINUTE_MS


# The rates at which SES puts an account under review (aws-ses-sns.md); the defaults stay under them.
SES_REVIEW_BOUNCE_RATE: Final = 0.05
SES_REVIEW_COMPLAINT_RATE: Final = 0.001


@dataclass(frozen=True, slots=True)
class Limits:
    """GUARD_BOUNCE_RATE, GUARD_COMPLAINT_RATE and GUARD_MIN_SENT; all defaults under SES's review rates."""

    bounce_rate: float = 0.04
    complaint_rate: float = 0.0008
    min_sent: int = 200


@dataclass(frozen=True, slots=True)
class Counts:
    """What a sample holds."""

    sent: int = 0
    hard_bounces: int = 0
    complaints: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.sent + other.sent, self.hard_bounces + other.hard_bounces, self.complaints + other.complaints
        )


# The events. A topic id of None or "" is mail outside any topic: it counts for the account only.
@dataclass(frozen=True, slots=True)
class MailSent:
    topic_id: str | None
    at_ms: int
    count: int = 1


@dataclass(frozen=True, slots=True)
class HardBounced:
    topic_id: str | None
    at_ms: int


@dataclass(frozen=True, slots=True)
class Complained:
    topic_id: str | None
    at_ms: int


GuardEvent = MailSent | HardBounced | Complained


# The effects.
@dataclass(frozen=True, slots=True)
class PauseTopic:
    topic_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class PauseAccount:
    reason: str


Effect = PauseTopic | PauseAccount


@dataclass(frozen=True, slots=True)
class TopicState:
    """One topic as the database knows it: the counts since `since_ms`, and its pause."""

    counts: Counts = Counts()
    since_ms: int | None = None  # None: since the topic started (never resumed)
    paused_reason: str | None = None


def _counts_of(event: GuardEvent) -> Counts:
    match event:
        case MailSent(count=count):
            return Counts(sent=count)
        case HardBounced():
            return Counts(hard_bounces=1)
        case Complained():
            return Counts(complaints=1)


def _percent(rate: float) -> str:
    return f"{rate * 100:.3g}%"


def judge(counts: Counts, limits: Limits, sample: str) -> str | None:
    """Why `counts` must stop, naming rate, limit and sample; None while under the limits or too few sent."""
    if counts.sent < limits.min_sent or counts.sent <= 0:
        return None
    reasons = []
    for what, setting, number, limit in (
        ("hard bounce", "GUARD_BOUNCE_RATE", counts.hard_bounces, limits.bounce_rate),
        ("complaint", "GUARD_COMPLAINT_RATE", counts.complaints, limits.complaint_rate),
    ):
        rate = number / counts.sent
        if rate > limit:
            reasons.append(
                f"{what} rate {_percent(rate)} ({number:,} of {counts.sent:,} sent {sample}) "
                f"is above the {_percent(limit)} limit ({setting})"
            )
    return "; ".join(reasons) or None


@dataclass(slots=True)
class _Topic:
    counts: Counts = Counts()
    since_ms: int | None = None
    paused_reason: str | None = None

    def sample(self) -> str:
        return "since the topic started" if self.since_ms is None else "since the topic was resumed"


@dataclass(slots=True)
class _Window:
    """The account's last 24 hours in per-minute buckets: a ring indexed by minute % 1440."""

    buckets: list[Counts] = field(default_factory=lambda: [Counts()] * WINDOW_MINUTES)
    total: Counts = Counts()
    head_minute: int | None = None  # the newest minute seen; the window is the 1,440 up to it

    def add(self, at_ms: int, counts: Counts) -> bool:
        """Count `counts` at `at_ms`; False when that is older than the window."""
        minute = at_ms // MINUTE_MS
        if self.head_minute is None or minute > self.head_minute:
            self._advance(minute)
        assert self.head_minute is not None
        if minute <= self.head_minute - WINDOW_MINUTES:
            return False
        slot = minute % WINDOW_MINUTES
        self.buckets[slot] = self.buckets[slot] + counts
        self.total = self.total + counts
        return True

    def _advance(self, minute: int) -> None:
        """Move the head to `minute`, emptying the buckets of the minutes it passes."""
        start = minute - WINDOW_MINUTES + 1 if self.head_minute is None else self.head_minute + 1
        for passed in range(max(start, minute - WINDOW_MINUTES + 1), minute + 1):
            old = self.buckets[passed % WINDOW_MINUTES]
            self.total = Counts(
                self.total.sent - old.sent,
                self.total.hard_bounces - old.hard_bounces,
                self.total.complaints - old.complaints,
            )
            self.buckets[passed % WINDOW_MINUTES] = Counts()
        self.head_minute = minute

    def clear(self) -> None:
        self.buckets = [Counts()] * WINDOW_MINUTES
        self.total = Counts()

    def counts_at(self, now_ms: int) -> Counts:
        """The counts of the 24 hours up to `now_ms`, without moving the window."""
        if self.head_minute is None:
            return Counts()
        now_minute = now_ms // MINUTE_MS
        total = Counts()
        for back in range(WINDOW_MINUTES):
            minute = self.head_minute - back
            if now_minute - WINDOW_MINUTES < minute <= now_minute:
                total = total + self.buckets[minute % WINDOW_MINUTES]
        return total


class Guard:
    """Per-topic and account-wide rates in, pauses out. One per process that owns the outcomes."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._topics: dict[str, _Topic] = {}
        self._window = _Window()
        self.account_since_ms: int | None = None
        self.account_paused_reason: str | None = None

    @classmethod
    def restore(
        cls,
        limits: Limits,
        topics: Mapping[str, TopicState],
        account_minutes: Iterable[tuple[int, Counts]],
        now_ms: int,
        account_since_ms: int | None = None,
        account_paused_reason: str | None = None,
    ) -> Guard:
        """The guard as the database last knew it; call `review()` next for what to pause now.

        `account_minutes` are (a time in that minute, its counts) for events since the
        account's resume; those older than 24 hours before `now_ms` are left out.
        """
        guard = cls(limits)
        for topic_id, state in topics.items():
            guard._topics[topic_id] = _Topic(state.counts, state.since_ms, state.paused_reason)
        guard._window.add(now_ms, Counts())
        for at_ms, counts in account_minutes:
            guard._window.add(at_ms, counts)
        guard.account_since_ms = account_since_ms
        guard.account_paused_reason = account_paused_reason
        return guard

    def observe(self, event: GuardEvent) -> list[Effect]:
        """Count one event; what must pause because of it (each pause once until its resume)."""
        counts = _counts_of(event)
        if counts.sent < 0:
            raise ValueError(f"a negative count of sent mail: {event!r}")
        effects: list[Effect] = []
        if event.topic_id:
            effect = self._observe_topic(event.topic_id, event.at_ms, counts)
            if effect is not None:
                effects.append(effect)
        if self.account_since_ms is None or event.at_ms >= self.account_since_ms:
            counted = self._window.add(event.at_ms, counts)
            if counted and self.account_paused_reason is None:
                effects.extend(self._judge_account())
        return effects

    def _observe_topic(self, topic_id: str, at_ms: int, counts: Counts) -> PauseTopic | None:
        topic = self._topics.setdefault(topic_id, _Topic())
        if topic.since_ms is not None and at_ms < topic.since_ms:
            return None  # before the operator's resume
        topic.counts = topic.counts + counts
        return self._judge_topic(topic_id, topic)

    def _judge_topic(self, topic_id: str, topic: _Topic) -> PauseTopic | None:
        if topic.paused_reason is not None:
            return None
        reason = judge(topic.counts, self.limits, topic.sample())
        if reason is None:
            return None
        topic.paused_reason = reason
        return PauseTopic(topic_id, reason)

    def _judge_account(self) -> list[Effect]:
        sample = "in the last 24 h" if self.account_since_ms is None else "in the last 24 h since the resume"
        reason = judge(self._window.total, self.limits, sample)
        if reason is None:
            return []
        self.account_paused_reason = reason
        return [PauseAccount(reason)]

    def review(self) -> list[Effect]:
        """Judge everything as it stands (after `restore`): pauses the counts already call for."""
        effects: list[Effect] = []
        for topic_id, topic in self._topics.items():
            effect = self._judge_topic(topic_id, topic)
            if effect is not None:
                effects.append(effect)
        if self.account_paused_reason is None:
            effects.extend(self._judge_account())
        return effects

    def pause_topic(self, topic_id: str, reason: str) -> None:
        """Record a pause made elsewhere (the operator), so the guard does not announce another."""
        self._topics.setdefault(topic_id, _Topic()).paused_reason = reason

    def resume_topic(self, topic_id: str, at_ms: int) -> None:
        """The operator resumed the topic: judge it afresh on events from `at_ms` on."""
        self._topics[topic_id] = _Topic(since_ms=at_ms)

    def resume_account(self, at_ms: int) -> None:
        """The operator resumed sending: judge the account afresh on events from `at_ms` on."""
        self._window.clear()
        self.account_since_ms = at_ms
        self.account_paused_reason = None

    def forget_topic(self, topic_id: str) -> None:
        """Drop a topic that will see no more events (deleted, or past the events' horizon)."""
        self._topics.pop(topic_id, None)

    def topic_paused_reason(self, topic_id: str) -> str | None:
        topic = self._topics.get(topic_id)
        return None if topic is None else topic.paused_reason

    def topic_counts(self, topic_id: str) -> Counts:
        """The counts the topic is judged on (since its start or its last resume)."""
        topic = self._topics.get(topic_id)
        return Counts() if topic is None else topic.counts

    def account_counts(self, now_ms: int) -> Counts:
        """The account's counts over the 24 hours up to `now_ms` (for GET /v1/account)."""
        return self._window.counts_at(now_ms)

    def check_invariants(self) -> None:
        """Raise AssertionError when the window's running total disagrees with its buckets."""
        summed = sum(self._window.buckets, Counts())
        assert summed == self._window.total, (summed, self._window.total)
        assert min(summed.sent, summed.hard_bounces, summed.complaints) >= 0, summed
