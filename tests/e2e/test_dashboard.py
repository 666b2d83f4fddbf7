"""The dashboard in a real browser against the real tree, with JWT authentication on.

Headless Chromium is Debian's (/usr/bin/chromium, which .ci/run installs), driven by
Playwright for Python; Playwright never downloads a browser of its own here. Without
that binary the test skips and says why. It leaves screenshots in artifacts/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import pytest

from tests.fakes.fake_ses import FakeSes
from tests.helpers import ROOT, Tree, campaign, http, ses_env, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
# As root on a closed network: no sandbox (root), and none of Chromium's own background
# connections (without those flags they are refused, and the browser stalls on them).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "artifacts"
SECRET = "dashboard-secret-" + "b" * 40
HOSTILE_TOPIC = '<img src=x onerror=alert("topic")>'

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"
)


def token() -> str:
    now = int(time.time())
    return jwt.encode({"sub": "dashboard-test", "iat": now, "exp": now + 600}, SECRET, algorithm="HS256")


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    """A fresh headless Chromium (its own user-data-dir) with one page."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the test extras (playwright)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def shown_number(text: str | None) -> int:
    """A count as the page shows it ("1,234"); -1 for a dash or nothing yet."""
    digits = re.sub(r"\D", "", text or "")
    return int(digits) if digits else -1


def test_the_dashboard_shows_a_campaign_sending_and_pauses_it(
    make_tree: Callable[..., Tree], fake_ses: FakeSes, page: Page
) -> None:
    # Given: auth on, 20 sends a second, so 400 recipients take about 20 s; a finished
    # campaign, a scheduled one whose id is markup, and the big one, sending.
    env = {**ses_env(fake_ses.url, MAX_SEND_PER_SECOND="20"), "AUTH_DISABLED": "false", "JWT_SECRET": SECRET}
    tree = make_tree(env)
    auth = {"Authorization": f"Bearer {token()}"}

    def post(body: dict[str, Any]) -> None:
        status, answer, _ = http("POST", tree.base + "/v1/messages", body, headers=auth)
        assert status == 200 and answer["errors"] == 0, answer

    def topic(topic_id: str) -> dict[str, Any]:
        status, answer, _ = http("GET", tree.base + "/v1/topics/" + topic_id, headers=auth)
        assert status == 200, answer
        return dict(answer)

    post(campaign([f"reader{i}@example.com" for i in range(12)], "welcome-2026"))
    wait_until(lambda: topic("welcome-2026")["sent"] == 12, 20, "the small campaign to be sent")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    post(campaign([f"later{i}@example.com" for i in range(30)], HOSTILE_TOPIC, scheduled_at=tomorrow))
    post(campaign([f"buyer{i}@example.com" for i in range(400)], "spring-sale"))
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    # Script errors and Content-Security-Policy violations (Chromium logs those as errors).
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text) if "Content Security" in message.text else None)

    # When: the operator opens the page and signs in with a token
    page.goto(tree.base + "/dashboard")
    page.locator("#credential").fill(token())
    page.locator("#sign-in").click()

    # Then: the campaign's sent count, as shown, goes up while it sends
    card = page.locator('article.topic[data-topic-id="spring-sale"]')
    sent = card.locator('[data-count="sent"]')
    first = wait_until(lambda: shown_number(sent.text_content()) + 1, 30, "the dashboard to show a sent count") - 1
    wait_until(lambda: shown_number(sent.text_content()) > first, 30, "the shown sent count to go up")
    wait_until(lambda: card.locator(".speed-value").text_content() not in ("—", "0.0"), 30, "a measured send rate")

    # When: the operator pauses it and confirms
    card.locator("button.action-pause").click()

    # Then: the API says it is paused, and so does the page
    paused = wait_until(lambda: topic("spring-sale")["paused"], 20, "the topic to be paused in the API")
    assert 0 < paused < 400
    assert len(dialogs) == 1 and "Pause topic" in dialogs[0] and "spring-sale" in dialogs[0]
    wait_until(lambda: shown_number(card.locator('[data-count="paused"]').text_content()) == paused, 20, "paused")
    wait_until(lambda: card.locator(".badge").text_content() == "paused", 20, "the paused badge")
    assert "Paused" in (page.locator("#notice").text_content() or "")

    # A topic id is shown as text, never run as markup (and no alert() ever opened a dialog).
    hostile = page.locator("article.topic", has=page.locator("h3", has_text=HOSTILE_TOPIC))
    assert hostile.count() == 1 and hostile.locator("h3").text_content() == HOSTILE_TOPIC
    assert page.locator("#topics img").count() == 0 and len(dialogs) == 1
    # The account and the stages are shown too.
    assert page.locator("#guard-state").text_content() == "sending"
    assert shown_number(page.locator("#quota-used").text_content()) >= 0
    assert page.locator("#stages .chip.ok").count() >= 4
    assert problems == []

    ARTIFACTS.mkdir(exist_ok=True)
    wait_until(lambda: page.locator("#rate-spark polyline").count(), 10, "the account sparkline")
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
