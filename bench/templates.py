"""Template cost: µs per parse and per render of a typical ~5 KB HTML with 3 names (issue #17).

`python -m bench.templates`. In-process and single-threaded: the sender's budget at
5,000 recipients/s on 2 cores is ~200 µs of CPU per recipient, of which rendering the
subject, the HTML and the text takes what this prints. It never asserts a time.
"""

from __future__ import annotations

import statistics
import timeit

from pipeline.templates import parse

PARAGRAPH = (
    '<p style="font-family:Helvetica,Arial,sans-serif;font-size:15px;line-height:22px;color:#333">'
    "Our spring release brings faster exports, a cleaner dashboard and a new way to share reports "
    "with your team. Read the notes, try it today and tell us what you think.</p>\n"
)
HTML = (
    '<!doctype html><html><head><meta charset="utf-8"><title>Spring release</title></head><body>\n'
    "<h1>Hello {{first_name}},</h1>\n" + PARAGRAPH * 18 + "<p>You are on the <b>{{plan}}</b> plan.</p>\n"
    '<p><a href="{{unsubscribe_url}}">Unsubscribe</a></p>\n</body></html>\n'
)
SECTIONS = HTML.replace(
    "<p>You are on", "{{#items}}<li>{{name}}: {{price}}</li>\n{{/items}}{{^items}}<p>No items.</p>{{/items}}<p>On"
)
DATA = {
    "first_name": "Ada <Lovelace>",
    "plan": "pro",
    "subject": "Spring release",
    "unsubscribe_url": "https://mail.example.com/v1/unsubscribe/AQAAAAAAAAAq3t1i_kT9uQ8mGm7XoQ",
    "items": [{"name": f"item {n}", "price": 9.5 + n} for n in range(5)],
}


def per_call_us(fn: object, number: int) -> float:
    """The median of 7 runs, in µs per call."""
    runs = timeit.repeat(fn, number=number, repeat=7)  # type: ignore[arg-type]
    return statistics.median(runs) / number * 1e6


def main() -> None:
    for label, source in (("3 names", HTML), ("3 names + a 5-item section", SECTIONS)):
        template = parse(source, html=True)
        rendered = template.render(DATA)
        parse_us = per_call_us(lambda source=source: parse(source, html=True), 2_000)
        render_us = per_call_us(lambda template=template: template.render(DATA), 20_000)
        print(
            f"{label:<28} template {len(source):,} chars -> {len(rendered):,} chars: "
            f"parse {parse_us:.1f} µs, render {render_us:.2f} µs "
            f"({1e6 / render_us:,.0f} renders/s on one core)"
        )
    subject = parse("Hello {{first_name}}, your {{plan}} plan", html=False)
    print(f"{'subject, 2 names':<28} render {per_call_us(lambda: subject.render(DATA), 50_000):.2f} µs")


if __name__ == "__main__":
    main()
