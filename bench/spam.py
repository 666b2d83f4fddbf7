"""SpamAssassin's score of what we add to a mail: `python -m bench.spam`.

Builds one recipient's mail the way the sender does, three ways (the content alone; with
the pixel; with the pixel, the unsubscribe headers, List-Id and the footer), and scores
each offline with `spamassassin -L -t` (Debian's `spamassassin` package). What we add
should not add points. Prints each score, the rules that fired, and the difference.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from pipeline.mail import Unsubscribe, build, prepare, to_mime
from pipeline.tracking import pixel_tag
from pipeline.unsubscribe import DEFAULT_HTML_FOOTER, MIME_POLICY, recipient_headers, unsubscribe_url

SERVER = "https://mail.example.com"
KEY = bytes(range(32))
HTML = (
    "<html><body><h1>Spring news</h1><p>Hello! Here is what is new this month at Example Co: three new"
    " recipes, a short story, and the dates of our next meetups.</p><p>See you soon,<br>The Example team</p>"
    "</body></html>"
)


LOGO = '<img src="https://example.com/logo.png" alt="Example Co" width="120" height="40">'
CONTENTS = {"text only": HTML, "with a logo": HTML.replace("<h1>", LOGO + "<h1>")}


def message(pixel: bool, unsubscribe: bool, html: str = HTML) -> bytes:
    content = prepare(
        "Spring news from Example Co", html, list_id="newsletter", footer=DEFAULT_HTML_FOOTER if unsubscribe else None
    )
    link = None
    if unsubscribe:
        headers = recipient_headers(SERVER, KEY, 42, "newsletter")
        link = Unsubscribe(unsubscribe_url(SERVER, KEY, 42, "newsletter"), tuple(headers))
    mail = build(content, 42, "reader@example.org", "spring", pixel_tag(SERVER, KEY, 42) if pixel else "", link)
    return to_mime(mail, "Example Co <news@example.com>").as_bytes(policy=MIME_POLICY)


def score(raw: bytes) -> tuple[float, list[str]]:
    report = subprocess.run(["spamassassin", "-L", "-t"], input=raw, capture_output=True, check=False).stdout.decode()
    total = re.search(r"Content analysis details:\s+\(([-\d.]+) points", report)
    rules = re.findall(r"^\s*(-?\d+\.\d+)\s+([A-Z0-9_]+)\s", report, re.MULTILINE)
    return (float(total.group(1)) if total else float("nan")), [f"{name} {points}" for points, name in rules]


def main() -> int:
    if shutil.which("spamassassin") is None:
        print("spamassassin is not installed (apt-get install spamassassin)")
        return 1
    variants = (
        ("as posted", False, False),
        ("+ pixel", True, False),
        ("+ pixel, unsubscribe headers, List-Id, footer", True, True),
    )
    for label, html in CONTENTS.items():
        print(f"-- content {label}")
        base = None
        for name, pixel, unsubscribe in variants:
            points, rules = score(message(pixel, unsubscribe, html))
            base = points if base is None else base
            print(f"{name:48} {points:5.1f} points ({points - base:+.1f})  {', '.join(rules)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
