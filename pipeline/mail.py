"""What one recipient's email is: content prepared once per message, pixel and link per recipient.

The HTML reaches SES byte for byte except for exactly one tracking pixel, inserted
before the last `</body>` (or appended), each `{{unsubscribe_url}}` filled with the
recipient's link, and, when the content places no link and the message is not
transactional, the unsubscribe footer before the pixel. The plain-text alternative
comes from the HTML once per message (inscriptis), not once per recipient, and gets
the link too (pipeline/unsubscribe.py has the link's format and the footers).
"""

from __future__ import annotations

import html as html_module
import json
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import inscriptis

from pipeline.clicks import CLICK_PATH, ClickSlots, click_tokens, rewrite_links
from pipeline.templates import RenderError, Template, TemplateError, parse
from pipeline.unsubscribe import LinkSlots, has_link, link_slots, prepare_text, text_footer

BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
ENCODED_LINK = re.compile(r"%7B%7Bunsubscribe_url%7D%7D", re.IGNORECASE)
TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
TAG_MAX_CHARS = 256


class MailNotBuildable(ValueError):
    """This recipient's mail cannot be built (a header the email package refuses, say).

    It will fail the same way every time, so it fails the recipient once, with the reason;
    it must never be mistaken for an outage that pauses all sending.
    """


@dataclass(frozen=True, slots=True)
class PreparedContent:
    """A message's content split where the pixel goes, and where each recipient's link goes."""

    subject: str
    html_before: LinkSlots
    html_after: LinkSlots
    text: LinkSlots
    list_id: str | None = None
    transactional: bool = False
    # With click tracking: the HTML cut at each tracked link (then split per recipient), and
    # the footer that is due (the split above is then unused).
    clicks: ClickSlots | None = None
    footer: str | None = None


@dataclass(frozen=True, slots=True)
class Tracking:
    """What a recipient's click links are signed with: SERVER_URL and the installation key."""

    server_url: str
    key: bytes


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """One recipient's unsubscribe link and the headers that carry it (RFC 8058, RFC 2919)."""

    url: str
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    recipient_id: int
    to: str
    subject: str
    html: str
    text: str
    tags: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...] = ()


def prepare(
    subject: str,
    html: str,
    *,
    list_id: str | None = None,
    transactional: bool = False,
    footer: str | None = None,
    track_clicks: bool = False,
) -> PreparedContent:
    """Split at the last </body> (or the end), add the footer when it is due, and derive the text part.

    `footer` is the HTML footer (UNSUBSCRIBE_FOOTER); None adds none.
    """
    closings = [match.start() for match in BODY_CLOSE.finditer(html)]
    cut = closings[-1] if closings else len(html)
    text = inscriptis.get_text(html).strip()
    if transactional or footer is None:
        before, text_slots = html[:cut], link_slots(text, escape=False)
    else:
        before = html[:cut] if has_link(html) else html[:cut] + footer
        text_slots = prepare_text(text, text_footer(footer))
    due = None if transactional or footer is None or has_link(html) else footer
    return PreparedContent(
        subject,
        link_slots(before, escape=True),
        link_slots(html[cut:], escape=True),
        text_slots,
        list_id,
        transactional,
        rewrite_links(html) if track_clicks else None,
        due,
    )


@dataclass(frozen=True, slots=True)
class PreparedTemplate:
    """A template message: its parts parsed once, rendered per recipient with its data.

    The footers are decided on the template's source (a `{{unsubscribe_url}}` there is the
    recipient's link once rendered), so a rendered link never gets a second footer.
    """

    subject: Template
    html: Template
    text: Template | None  # None: the derived text did not parse; derived per recipient instead
    footer: str | None
    text_footer: str | None
    list_id: str | None = None
    transactional: bool = False
    # Tracked links: each is the variable `__click_N` in `html`, filled per recipient.
    clicks: int = 0
    # The source spells the link in a form the template language does not fill (an editor's
    # URL-encoded `%7B%7Bunsubscribe_url%7D%7D`): the rendered parts are searched for it.
    literal_links: bool = False


def prepare_template(
    subject: str,
    html: str,
    text: str | None,
    *,
    list_id: str | None = None,
    transactional: bool = False,
    footer: str | None = None,
    track_clicks: bool = False,
) -> PreparedTemplate:
    """Parse each part once; without a text part, the text is derived from the HTML template."""
    source = text if text is not None else inscriptis.get_text(html).strip()
    clicks = rewrite_links(html) if track_clicks else None
    tracked = html if clicks is None else "".join(click_variables(clicks))
    try:
        text_template: Template | None = parse(source, html=False)
    except TemplateError:
        text_template = None  # inscriptis split a tag: render the HTML, then derive (slow, rare)
    wants_footer = footer is not None and not transactional
    return PreparedTemplate(
        parse(subject, html=False),
        parse(tracked, html=True),
        text_template,
        footer if wants_footer and not has_link(html) else None,
        text_footer(footer) if wants_footer and not has_link(source) else None,
        list_id,
        transactional,
        0 if clicks is None else len(clicks.links),
        ENCODED_LINK.search(html) is not None or ENCODED_LINK.search(source) is not None,
    )


