"""The sender's content cache: a content that cannot be prepared fails its recipients for good."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.db.schema import open_writer
from pipeline.mail import MailNotBuildable, PreparedTemplate
from pipeline.ses_errors import Verdict, classify
from stages.sender.contents import ContentCache


def test_a_stored_template_that_does_not_parse_is_a_permanent_failure_not_an_outage(tmp_path: Path) -> None:
    conn = open_writer(tmp_path / "c.db")
    conn.execute("INSERT INTO contents (id, subject, html, created_at_ms, template) VALUES (1, 'S', '{{#a}}', 0, 1)")
    conn.execute(
        "INSERT INTO contents (id, subject, html, created_at_ms, template) VALUES (2, 'Hi {{n}}', '<p>{{n}}</p>', 0, 1)"
    )
    cache = ContentCache(conn)
    with pytest.raises(MailNotBuildable) as refused:
        cache.get(1)
    assert classify(refused.value).verdict is Verdict.PERMANENT
    assert isinstance(cache.get(2), PreparedTemplate)
