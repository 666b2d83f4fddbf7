"""`ses-sender send`: check the file and the templates, upload the campaign chunk by chunk, watch it go out.

The order is the promise: everything that can be checked here is checked before the
first request (the templates parse, the header has an email column, every row's address
and data are valid), so a bad file sends nothing. Then the file is read a second time
and posted in chunks (`upload.py`), each with its own Idempotency-Key, so a run stopped
by a crash, a network failure or Ctrl-C is finished by running the same command again:
chunks already stored are answered from the server's record and stored nothing twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from rich.console import Console

from pipeline.templates import BUILT_INS, Template, TemplateError, parse
from stages.cli import csvfile, upload
from stages.cli.client import Client
from stages.cli.csvfile import BadRow, Checked, DataCheck, Repeat, Tally
from stages.cli.errors import ExitCode, Failure
from stages.cli.output import print_json, say
from stages.cli.progress import meter
from stages.cli.watch import Sending, watch
from stages.ingest.campaigns import LINE_SEPARATORS
from stages.ingest.schemas import LIST_ID_PATTERN, MAX_SUBJECT_CHARS, MAX_TOPIC_CHARS, NO_CONTROL_CHARACTERS, conforms

MAX_REPEATS_SHOWN: Final = 20
UPLOAD_FIELDS: Final = ("chunks", "stored", "suppressed", "duplicates", "rejected", "scheduled_at")


@dataclass(frozen=True, slots=True)
class SendOptions:
    csv: Path
    subject: str
    html: Path
    text: Path | None = None
    topic: str | None = None
    list_id: str | None = None
    at: str | None = None
    skip_invalid: bool = False
    dry_run: bool = False
    wait: bool = True
    chunk_size: int = upload.MAX_CHUNK
    json: bool = False


@dataclass(slots=True)
class Uploaded:
    """The servers' answers to the chunks, added up."""

    chunks: int = 0
    posted: int = 0
    stored: int = 0
    suppressed: int = 0
    duplicates: int = 0
    rejected: list[Any] = field(default_factory=list)
    scheduled_at: str | None = None

    def add(self, chunk: upload.Chunk, answer: dict[str, Any]) -> None:
        self.chunks += 1
        self.posted += chunk.size
        self.stored += int(answer.get("success", 0))
        self.suppressed += int(answer.get("suppressed", 0))
        self.duplicates += int(answer.get("duplicates", 0))
        self.rejected.extend(answer.get("rejected") or [])
        if answer.get("scheduled"):
            self.scheduled_at = answer.get("scheduled_at")

    def as_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in UPLOAD_FIELDS}


@dataclass(frozen=True, slots=True)
class Parts:
    """The three templates as read from their files, each parsed once."""

    subject: Template
    html: str
    text: str | None
    templates: tuple[tuple[str, Template], ...]  # (where, template) for warnings


def run(options: SendOptions, client: Client, out: Console, err: Console) -> int:
    """The whole send; the exit code, or Failure."""
    parts = read_parts(options)
    check_names(options)
    scheduled_at = upload.scheduled_at(options.at)
    columns = csvfile.read_columns(options.csv)
    warn_unknown_names(parts, columns.names, err)
    data_check = subject_check(parts.subject) if "{{" in options.subject and columns.data else None
    tally = csvfile.check_file(options.csv, data_check, on_problem=ProblemPrinter(options.csv, err))
    digest = csvfile.file_digest(options.csv)
    campaign = make_campaign(options, parts, scheduled_at, bool(columns.data), digest)
    summary = summarise(options, tally, campaign)
    say(err if options.json else out, describe_check(options.csv, tally, options.skip_invalid))
    if tally.invalid and not options.skip_invalid:
        finish(options, summary)
        raise Failure(
            ExitCode.USAGE,
            f"{options.csv}: {tally.invalid:,} invalid row(s), named above; nothing was sent. "
            f"Fix them, or pass --skip-invalid to send the other {tally.valid:,}",
        )
    if tally.valid == 0:
        finish(options, summary)
        raise Failure(ExitCode.USAGE, f"{options.csv}: no valid address to send to; nothing was sent")
    if options.dry_run:
        say(err if options.json else out, f"dry run: nothing sent; the topic would be {campaign.topic_id}")
        finish(options, summary)
        return ExitCode.OK
    uploaded = post_all(options, campaign, digest, data_check, tally.valid, client, err)
    summary["upload"] = uploaded.as_json()
    say(err if options.json else out, describe_upload(campaign.topic_id, uploaded))
    summary["sending"] = follow(options, campaign.topic_id, uploaded, client, out, err)
    finish(options, summary)
    return ExitCode.OK


