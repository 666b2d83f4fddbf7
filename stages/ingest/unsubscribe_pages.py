"""The HTML a person sees at an unsubscribe link: confirm, done, not valid, try later.

A GET on the link is a person or a link scanner, so it only shows the confirmation,
whose button POSTs `List-Unsubscribe=One-Click` to the same URL: the very request a
mail client's one-click sends (RFC 8058), so one handler serves both. The pages are
self-contained: no JavaScript, nothing from another host, CSS in the page. The view
sends them with `CONTENT_SECURITY_POLICY`. Pure functions returning strings.
"""

from __future__ import annotations

from html import escape
from typing import Final

from pipeline.unsubscribe import ONE_CLICK

# What the page needs and nothing more: its own inline CSS, and forms posting back here.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
CONTENT_TYPE: Final = "text/html; charset=utf-8"
FIELD_NAME, FIELD_VALUE = ONE_CLICK.split("=")
UNNAMED_ORG: Final = "the sender"

_STYLE: Final = """\
body{margin:0;padding:24px 16px;background:#f4f4f5;color:#18181b;\
font:16px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:32rem;margin:0 auto;background:#fff;border-radius:8px;padding:24px}
h1{font-size:1.375rem;line-height:1.3;margin:0 0 12px}
p{margin:0 0 12px}
.org{color:#52525b;font-size:.875rem;margin-bottom:16px}
button{font:inherit;font-weight:600;color:#fff;background:#18181b;border:0;border-radius:6px;\
padding:12px 20px;width:100%;cursor:pointer}
button:focus-visible{outline:3px solid #2563eb;outline-offset:2px}
.note{color:#52525b;font-size:.875rem;margin:16px 0 0}"""


def _org(org_name: str) -> str:
    return escape(org_name.strip() or UNNAMED_ORG)


def _scope(org: str, list_id: str | None) -> str:
    """What the address stops receiving, already escaped: one list, or all mail."""
    if list_id is None:
        return f"any more email from {org}"
    return f"the &ldquo;{escape(list_id)}&rdquo; emails from {org}"


def _page(title: str, org_name: str, body: str) -> str:
    org = _org(org_name)
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{escape(title)} &middot; {org}</title>\n"
        f"<style>\n{_STYLE}\n</style>\n</head>\n<body>\n<main>\n"
        f'<p class="org">{org}</p>\n{body}\n</main>\n</body>\n</html>\n'
    )


def confirm_page(org_name: str, list_id: str | None = None) -> str:
    """The GET page: it changes nothing, and its button POSTs the one-click body to this URL."""
    scope = _scope(_org(org_name), list_id)
    # No action attribute: the form posts to the page's own URL, whatever prefix a proxy adds.
    body = (
        "<h1>Unsubscribe?</h1>\n"
        f"<p>Press the button and you will not receive {scope}.</p>\n"
        '<form method="post">\n'
        f'<input type="hidden" name="{FIELD_NAME}" value="{FIELD_VALUE}">\n'
        '<button type="submit">Unsubscribe</button>\n'
        "</form>\n"
        '<p class="note">If you did not mean to unsubscribe, close this page; nothing has changed.</p>'
    )
    return _page("Unsubscribe", org_name, body)


def done_page(org_name: str, list_id: str | None = None) -> str:
    """The answer to the POST (200, never a redirect)."""
    scope = _scope(_org(org_name), list_id)
    body = (
        "<h1>You are unsubscribed</h1>\n"
        f"<p>You will not receive {scope}.</p>\n"
        '<p class="note">A message that was already on its way may still arrive.</p>'
    )
    return _page("Unsubscribed", org_name, body)


def not_found_page(org_name: str) -> str:
    """The 404 page for a forged, damaged or unknown link."""
    org = _org(org_name)
    body = (
        "<h1>This link is not valid</h1>\n"
        "<p>The unsubscribe link may have been cut short when it was copied.</p>\n"
        f"<p>Use the unsubscribe link in the latest email from {org}.</p>"
    )
    return _page("Link not valid", org_name, body)


def unavailable_page(org_name: str) -> str:
    """The 503 page when the unsubscribe could not be recorded just now."""
    body = (
        "<h1>Please try again</h1>\n"
        "<p>We could not record your request just now. Nothing has changed yet.</p>\n"
        "<p>Please open the link again in a few minutes.</p>"
    )
    return _page("Try again", org_name, body)
