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

import json
import re
from dataclasses import dataclass
from typing import Any

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


def check_recipients(message: MessageIn, templates: Templates, where: str, line_breaks: re.Pattern[str]) -> None:
    """Every recipient's data: its size, that it renders within bounds, and what strict mode needs.

    Addresses in `emails` have no data, so they render alike and are checked once.
    """
    entries = [(r.email, r.data, f"{where}.recipients[{i}].data") for i, r in enumerate(message.recipients or ())]
    if message.emails:
        entries.append((message.emails[0], {}, f"{where}.emails"))
    must_render = any(t.size_bound() is None for t in templates.parts)
    lacking: list[str] = []
    for email, data, field in entries:
        check_one(templates, data, field, line_breaks, must_render)
        names = [name for t in templates.parts for name in t.missing(data)]
        if message.strict and names and len(lacking) < MAX_NAMED_RECIPIENTS:
            lacking.append(f"{email} ({', '.join(dict.fromkeys(names))})")
    if lacking:
        raise ApiError(
            400,
            "missing_variable",
            "recipients lack template variables: " + "; ".join(lacking),
            field_of(where, message),
        )


def check_one(templates: Templates, data: dict[str, Any], field: str, line_breaks: re.Pattern[str], full: bool) -> None:
    problem = data_size_problem(data)
    if problem is not None:
        raise ApiError(400, "invalid_field", problem, field)
    values = {**data, **SAMPLE_BUILT_INS}
    if line_breaks.search(render(templates.subject, values, field)):
        raise ApiError(400, "invalid_field", "this data puts a line break in the subject", field)
    if full:
        for template in templates.parts[1:]:
            render(template, values, field)


def field_of(where: str, message: MessageIn) -> str:
    return f"{where}.recipients" if message.recipients else f"{where}.emails"


def render(template: Template, values: dict[str, Any], field: str) -> str:
    try:
        return template.render(values)
    except RenderError as problem:
        raise ApiError(
            400, "invalid_field", f"this data makes the mail too large or too slow to render: {problem}", field
        ) from None


def data_json(data: dict[str, Any]) -> str:
    """What is stored with the recipient: compact JSON ("" for no data)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")) if data else ""