def read_parts(options: SendOptions) -> Parts:
    """The subject and the files' templates, parsed; Failure naming the file, line and column."""
    if not options.subject.strip():
        raise Failure(ExitCode.USAGE, "--subject must not be blank")
    if LINE_SEPARATORS.search(options.subject) or len(options.subject) > MAX_SUBJECT_CHARS:
        raise Failure(ExitCode.USAGE, f"--subject must be one line of at most {MAX_SUBJECT_CHARS} characters")
    html = read_text(options.html)
    text = read_text(options.text) if options.text is not None else None
    templates = [("--subject", parse_template(options.subject, "--subject", html=False))]
    templates.append((str(options.html), parse_template(html, str(options.html), html=True)))
    if text is not None and options.text is not None:
        templates.append((str(options.text), parse_template(text, str(options.text), html=False)))
    return Parts(templates[0][1], html, text, tuple(templates))


def read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise Failure(ExitCode.USAGE, f"{path}: not UTF-8 text") from None
    except OSError as problem:
        raise csvfile.unreadable(path, problem) from None
    if not text.strip():
        raise Failure(ExitCode.USAGE, f"{path}: the file is empty")
    return text


def parse_template(source: str, where: str, *, html: bool) -> Template:
    try:
        return parse(source, html=html)
    except TemplateError as problem:
        raise Failure(ExitCode.USAGE, f"{where}: {problem}") from None


def check_names(options: SendOptions) -> None:
    """--topic and --list within the API's limits (docs/api.md#errors-and-limits)."""
    topic = options.topic
    if topic is not None and (not topic or len(topic) > MAX_TOPIC_CHARS or not conforms(NO_CONTROL_CHARACTERS, topic)):
        raise Failure(ExitCode.USAGE, f"--topic must be 1 to {MAX_TOPIC_CHARS} characters, and no control characters")
    if options.list_id is not None and not conforms(LIST_ID_PATTERN, options.list_id):
        raise Failure(ExitCode.USAGE, "--list must be letters, digits, _ and -, in parts joined by dots")


def warn_unknown_names(parts: Parts, columns: tuple[str, ...], err: Console) -> None:
    """A name the templates use that no column fills renders empty: worth a word before sending."""
    supplied = {*BUILT_INS, *columns}
    for where, template in parts.templates:
        missing = template.missing({}, supplied)
        if missing:
            names = ", ".join("{{" + name + "}}" for name in missing)
            say(err, f"warning: {where} uses {names}, which no column of the file fills: it renders empty")


def subject_check(subject: Template) -> DataCheck:
    """A row whose data would break the subject across lines (the server refuses the whole chunk)."""

    def check(data: dict[str, str]) -> str | None:
        if LINE_SEPARATORS.search(subject.render(data)):
            return "its data puts a line break in the subject"
        return None

    return check


class ProblemPrinter:
    """Each bad row as it is met; repeats up to MAX_REPEATS_SHOWN (the summary counts them all)."""

    def __init__(self, path: Path, err: Console) -> None:
        self.path = path
        self.err = err
        self.repeats = 0

    def __call__(self, row: Checked) -> None:
        if isinstance(row, BadRow):
            say(self.err, row.describe(self.path))
        elif isinstance(row, Repeat):
            self.repeats += 1
            if self.repeats <= MAX_REPEATS_SHOWN:
                say(self.err, row.describe(self.path))
            elif self.repeats == MAX_REPEATS_SHOWN + 1:
                say(self.err, f"{self.path}: more repeated addresses; the summary counts them")


def make_campaign(
    options: SendOptions, parts: Parts, scheduled_at: str | None, personal: bool, file_digest: str
) -> upload.Campaign:
    """The campaign; without --topic, its topic is derived from the file and the options."""
    campaign = upload.Campaign(
        subject=options.subject,
        html=parts.html,
        text=parts.text,
        topic_id=options.topic or "",
        list_id=options.list_id,
        scheduled_at=scheduled_at,
        personal=personal,
    )
    if options.topic is None:
        campaign = replace(campaign, topic_id=upload.default_topic(file_digest, campaign))
    return campaign


