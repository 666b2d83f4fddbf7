"""Click tracking's CPU cost: preparing a message once, filling it per recipient, reading a token.

    python -m bench.clicks [--links 10] [--kilobytes 5] [--rounds 20000]

A micro-benchmark (no tree, no I/O): the number that matters is the per-recipient
`fill`, which the sender pays for every recipient of a tracked message.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import machine
from pipeline.clicks import click_token, parse_click, rewrite_links

KEY = b"k" * 32
SERVER = "https://mail.example.com"


def message(links: int, kilobytes: int) -> str:
    """A newsletter-shaped body: paragraphs of text with `links` links spread through it."""
    link = (
        '<p>Read more in <a href="https://shop.example.com/items/{0}?utm_source=news&amp;utm_medium=email">'
        "item {0}</a>.</p>\n"
    )
    body = "".join(link.format(n) for n in range(links))
    filler = "<p>" + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 4 + "</p>\n"
    head = '<!doctype html><html><head><style>p { margin: 0 }</style></head><body>\n<table role="presentation">'
    tail = '</table><p><a href="{{unsubscribe_url}}">unsubscribe</a></p></body></html>'
    while len(head) + len(body) + len(tail) < kilobytes * 1024:
        body += filler
    return head + body + tail


def per_call_us(function: object, rounds: int, repeats: int = 5) -> float:
    """The median over `repeats` of the mean time of one call, in microseconds."""
    assert callable(function)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(rounds):
            function()
        timings.append((time.perf_counter() - started) / rounds * 1e6)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--links", type=int, default=10)
    parser.add_argument("--kilobytes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20_000)
    args = parser.parse_args()
    html = message(args.links, args.kilobytes)
    slots = rewrite_links(html)
    assert len(slots.links) == args.links, slots.links
    token = click_token(KEY, 123_456, 3)
    recipients = iter(range(10**12))
    print(machine())
    print(f"message: {len(html):,} characters, {len(slots.links)} tracked links")
    print(f"rewrite_links (once per message): {per_call_us(lambda: rewrite_links(html), args.rounds // 10):8.1f} µs")
    fill_us = per_call_us(lambda: slots.fill(SERVER, KEY, next(recipients)), args.rounds)
    print(f"fill (once per recipient):        {fill_us:8.1f} µs  ({fill_us / max(1, args.links):.2f} µs per link)")
    print(f"parse_click (once per click):     {per_call_us(lambda: parse_click(KEY, token), args.rounds):8.1f} µs")


if __name__ == "__main__":
    main()
