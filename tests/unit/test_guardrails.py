"""The reputation guard: topic and account pauses, min sample, resume, the rolling window."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pipeline.guardrails import (
    MINUTE_MS,
    WINDOW_MINUTES,
    Complained,
    Counts,
    Effect,
    Guard,
    GuardEvent,
    HardBounced,
    Limits,
    MailSent,
    PauseAccount,
    PauseTopic,
    TopicState,
    judge,
)

HOUR_MS = 60 * MINUTE_MS
T0 = 1_760_000_000_000


def bounces(guard: Guard, topic: str | None, n: int, at_ms: int = T0) -> list[Effect]:
    effects: list[Effect] = []
    for _ in range(n):
        effects += guard.observe(HardBounced(topic, at_ms))
    return effects


def on_topics(effects: list[Effect]) -> list[Effect]:
    """The topic pauses alone (a lone topic's events are the whole account too)."""
    return [effect for effect in effects if isinstance(effect, PauseTopic)]


# --- topics ------------------------------------------------------------------------------


def test_nothing_is_judged_before_the_minimum_sample() -> None:
    guard = Guard()
    assert guard.observe(MailSent("t", T0, 199)) == []
    assert bounces(guard, "t", 150) == []  # 75% of 199: too few sent to judge
    (effect,) = on_topics(guard.observe(MailSent("t", T0, 1)))
    assert isinstance(effect, PauseTopic) and effect.topic_id == "t"


def test_a_topic_pauses_above_the_bounce_limit_and_says_why_once() -> None:
    guard = Guard()
    guard.observe(MailSent("spring", T0, 200))
    assert bounces(guard, "spring", 8) == []  # 4.0% is the limit itself, not above it
    assert on_topics(bounces(guard, "spring", 1)) == [
        PauseTopic(
            "spring",
            "hard bounce rate 4.5% (9 of 200 sent since the topic started) is above the 4% limit (GUARD_BOUNCE_RATE)",
        )
    ]
    assert bounces(guard, "spring", 20) == []  # said once
    assert guard.topic_paused_reason("spring") is not None
    assert guard.topic_counts("spring") == Counts(200, 29, 0)


def test_complaints_have_their_own_limit() -> None:
    guard = Guard()
    guard.observe(MailSent("t", T0, 1250))
    assert guard.observe(Complained("t", T0)) == []  # 0.08% exactly
    (effect,) = on_topics(guard.observe(Complained("t", T0)))
    assert isinstance(effect, PauseTopic)
    assert effect.reason == (
        "complaint rate 0.16% (2 of 1,250 sent since the topic started) is above the 0.08% limit (GUARD_COMPLAINT_RATE)"
    )


def test_both_rates_crossing_at_once_are_both_named() -> None:
    reason = judge(Counts(200, 10, 1), Limits(), "in the sample")
    assert reason is not None and "GUARD_BOUNCE_RATE" in reason and "; complaint rate 0.5%" in reason


def test_topics_are_judged_apart() -> None:
    guard = Guard()
    guard.observe(MailSent("bad", T0, 200))
    guard.observe(MailSent("good", T0, 10_000))
    effects = on_topics(bounces(guard, "bad", 9) + bounces(guard, "good", 9))
    assert [e.topic_id for e in effects if isinstance(e, PauseTopic)] == ["bad"]
    assert guard.topic_paused_reason("good") is None


def test_after_a_resume_only_later_events_count() -> None:
    guard = Guard()
    guard.observe(MailSent("t", T0, 200))
    assert bounces(guard, "t", 9)
    guard.resume_topic("t", T0 + HOUR_MS)
    assert guard.topic_paused_reason("t") is None
    # Given late bounces stamped before the resume, and fewer than the sample after it
    assert bounces(guard, "t", 50, T0 + HOUR_MS - 1) == []
    assert guard.observe(MailSent("t", T0 + HOUR_MS, 150)) == []
    assert bounces(guard, "t", 50, T0 + HOUR_MS + 1) == []  # only 150 sent since the resume
    (effect,) = on_topics(guard.observe(MailSent("t", T0 + HOUR_MS + 2, 50)))
    assert isinstance(effect, PauseTopic) and "since the topic was resumed" in effect.reason
    assert guard.topic_counts("t") == Counts(200, 50, 0)


def test_mail_outside_a_topic_counts_for_the_account_only() -> None:
    guard = Guard()
    guard.observe(MailSent(None, T0, 100))
    guard.observe(MailSent("", T0, 100))
    effects = bounces(guard, None, 9)
    assert effects and all(isinstance(e, PauseAccount) for e in effects)
    assert guard.topic_counts("") == Counts()


def test_an_operator_pause_is_not_announced_again() -> None:
    guard = Guard()
    guard.pause_topic("t", "held by the operator")
    guard.observe(MailSent("t", T0, 200))
    assert on_topics(bounces(guard, "t", 20)) == []
    assert guard.topic_paused_reason("t") == "held by the operator"


# --- the account -------------------------------------------------------------------------


def test_the_account_pauses_on_the_sum_of_small_topics() -> None:
    # Given ten topics, each too small to be judged, that bounce 5% together
    guard = Guard()
    effects = []
    for n in range(10):
        effects += guard.observe(MailSent(f"t{n}", T0, 100))
        effects += bounces(guard, f"t{n}", 5)
    assert [type(e) for e in effects] == [PauseAccount]
    (effect,) = effects
    assert isinstance(effect, PauseAccount)
    assert effect.reason.startswith("hard bounce rate 4.")
    assert "sent in the last 24 h) is above the 4% limit (GUARD_BOUNCE_RATE)" in effect.reason
    assert guard.account_paused_reason == effect.reason


def test_the_account_window_rolls_over_24_hours() -> None:
    guard = Guard()
    guard.observe(MailSent(None, T0, 1000))
    guard.observe(MailSent(None, T0 + 12 * HOUR_MS, 500))
    assert bounces(guard, None, 50, T0 + 23 * HOUR_MS) == []  # 50 of 1,500: 3.3%
    assert guard.account_counts(T0 + 23 * HOUR_MS) == Counts(1500, 50, 0)
    # When the first 1,000 leave the window, 51 of 500 is 10%
    (effect,) = bounces(guard, None, 1, T0 + 24 * HOUR_MS + MINUTE_MS)
    assert isinstance(effect, PauseAccount) and "(51 of 500 sent in the last 24 h)" in effect.reason
    assert guard.account_counts(T0 + 24 * HOUR_MS + MINUTE_MS) == Counts(500, 51, 0)
    assert guard.account_counts(T0 + 48 * HOUR_MS) == Counts(0, 1, 0)
    assert guard.account_counts(T0 + 49 * HOUR_MS) == Counts()


def test_an_event_older_than_the_window_counts_for_its_topic_only() -> None:
    guard = Guard()
    guard.observe(MailSent("t", T0 + 30 * HOUR_MS, 10))
    guard.observe(MailSent("t", T0, 5))
    assert guard.topic_counts("t") == Counts(15, 0, 0)
    assert guard.account_counts(T0 + 30 * HOUR_MS) == Counts(10, 0, 0)


def test_the_window_edge_is_exactly_24_hours_to_the_minute() -> None:
    guard = Guard()
    head = T0 - T0 % MINUTE_MS + WINDOW_MS
    guard.observe(MailSent(None, head, 1))
    guard.observe(MailSent(None, head - WINDOW_MS + MINUTE_MS, 10))  # the oldest minute still in
    guard.observe(MailSent(None, head - WINDOW_MS, 100))  # one minute too old, not the head's bucket
    assert guard.account_counts(head) == Counts(11, 0, 0)
    guard.observe(MailSent(None, head + MINUTE_MS, 1000))
    assert guard.account_counts(head + MINUTE_MS) == Counts(1001, 0, 0)
    guard.observe(MailSent(None, head + MINUTE_MS + WINDOW_MS, 0))  # a jump of exactly the window
    assert guard.account_counts(head + MINUTE_MS + WINDOW_MS) == Counts()
    guard.check_invariants()


def test_the_window_keeps_1440_buckets_however_long_it_runs() -> None:
    guard = Guard()
    for minute in range(0, 3 * WINDOW_MINUTES, 7):
        guard.observe(MailSent("t", T0 + minute * MINUTE_MS, 3))
        guard.check_invariants()
    assert len(guard._window.buckets) == WINDOW_MINUTES
    assert guard.account_counts(T0 + 3 * WINDOW_MINUTES * MINUTE_MS).sent == 3 * len(
        range(2 * WINDOW_MINUTES + 1, 3 * WINDOW_MINUTES, 7)
    )


def test_after_an_account_resume_only_later_events_count() -> None:
    guard = Guard()
    guard.observe(MailSent(None, T0, 200))
    assert bounces(guard, None, 9)
    resumed = T0 + MINUTE_MS // 2
    guard.resume_account(resumed)
    assert guard.account_paused_reason is None and guard.account_counts(resumed) == Counts()
    assert bounces(guard, None, 30, resumed - 1) == []  # stamped before the resume
    assert guard.observe(MailSent(None, resumed, 200)) == []
    (effect,) = bounces(guard, None, 9, resumed)
    assert isinstance(effect, PauseAccount) and "since the resume" in effect.reason


# --- rebuilt at start --------------------------------------------------------------------


def test_restore_then_review_pauses_what_the_counts_already_call_for() -> None:
    guard = Guard.restore(
        Limits(),
        topics={
            "over": TopicState(Counts(300, 30, 0)),
            "held": TopicState(Counts(300, 30, 0), paused_reason="already paused"),
            "fine": TopicState(Counts(300, 1, 0), since_ms=T0),
        },
        account_minutes=[(T0 - 25 * HOUR_MS, Counts(10_000, 0, 0)), (T0 - HOUR_MS, Counts(900, 31, 0))],
        now_ms=T0,
    )
    guard.check_invariants()
    assert guard.account_counts(T0) == Counts(900, 31, 0)  # the day-old minute is out of the window
    assert guard.review() == [
        PauseTopic("over", judge(Counts(300, 30, 0), Limits(), "since the topic started") or ""),
    ]
    # A bounce stamped before "fine" was resumed counts for the account alone: 32 of 900
    assert bounces(guard, "fine", 1, T0 - 1) == [] and guard.topic_counts("fine") == Counts(300, 1, 0)
    assert bounces(guard, None, 4, T0) == []  # 36 of 900 is 4%, the limit itself
    (effect,) = bounces(guard, None, 1, T0)
    assert isinstance(effect, PauseAccount) and "(37 of 900 sent" in effect.reason


def test_restore_keeps_an_account_pause_and_its_resume_time() -> None:
    guard = Guard.restore(Limits(), {}, [(T0, Counts(200, 50, 0))], T0, T0 - 5, "account paused earlier")
    assert guard.review() == []
    assert guard.account_paused_reason == "account paused earlier" and guard.account_since_ms == T0 - 5


# --- random histories against a model that keeps every event ------------------------------

TOPICS = ("a", "b", None)
WINDOW_MS = WINDOW_MINUTES * MINUTE_MS
# Plain spans, and the window's edges, which random milliseconds would rarely hit.
EDGES = st.sampled_from([MINUTE_MS, WINDOW_MS - MINUTE_MS, WINDOW_MS, WINDOW_MS + MINUTE_MS])
BACK_MS = st.integers(0, 2 * HOUR_MS) | EDGES
FORWARD_MS = st.integers(0, 30 * HOUR_MS) | EDGES
STRICT = Limits(bounce_rate=0.05, complaint_rate=0.02, min_sent=20)


@dataclass
class Model:
    """Every event kept; counts recomputed from scratch."""

    events: list[tuple[GuardEvent, int]] = field(default_factory=list)  # (event, account epoch)
    topic_since: dict[str, int] = field(default_factory=dict)
    topic_epoch: dict[str, int] = field(default_factory=dict)
    account_since: int | None = None
    epoch: int = 0
    head_minute: int | None = None

    def topic_counts(self, topic: str) -> Counts:
        since = self.topic_since.get(topic)
        total = Counts()
        for index, (event, _) in enumerate(self.events):
            after_resume = index >= self.topic_epoch.get(topic, 0) and (since is None or event.at_ms >= since)
            if event.topic_id == topic and after_resume:
                total = total + _counts(event)
        return total

    def account_counts(self) -> Counts:
        total = Counts()
        assert self.head_minute is not None
        for event, epoch in self.events:
            in_window = event.at_ms // MINUTE_MS > self.head_minute - WINDOW_MINUTES
            after_resume = epoch == self.epoch and (self.account_since is None or event.at_ms >= self.account_since)
            if in_window and after_resume:
                total = total + _counts(event)
        return total


def _counts(event: GuardEvent) -> Counts:
    if isinstance(event, MailSent):
        return Counts(sent=event.count)
    return Counts(hard_bounces=1) if isinstance(event, HardBounced) else Counts(complaints=1)


class GuardHistories(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.guard = Guard(STRICT)
        self.model = Model()
        self.now = T0
        self.paused_topics: set[str] = set()
        self.account_paused = False

    def feed(self, event: GuardEvent) -> None:
        effects = self.guard.observe(event)
        self.model.events.append((event, self.model.epoch))
        counted = self.model.account_since is None or event.at_ms >= self.model.account_since
        if counted:
            minute = event.at_ms // MINUTE_MS
            self.model.head_minute = max(minute, self.model.head_minute or minute)
        for effect in effects:
            match effect:
                case PauseTopic(topic_id=topic_id):
                    assert topic_id not in self.paused_topics, "a pause said twice"
                    assert event.topic_id == topic_id
                    assert judge(self.model.topic_counts(topic_id), STRICT, "") is not None
                    self.paused_topics.add(topic_id)
                case PauseAccount():
                    assert not self.account_paused, "an account pause said twice"
                    assert judge(self.model.account_counts(), STRICT, "") is not None
                    self.account_paused = True

    @rule(topic=st.sampled_from(TOPICS), count=st.integers(0, 30), back_ms=BACK_MS)
    def sent(self, topic: str | None, count: int, back_ms: int) -> None:
        self.feed(MailSent(topic, self.now - back_ms, count))

    @rule(topic=st.sampled_from(TOPICS), complaint=st.booleans(), back_ms=BACK_MS)
    def feedback(self, topic: str | None, complaint: bool, back_ms: int) -> None:
        at_ms = self.now - back_ms
        self.feed(Complained(topic, at_ms) if complaint else HardBounced(topic, at_ms))

    @rule(ms=FORWARD_MS)
    def time_passes(self, ms: int) -> None:
        self.now += ms

    @rule(topic=st.sampled_from(("a", "b")))
    def resume_topic(self, topic: str) -> None:
        self.guard.resume_topic(topic, self.now)
        self.model.topic_since[topic] = self.now
        self.model.topic_epoch[topic] = len(self.model.events)
        self.paused_topics.discard(topic)

    @rule()
    def resume_account(self) -> None:
        self.guard.resume_account(self.now)
        self.model.account_since = self.now
        self.model.epoch += 1
        self.account_paused = False

    @invariant()
    def counts_match_the_model(self) -> None:
        self.guard.check_invariants()
        for topic in ("a", "b"):
            assert self.guard.topic_counts(topic) == self.model.topic_counts(topic)
            if topic not in self.paused_topics:
                assert judge(self.model.topic_counts(topic), STRICT, "") is None, "a crossing went unsaid"
        if self.model.head_minute is not None:
            assert self.guard._window.total == self.model.account_counts()
            if not self.account_paused:
                assert judge(self.model.account_counts(), STRICT, "") is None, "an account crossing went unsaid"


GuardHistories.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_guard_histories = GuardHistories.TestCase