def post_all(
    options: SendOptions,
    campaign: upload.Campaign,
    file_digest: str,
    data_check: DataCheck | None,
    total: int,
    client: Client,
    err: Console,
) -> Uploaded:
    """Every chunk, in order, each with its key; Failure says how far it got and how to go on."""
    digest = upload.campaign_digest(file_digest, campaign, options.chunk_size)
    uploaded = Uploaded()
    bar = meter("upload", err)
    bar.update(0, total)
    rows = csvfile.recipients(options.csv, data_check)
    try:
        for chunk in upload.chunks(rows, campaign, options.chunk_size):
            headers = {"Idempotency-Key": upload.idempotency_key(digest, chunk.number)}
            answer = client.post("/v1/messages", upload.body(campaign, chunk), headers)
            uploaded.add(chunk, answer.body if isinstance(answer.body, dict) else {})
            bar.update(uploaded.posted, total, f"chunk {chunk.number}")
    except KeyboardInterrupt:
        raise Failure(ExitCode.INTERRUPTED, stopped_at(uploaded, total, "interrupted")) from None
    except Failure as problem:
        if uploaded.chunks:
            raise Failure(problem.code, f"{problem.message}. {stopped_at(uploaded, total, 'stopped')}") from None
        raise
    finally:
        rows.close()
        bar.close()
    return uploaded


def stopped_at(uploaded: Uploaded, total: int, how: str) -> str:
    # A chunk in flight when it stopped may be stored too: the re-run's key finds it either way.
    return (
        f"{how} after the server confirmed {uploaded.posted:,} of {total:,} recipients ({uploaded.chunks} chunk(s)); "
        "run the same command again to send the rest: what is stored is not stored twice "
        "(as long as the file and the options stay the same: otherwise it is a new campaign)"
    )


def follow(
    options: SendOptions, topic_id: str, uploaded: Uploaded, client: Client, out: Console, err: Console
) -> dict[str, Any] | None:
    """Watch the topic go out, unless told not to or it is scheduled; its last statistics."""
    where = err if options.json else out
    if uploaded.scheduled_at is not None:
        say(where, f"scheduled for {uploaded.scheduled_at}; follow it with: ses-sender status {topic_id}")
        return None
    if not options.wait:
        say(where, f"sending; follow it with: ses-sender status {topic_id}")
        return None
    try:
        stats = watch(client, topic_id, err)
    except KeyboardInterrupt:
        raise Failure(
            ExitCode.INTERRUPTED, f"stopped watching; the campaign goes on: ses-sender status {topic_id}"
        ) from None
    say(where, describe_sending(Sending.of(stats)))
    return stats


def summarise(options: SendOptions, tally: Tally, campaign: upload.Campaign) -> dict[str, Any]:
    return {
        "file": str(options.csv),
        "rows": tally.rows,
        "valid": tally.valid,
        "invalid": tally.invalid,
        "repeats": tally.repeats,
        "invalid_rows": [{"line": r.line, "value": r.value, "reason": r.reason} for r in tally.bad],
        "repeated_rows": [{"line": r.line, "email": r.email, "first_line": r.first_line} for r in tally.repeated],
        "columns": list(tally.columns.names),
        "topic_id": campaign.topic_id,
        "chunks": math.ceil(tally.valid / options.chunk_size),
        "dry_run": options.dry_run,
        "scheduled_at": campaign.scheduled_at,
        "upload": None,
        "sending": None,
    }


def finish(options: SendOptions, summary: dict[str, Any]) -> None:
    if options.json:
        print_json(summary)


def describe_check(path: Path, tally: Tally, skip_invalid: bool) -> str:
    text = f"{path}: {tally.rows:,} row(s): {tally.valid:,} to send"
    if tally.invalid:
        text += f", {tally.invalid:,} invalid" + (" (skipped)" if skip_invalid else "")
    if tally.repeats:
        text += f", {tally.repeats:,} repeated (sent once)"
    return text


def describe_upload(topic_id: str, uploaded: Uploaded) -> str:
    text = f"topic {topic_id}: {uploaded.stored:,} recipient(s) stored in {uploaded.chunks} chunk(s)"
    extra = [f"{uploaded.suppressed:,} suppressed (skipped)"] if uploaded.suppressed else []
    if uploaded.rejected:
        extra.append(f"{len(uploaded.rejected):,} rejected by the server")
    return text + (f" ({', '.join(extra)})" if extra else "")


def describe_sending(sending: Sending) -> str:
    text = f"done: {sending.sent:,} sent, {sending.failed:,} failed, {sending.bounced:,} bounced"
    if sending.paused:
        text += f"; {sending.paused:,} paused (ses-sender resume TOPIC goes on)"
    return text
