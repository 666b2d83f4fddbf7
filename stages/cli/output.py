"""What the read commands print: Rich tables for people, JSON for programs.

`--json` prints the server's answer as it came (or the command's own summary), indented,
on stdout and nothing else there; tables and messages are for a person and may change.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Final

from rich.console import Console
from rich.table import Table

ISO_TIME: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?")
# (label, field) of a topic's statistics, in the order a person reads them.
TOPIC_ROWS: Final = (
    ("total", "total"),
    ("pending", "pending"),
    ("sending", "sending"),
    ("paused", "paused"),
    ("sent", "sent"),
    ("failed", "failed"),
    ("cancelled", "cancelled"),
    ("suppressed", "suppressed"),
    ("unknown", "unknown"),
    ("delivered", "delivered"),
    ("bounced", "bounced"),
    ("complained", "complained"),
    ("opened", "opened"),
    ("opened by a person", "opened_human"),
    ("clicked", "clicked"),
    ("unsubscribed", "unsubscribed"),
    ("first sent", "first_sent_at"),
    ("last sent", "last_sent_at"),
    ("held because", "paused_reason"),
)


def print_json(value: Any) -> None:
    """`value` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def shown(value: Any) -> str:
    """A value for a table cell: counts with separators, times to the second, `-` for none."""
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    text = str(value)
    if ISO_TIME.fullmatch(text):  # 2026-11-29T05:01:02.113000Z -> 2026-11-29 05:01:02Z
        return text[:10] + " " + text[11:19] + ("Z" if text.endswith("Z") else "")
    return text


def topic_table(stats: dict[str, Any]) -> Table:
    """One topic's statistics, a row per count; `-` for what has not happened."""
    table = Table(title=f"topic {stats.get('topic_id', '?')}", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, name in TOPIC_ROWS:
        if name in stats and not (name == "paused_reason" and stats[name] is None):
            table.add_row(label, shown(stats[name]))
    return table


def topics_table(topics: list[dict[str, Any]]) -> Table:
    """Topics, most recently posted to first, as the server lists them."""
    table = Table(title_justify="left")
    table.add_column("topic", overflow="fold")
    table.add_column("recipients", justify="right")
    table.add_column("first posted", no_wrap=True)
    table.add_column("last posted", no_wrap=True)
    for topic in topics:
        table.add_row(
            shown(topic.get("topic_id")),
            shown(topic.get("total")),
            shown(topic.get("first_posted_at")),
            shown(topic.get("last_posted_at")),
        )
    return table


def say(console: Console, text: str) -> None:
    """A plain line: no markup, no highlighting, no wrapping inside words."""
    console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)