def click_variables(clicks: ClickSlots) -> list[str]:
    """The HTML's pieces with `{{{__click_N}}}` in each tracked link's place."""
    parts = [clicks.pieces[0]]
    for index, piece in enumerate(clicks.pieces[1:]):
        parts += (f"{{{{{{__click_{index}}}}}}}", piece)
    return parts


def build_personal(
    content: PreparedTemplate,
    recipient_id: int,
    to: str,
    topic_id: str,
    data: str | None,
    pixel: str,
    unsubscribe: Unsubscribe | None = None,
    tracking: Tracking | None = None,
) -> OutgoingMail:
    """One recipient's mail from a template: rendered with its data and the built-ins (which
    its data cannot replace), then the footer, the link and the pixel, as for any mail."""
    url = unsubscribe.url if unsubscribe is not None else ""
    values = {**(json.loads(data) if data else {}), "email": to, "topic_id": topic_id, "unsubscribe_url": url}
    if content.clicks and tracking is not None:
        prefix = tracking.server_url + CLICK_PATH
        tokens = click_tokens(tracking.key, recipient_id, content.clicks)
        values.update((f"__click_{index}", html_module.escape(prefix + token)) for index, token in enumerate(tokens))
    try:
        subject, html = content.subject.render(values), content.html.render(values)
        text = content.text.render(values) if content.text is not None else inscriptis.get_text(html).strip()
    except RenderError as problem:
        raise MailNotBuildable(f"the template cannot be rendered for this recipient: {problem}") from None
    if content.literal_links:
        html, text = link_slots(html, escape=True).fill(url), link_slots(text, escape=False).fill(url)
    if content.text_footer is not None:
        footer = link_slots(content.text_footer, escape=False).fill(url)
        text = f"{text.rstrip()}\n\n{footer}" if text.strip() else footer
    return OutgoingMail(
        recipient_id=recipient_id,
        to=to,
        subject=subject,
        html=finish(html, content.footer, url, pixel),
        text=text,
        tags=tags_of(recipient_id, topic_id),
        headers=unsubscribe.headers if unsubscribe is not None and not content.transactional else (),
    )


def assemble(html: str, footer: str | None, url: str, pixel: str) -> str:
    """A recipient's own HTML finished: the footer and the pixel before the last </body>, the link filled."""
    closings = [match.start() for match in BODY_CLOSE.finditer(html)]
    cut = closings[-1] if closings else len(html)
    return (
        link_slots(html[:cut] + (footer or ""), escape=True).fill(url)
        + pixel
        + link_slots(html[cut:], escape=True).fill(url)
    )


def finish(html: str, footer: str | None, url: str, pixel: str) -> str:
    """A rendered template's HTML finished: its links are in already, so only the footer's is filled."""
    closings = [match.start() for match in BODY_CLOSE.finditer(html)]
    cut = closings[-1] if closings else len(html)
    linked = link_slots(footer, escape=True).fill(url) if footer else ""
    return html[:cut] + linked + pixel + html[cut:]


def tags_of(recipient_id: int, topic_id: str) -> tuple[tuple[str, str], ...]:
    """The tags that let SES events find the recipient (and its topic)."""
    tags = [("request_id", str(recipient_id))]
    if topic_id:
        tags.append(("topic_id", tag_value(topic_id)))
    return tuple(tags)


def tag_value(text: str) -> str:
    """SES tag values allow only [A-Za-z0-9_-], at most 256 characters."""
    return TAG_UNSAFE.sub("_", text)[:TAG_MAX_CHARS]


def build(
    content: PreparedContent,
    recipient_id: int,
    to: str,
    topic_id: str,
    pixel: str,
    unsubscribe: Unsubscribe | None = None,
    tracking: Tracking | None = None,
) -> OutgoingMail:
    """One recipient's mail, with its pixel, its link, its list headers (unless transactional),
    its click links (when tracked) and the tags that let SES events find it."""
    url = unsubscribe.url if unsubscribe is not None else ""
    headers = unsubscribe.headers if unsubscribe is not None and not content.transactional else ()
    if content.clicks is not None and tracking is not None:
        html = assemble(
            content.clicks.fill(tracking.server_url, tracking.key, recipient_id), content.footer, url, pixel
        )
    else:
        html = content.html_before.fill(url) + pixel + content.html_after.fill(url)
    return OutgoingMail(
        recipient_id=recipient_id,
        to=to,
        subject=content.subject,
        html=html,
        text=content.text.fill(url),
        tags=tags_of(recipient_id, topic_id),
        headers=headers,
    )


def to_mime(mail: OutgoingMail, sender: str) -> EmailMessage:
    """A standard multipart/alternative message (the outbox backend's .eml files)."""
    try:
        return _to_mime(mail, sender)
    except (ValueError, TypeError, UnicodeError) as problem:
        raise MailNotBuildable(f"the message cannot be built: {problem}") from None


def _to_mime(mail: OutgoingMail, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    # An explicit domain: without one, make_msgid looks the host name up in DNS every time.
    message["Message-ID"] = make_msgid(
        idstring=f"r{mail.recipient_id}", domain=sender.rpartition("@")[2] or "localhost"
    )
    for name, value in mail.tags:
        message[f"X-SES-Tag-{name}"] = value
    for name, value in mail.headers:
        message[name] = value
    message.set_content(mail.text or " ", charset="utf-8")
    message.add_alternative(mail.html, subtype="html", charset="utf-8")
    return message
