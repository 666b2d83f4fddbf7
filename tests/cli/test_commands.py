"""`ses-sender` as an operator runs it: a real subprocess against a real server tree.

One tree serves the whole module, started by `ses-sender serve` itself, with
authentication on (a JWT secret and an API key) and the outbox backend, so each test
sees real answers, real .eml files and the real database. Every test uses a topic of
its own, so they do not depend on one another's order.
"""

from __future__ import annotations

import csv
import email
import email.policy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jwt
import pytest

from stages.cli import csvfile, upload
from tests.cli.files import big_file
from tests.helpers import Tree, free_port, http

SES_SENDER = Path(sys.executable).parent / "ses-sender"
SECRET = "cli-test-secret-" + "s" * 40
API_KEY = "cli-test-api-key-" + "k" * 40
HTML = "<html><body><p>Hello {{first_name}}, you are on {{plan}}.</p></body></html>"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class ServedTree(Tree):
    """The tree started as `ses-sender serve` instead of `python supervisor.py`."""

    def start(self, wait_ready: bool = True) -> Tree:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(SES_SENDER), "serve"], cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        if wait_ready:
            self.wait_ready()
        return self


class Operator:
    """Runs `ses-sender` in its own directory, against the tree, as an operator would."""

    def __init__(self, tree: Tree, workdir: Path, token: str) -> None:
        self.tree = tree
        self.workdir = workdir
        self.token = token

    def env(self, **extra: str) -> dict[str, str]:
        base = {"PATH": os.environ["PATH"], "SES_SENDER_URL": self.tree.base, "SES_SENDER_TOKEN": self.token}
        return {**base, **extra}

    def __call__(self, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> Result:
        done = subprocess.run(
            [str(SES_SENDER), *args],
            cwd=self.workdir,
            env=env if env is not None else self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return Result(done.returncode, done.stdout, done.stderr)

    def file(self, name: str, text: str) -> str:
        (self.workdir / name).write_text(text, encoding="utf-8")
        return name

    def csv(self, name: str, rows: list[list[str]]) -> str:
        with (self.workdir / name).open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows)
        return name

    def api(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        status, answer, _ = http(method, self.tree.base + path, body, headers={"X-API-KEY": API_KEY, **headers})
        return status, answer

    def recipients(self, topic: str) -> int:
        with self.tree.db() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM recipients WHERE topic_id = ?", (topic,)).fetchone()[0])

    def all_recipients(self) -> int:
        with self.tree.db() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM recipients").fetchone()[0])

    def mails(self) -> dict[str, email.message.EmailMessage]:
        found = {}
        for path in (self.tree.workdir / "outbox").glob("*.eml"):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(message, email.message.EmailMessage)
            found[str(message["To"])] = message
        return found


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    env = {"JWT_SECRET": SECRET, "API_KEY": API_KEY, "AUTH_DISABLED": "false", "MAX_SEND_PER_SECOND": "500"}
    served = ServedTree(tmp_path_factory.mktemp("server"), env)
    try:
        yield served.start()
    finally:
        served.stop()


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A token minted by `ses-sender token`, the way an operator gets one."""
    env = {"PATH": os.environ["PATH"], "JWT_SECRET": SECRET}
    done = subprocess.run(
        [str(SES_SENDER), "token", "--sub", "cli-tests", "--ttl", "2h"],
        cwd=tmp_path_factory.mktemp("mint"),
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def run(tree: Tree, token: str, tmp_path: Path) -> Operator:
    return Operator(tree, tmp_path, token)


def test_serve_runs_the_supervisor_itself(tree: Tree) -> None:
    # exec'd, not a child: the stages are the served process's own children
    assert set(tree.children()) == {"recorder", "sender", "scheduler", "ingest"}


def test_the_minted_token_names_its_subject_and_expires(token: str) -> None:
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "cli-tests" and claims["exp"] - claims["iat"] == 2 * 3600


def test_token_without_a_secret_or_with_a_bad_ttl_is_a_usage_error(run: Operator) -> None:
    bare = {"PATH": os.environ["PATH"]}
    no_secret = run("token", "--sub", "x", env={**bare, "API_KEY": API_KEY})
    assert no_secret.code == 2 and "JWT_SECRET is not set" in no_secret.err
    bad_ttl = run("token", "--sub", "x", "--ttl", "forever", env={**bare, "JWT_SECRET": SECRET})
    assert bad_ttl.code == 2 and "3600s" in bad_ttl.err


def test_a_personal_send_reaches_every_recipient_with_their_data(run: Operator) -> None:
    # Given: a file with data columns, an HTML and a text template
    people = run.csv(
        "people.csv",
        [["Email", "first_name", "plan"], ["ada@example.com", "Ada", "pro"], [" alan@example.com ", "Alan", "free"]],
    )
    run.file("mail.html", HTML)
    run.file("mail.txt", "Hi {{first_name}} ({{plan}})")
    # When: it is sent and watched to the end
    result = run(
        "send",
        "--csv",
        people,
        "--subject",
        "Hi {{first_name}}",
        "--html",
        "mail.html",
        "--text",
        "mail.txt",
        "--topic",
        "personal",
        "--list",
        "newsletter",
    )
    # Then: both are sent, each with their own subject, body and text, and the list's header
    assert result.code == 0, result.err
    assert "done: 2 sent, 0 failed" in result.out
    assert "upload: 2/2" in result.err and "sending: 2/2" in result.err  # plain lines: not a terminal
    mails = run.mails()
    ada, alan = mails["ada@example.com"], mails["alan@example.com"]
    assert (str(ada["Subject"]), str(alan["Subject"])) == ("Hi Ada", "Hi Alan")
    assert "Hello Ada, you are on pro." in ada.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Hi Alan (free)" in alan.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert str(ada["List-Id"]).startswith("newsletter ")


def test_running_the_same_send_again_adds_no_recipients(run: Operator) -> None:
    rows = [["email", "first_name", "plan"], *[[f"again{i}@example.com", f"A{i}", "pro"] for i in range(7)]]
    command = [
        "send",
        "--csv",
        run.csv("again.csv", rows),
        "--subject",
        "Hi {{first_name}}",
        "--html",
        run.file("mail.html", HTML),
        "--chunk-size",
        "3",
        "--json",
    ]
    first = run(*command)
    assert first.code == 0, first.err
    summary = first.json()
    topic = summary["topic_id"]
    assert summary["upload"]["chunks"] == 3 and summary["sending"]["sent"] == 7
    files = len(run.mails())
    # When: the very same command runs again (the operator is unsure it worked)
    again = run(*command)
    # Then: the same topic, every chunk answered from the server's record, nothing new stored or sent
    assert again.code == 0, again.err
    assert again.json()["topic_id"] == topic
    assert run.recipients(topic) == 7 and run.api("GET", f"/v1/topics/{topic}")[1]["total"] == 7
    assert len(run.mails()) == files


def test_a_run_cut_short_after_one_chunk_is_finished_by_running_it_again(run: Operator) -> None:
    # Given: a run that stored its first chunk and died (its request, built by the same code, with the same token)
    path = run.workdir / run.csv(
        "cut.csv", [["email", "first_name"], *[[f"cut{i}@example.com", f"C{i}"] for i in range(10)]]
    )
    run.file("mail.html", HTML)
    campaign = upload.Campaign("Hi {{first_name}}", HTML, None, "cut-short", None, None, personal=True)
    digest = upload.campaign_digest(csvfile.file_digest(path), campaign, 4)
    first = next(upload.chunks(csvfile.recipients(path), campaign, 4))
    headers = {"Authorization": f"Bearer {run.token}", "Idempotency-Key": upload.idempotency_key(digest, 1)}
    status, _, _ = http("POST", run.tree.base + "/v1/messages", upload.body(campaign, first), headers=headers)
    assert status == 200 and run.recipients("cut-short") == 4
    # When: the operator runs the command again
    result = run(
        "send",
        "--csv",
        "cut.csv",
        "--subject",
        "Hi {{first_name}}",
        "--html",
        "mail.html",
        "--topic",
        "cut-short",
        "--chunk-size",
        "4",
        "--no-wait",
    )
    # Then: the first chunk is not stored twice, and the rest is stored
    assert result.code == 0, result.err
    assert run.recipients("cut-short") == 10


def test_a_bad_row_exits_2_names_its_line_and_sends_nothing(run: Operator) -> None:
    rows = [["email", "first_name"], ["ok@example.com", "Ok"], ["not-an-address", "Bad"], ["fine@example.com", "Fine"]]
    before = run.all_recipients()
    result = run(
        "send",
        "--csv",
        run.csv("bad.csv", rows),
        "--subject",
        "Hi",
        "--html",
        run.file("m.html", HTML),
        "--topic",
        "bad-row",
    )
    assert result.code == 2
    assert "bad.csv, line 3: 'not-an-address'" in result.err
    assert "nothing was sent" in result.err and "--skip-invalid" in result.err
    assert run.all_recipients() == before and run.recipients("bad-row") == 0


def test_a_file_without_an_email_column_exits_2(run: Operator) -> None:
    result = run(
        "send", "--csv", run.csv("x.csv", [["name"], ["Ada"]]), "--subject", "Hi", "--html", run.file("m.html", HTML)
    )
    assert result.code == 2 and "line 1: no email column" in result.err


def test_skip_invalid_sends_the_rest_and_says_how_many_were_skipped(run: Operator) -> None:
    rows = [["email"], ["one@example.com"], ["@nope"], ["two@example.com"], ["two@EXAMPLE.com"]]
    result = run(
        "send",
        "--csv",
        run.csv("skip.csv", rows),
        "--subject",
        "For {{email}}",
        "--html",
        run.file("m.html", "<p>Hi {{email}}</p>"),
        "--topic",
        "skipping",
        "--skip-invalid",
    )
    assert result.code == 0, result.err
    assert "1 invalid (skipped)" in result.out and "1 repeated (sent once)" in result.out
    assert "skip.csv, line 5: two@example.com repeats line 4" in result.err
    assert run.recipients("skipping") == 2
    # A file without data columns posts plain `emails`, still rendered as templates
    assert str(run.mails()["one@example.com"]["Subject"]) == "For one@example.com"


def test_dry_run_checks_and_sends_nothing(run: Operator) -> None:
    rows = [["email", "first_name"], ["dry1@example.com", "D"], ["dry2@example.com", "E"]]
    result = run(
        "send",
        "--csv",
        run.csv("dry.csv", rows),
        "--subject",
        "Hi {{first_name}}",
        "--html",
        run.file("m.html", HTML),
        "--topic",
        "dry",
        "--dry-run",
        "--json",
    )
    assert result.code == 0, result.err
    summary = result.json()
    assert (summary["valid"], summary["dry_run"], summary["topic_id"], summary["upload"]) == (2, True, "dry", None)
    assert run.recipients("dry") == 0


def test_a_50000_row_file_is_checked_by_a_dry_run(run: Operator) -> None:
    big_file(run.workdir / "big.csv", 50_000)
    result = run(
        "send",
        "--csv",
        "big.csv",
        "--subject",
        "Hi {{first_name}}",
        "--html",
        run.file("m.html", "<p>{{first_name}} {{city}}</p>"),
        "--dry-run",
        "--json",
    )
    assert result.code == 0, result.err
    summary = result.json()
    assert (summary["rows"], summary["valid"], summary["chunks"], summary["upload"]) == (50_000, 50_000, 5, None)
    assert run.recipients(summary["topic_id"]) == 0


def in_seoul_tomorrow_at_nine() -> tuple[str, datetime]:
    day = datetime.now(ZoneInfo("Asia/Seoul")).date() + timedelta(days=1)
    local = datetime(day.year, day.month, day.day, 9, 0, tzinfo=ZoneInfo("Asia/Seoul"))
    return local.strftime("%Y-%m-%d %H:%M"), local.astimezone(UTC)


def schedule(run: Operator, topic: str, count: int = 2) -> None:
    """`count` recipients of `topic`, due tomorrow."""
    at, _ = in_seoul_tomorrow_at_nine()
    rows = [["email"], *[[f"{topic}{i}@example.com"] for i in range(count)]]
    result = run(
        "send",
        "--csv",
        run.csv(f"{topic}.csv", rows),
        "--subject",
        "Later",
        "--html",
        run.file("m.html", "<p>later</p>"),
        "--topic",
        topic,
        "--at",
        at,
        env=run.env(TZ="Asia/Seoul"),
    )
    assert result.code == 0, result.err


def test_at_takes_local_time_and_schedules_it(run: Operator) -> None:
    at, expected = in_seoul_tomorrow_at_nine()
    rows = [["email"], ["later1@example.com"], ["later2@example.com"]]
    result = run(
        "send",
        "--csv",
        run.csv("later.csv", rows),
        "--subject",
        "Later",
        "--html",
        run.file("m.html", HTML),
        "--topic",
        "scheduled",
        "--at",
        at,
        "--json",
        env=run.env(TZ="Asia/Seoul"),
    )
    assert result.code == 0, result.err
    summary = result.json()
    assert datetime.fromisoformat(summary["upload"]["scheduled_at"]) == expected
    assert summary["sending"] is None  # scheduled: nothing to watch today
    assert run.api("GET", "/v1/topics/scheduled")[1]["pending"] == 2


def test_status_prints_a_table_and_json_that_parses(run: Operator) -> None:
    schedule(run, "status-topic", 3)
    table = run("status", "status-topic")
    assert table.code == 0 and "topic status-topic" in table.out and "pending" in table.out
    stats = run("status", "status-topic", "--json")
    assert stats.code == 0 and stats.json()["pending"] == 3 and stats.json()["topic_id"] == "status-topic"


def test_topics_lists_what_was_posted(run: Operator) -> None:
    schedule(run, "listed-topic")
    listed = run("topics", "--json", "--limit", "500")
    assert listed.code == 0
    assert "listed-topic" in [t["topic_id"] for t in listed.json()["topics"]]
    assert "listed-topic" in run("topics", "--limit", "500").out


def test_pause_and_resume(run: Operator) -> None:
    schedule(run, "pausing", 2)
    paused = run("pause", "pausing", "--json")
    assert paused.code == 0 and paused.json()["paused"] == 2
    assert run.api("GET", "/v1/topics/pausing")[1]["paused"] == 2
    resumed = run("resume", "pausing")
    assert resumed.code == 0 and "resumed 2 recipient(s) of pausing" in resumed.out
    assert run.api("GET", "/v1/topics/pausing")[1]["pending"] == 2


def test_cancel_asks_first_and_no_cancels_nothing(run: Operator) -> None:
    schedule(run, "cancelling", 2)
    declined = run("cancel", "cancelling", stdin="n\n")
    assert declined.code == 2 and "not cancelled" in declined.err
    assert "2 recipient(s) not sent yet" in declined.err
    assert run.api("GET", "/v1/topics/cancelling")[1]["pending"] == 2
    unanswered = run("cancel", "cancelling", stdin="")  # a script that forgot --yes
    assert unanswered.code == 2 and "not cancelled" in unanswered.err
    assert run.api("GET", "/v1/topics/cancelling")[1]["pending"] == 2
    done = run("cancel", "cancelling", "--yes", "--json")
    assert done.code == 0 and done.json()["cancelled"] == 2
    assert run.api("GET", "/v1/topics/cancelling")[1]["cancelled"] == 2


def test_suppressions_import_checks_first_then_adds_and_export_lists_them(run: Operator) -> None:
    rows = [["Email", "reason"], ["supp1@example.com", "asked by phone"], ["broken", ""], ["supp2@example.com", ""]]
    name = run.csv("supp.csv", rows)
    refused = run("suppressions", "import", name)
    assert refused.code == 2 and "supp.csv, line 3: 'broken'" in refused.err
    assert run.api("GET", "/v1/suppressions/supp1@example.com")[0] == 404
    added = run("suppressions", "import", name, "--skip-invalid")
    assert added.code == 0 and "suppressed 2 new address(es); 0 were already suppressed" in added.out
    again = run("suppressions", "import", name, "--skip-invalid", "--json")
    assert again.code == 0 and (again.json()["added"], again.json()["already"]) == (0, 2)
    assert run.api("GET", "/v1/suppressions/supp1@example.com")[1]["reason"] == "asked by phone"
    # Export: to a file as CSV, to stdout as JSON
    assert run("suppressions", "export", "out.csv").code == 0
    with (run.workdir / "out.csv").open(newline="") as handle:
        exported = {row["email"]: row for row in csv.DictReader(handle)}
    assert exported["supp2@example.com"]["reason"] == "manual"
    listed = run("suppressions", "export", "--json")
    assert listed.code == 0 and {"supp1@example.com", "supp2@example.com"} <= {e["email"] for e in listed.json()}
    # A send to a suppressed address skips it and says so
    sent = run(
        "send",
        "--csv",
        run.csv("s.csv", [["email"], ["supp1@example.com"], ["kept@example.com"]]),
        "--subject",
        "Hi",
        "--html",
        run.file("m.html", "<p>x</p>"),
        "--no-wait",
        "--json",
    )
    assert sent.code == 0 and sent.json()["upload"]["suppressed"] == 1 and sent.json()["upload"]["stored"] == 1


def test_a_server_that_is_down_is_exit_1_and_one_line(run: Operator) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    for args in (
        ["status", "x"],
        [
            "send",
            "--csv",
            run.csv("d.csv", [["email"], ["a@example.com"]]),
            "--subject",
            "Hi",
            "--html",
            run.file("m.html", "<p>x</p>"),
        ],
    ):
        result = run(*args, "--server", down)
        assert result.code == 1
        lines = result.err.strip().splitlines()
        assert lines[-1] == f"ses-sender: cannot reach {down}: connection refused"
        assert run.token not in result.out + result.err


def test_a_refused_token_is_one_line_that_never_shows_the_token(run: Operator) -> None:
    forged = jwt.encode({"sub": "x", "exp": 4102444800}, "not-the-secret-" + "z" * 40, algorithm="HS256")
    result = run("topics", "--token", forged)
    assert result.code == 2
    assert result.err.strip().count("\n") == 0 and "answered 401" in result.err
    assert forged not in result.out + result.err and SECRET not in result.err


def test_an_api_key_is_accepted_instead_of_a_token(run: Operator) -> None:
    env = {k: v for k, v in run.env(SES_SENDER_API_KEY=API_KEY).items() if k != "SES_SENDER_TOKEN"}
    result = run("topics", "--json", env=env)
    assert result.code == 0 and "topics" in result.json()
    assert API_KEY not in result.out + result.err


def test_bad_usage_is_exit_2(run: Operator) -> None:
    missing = run("send", "--csv", "nope.csv", "--subject", "Hi", "--html", "nope.html")
    assert missing.code == 2
    bad_template = run(
        "send",
        "--csv",
        run.csv("t.csv", [["email"], ["t@example.com"]]),
        "--subject",
        "Hi {{#x}}",
        "--html",
        run.file("m.html", "<p>x</p>"),
    )
    assert bad_template.code == 2 and "--subject: line 1, column" in bad_template.err
    assert run("status", "anything").code == 0
