"""Files the CLI tests share."""

from __future__ import annotations

import csv
from pathlib import Path


def big_file(path: Path, rows: int) -> Path:
    """A mailing list of `rows` people with five data columns, about 200 bytes a row."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first_name", "last_name", "city", "plan", "note"])
        for i in range(rows):
            writer.writerow(
                [
                    f"person.{i}@domain{i % 50}.example.com",
                    f"First{i}",
                    f"Last{i}",
                    "Springfield",
                    "pro",
                    "a note that makes each row a realistic size for a mailing list " * 2,
                ]
            )
    return path
