"""Personalized messages at POST: the templates parse, the data fits, and nothing can fail later.

A message is a template when it lists `recipients` (with data) or says `"template": true`;
otherwise its subject and content go out verbatim, as the original server sent them (its
clients may send a literal `{{`). Everything that could make a recipient's mail fail at
send time is found here, as a 400 naming the field, so nothing surfaces only after
sending (SES's asynchronous Rendering Failure would): a template that does not parse,
data over the limit, a subject that a recipient's data would break across lines, a
rendering over the size or time budget, and, with `"strict": true`, a variable some
recipient's data lacks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

from pipeline.templates import RenderError, Template, TemplateError, data_size_problem, parse
from stages.ingest.errors import ApiError
from stages.ingest.schemas import MessageIn

MAX_NAMED_RECIPIENTS = 5  # how many of those missing a variable a strict 400 names
# Built-ins stand in with values of their longest likely size, so a size check is honest.
SAMPLE_BUILT_INS = {"email": "x" * 320, "topic_id": "x" * 255, "unsubscribe_url": "x" * 400}


@dataclass(frozen=True, slots=True)
class Templates:
    subject: Template
    content: Template
    text: Template | None

    @property
    def parts(self) -> tuple[Template, ...]:
        return (self.subject, self.content) if self.text is None else (self.subject, self.content, self.text)


def is_template(message: MessageIn) -> bool:
    return message.template or message.recipients is not None


def parsed(message: MessageIn, where: str) -> Templates:
    """Each part parsed; 400 naming the part, the line and the column of the first problem."""
    return Templates(
        part(message.subject, f"{where}.subject", html=False),
        part(message.content, f"{where}.content", html=True),
        None if message.text is None else part(message.text, f"{where}.text", html=False),
    )


def part(source: str, field: str, *, html: bool) -> Template:
    try:
        return parse(source, html=html)
    except TemplateError as problem:
        raise ApiError(400, "invalid_template", str(problem), field) from None


def check_recipients(
    message: MessageIn, templates: Templates, where: str, line_breaks: re.Pattern[str]
) -> tuple[str, ...]:
    """Every recipient's data: its size, that it renders within bounds, and what strict mode
    needs. Returns the data to store with each of `recipients` (compact JSON, "" for none).

    Addresses in `emails` have no data, so they render alike and are checked once.
    """
    recipients = message.recipients or ()
    must_render = any(t.size_bound() is None for t in templates.parts)
    # A subject without a name cannot get a line break from data: no need to render it.
    subject_varies = "{{" in message.subject
    stored: list[str] = []
    try:
        for recipient in recipients:
            stored.append(check_one(templates, recipient.data, line_breaks, must_render, subject_varies))
        if message.emails:
            check_one(templates, {}, line_breaks, must_render, subject_varies)
    except DataProblem as problem:
        # The field is named only for an error: 10,000 f-strings cost more than the checks.
        at = len(stored)
        field = f"{where}.recipients[{at}].data" if at < len(recipients) else f"{where}.emails"
        raise ApiError(400, "invalid_field", str(problem), field) from None
    if message.strict:
        check_strict(message, templates, where)
    return tuple(stored)


def check_strict(message: MessageIn, templates: Templates, where: str) -> None:
    """`"strict": true`: a 400 naming the first recipients that lack a variable."""
    entries = [(r.email, r.data) for r in message.recipients or ()]
    entries += [(email, {}) for email in message.emails[:1]]
    lacking: list[str] = []
    for email, data in entries:
        names = [name for t in templates.parts for name in t.missing(data)]
        if names:
            lacking.append(f"{email} ({', '.join(dict.fromkeys(names))})")
            if len(lacking) == MAX_NAMED_RECIPIENTS:
                break
    if lacking:
        raise ApiError(
            400,
            "missing_variable",
            "recipients lack template variables: " + "; ".join(lacking),
            field_of(where, message),
        )


class DataProblem(ValueError):
    """One recipient's data is refused; check_recipients names the field."""


def check_one(
    templates: Templates, data: dict[str, Any], line_breaks: re.Pattern[str], full: bool, subject: bool
) -> str:
    """One recipient's checks (DataProblem says what is wrong); its data as stored (compact JSON, "" for none)."""
    encoded = msgspec.json.encode(data) if data else b""
    problem = data_size_problem(data, encoded) if data else None
    if problem is not None:
        raise DataProblem(problem)
    if not data and not full and not subject:
        return ""
    # The subject's own text was checked; only a value can bring a line break into it. JSON
    # escapes control characters with a backslash, so without one (and without the
    # separators JSON leaves as they are) no value holds a line break.
    text = encoded.decode()
    suspect = subject and ("\\" in text or line_breaks.search(text) is not None)
    if suspect and any_line_break(data, line_breaks):
        values = {**data, **SAMPLE_BUILT_INS}
        if line_breaks.search(render(templates.subject, values)):
            raise DataProblem("this data puts a line break in the subject")
    if full:
        values = {**data, **SAMPLE_BUILT_INS}
        for template in templates.parts[1:]:
            render(template, values)
    return text


def any_line_break(value: object, line_breaks: re.Pattern[str]) -> bool:
    """Whether any string in `value` (nested objects and lists too) holds a line separator."""
    if isinstance(value, str):
        return line_breaks.search(value) is not None
    if isinstance(value, dict):
        return any(any_line_break(item, line_breaks) for item in value.values())
    if isinstance(value, list):
        return any(any_line_break(item, line_breaks) for item in value)
    return False


def field_of(where: str, message: MessageIn) -> str:
    return f"{where}.recipients" if message.recipients else f"{where}.emails"


def render(template: Template, values: dict[str, Any]) -> str:
    try:
        return template.render(values)
    except RenderError as problem:
        raise DataProblem(f"this data makes the mail too large or too slow to render: {problem}") from None
