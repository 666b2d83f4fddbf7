"""Message contents for the sender, read once per message from SQLite (read-only)."""

from __future__ import annotations

from collections import OrderedDict

from pipeline.db.dialect import Conn
from pipeline.mail import MailNotBuildable, PreparedContent, PreparedTemplate, prepare, prepare_template

CACHE_SIZE = 128


class ContentCache:
    """A small LRU of prepared contents; a campaign of 10,000 reads its content once."""

    def __init__(self, conn: Conn, footer: str | None = None, size: int = CACHE_SIZE) -> None:
        self._conn = conn
        self._footer = footer  # UNSUBSCRIBE_FOOTER, for contents that place no link themselves
        self._size = size
        self._cache: OrderedDict[int, PreparedContent | PreparedTemplate] = OrderedDict()

    def get(self, content_id: int) -> PreparedContent | PreparedTemplate:
        """The prepared content; LookupError when the row does not exist."""
        cached = self._cache.get(content_id)
        if cached is not None:
            self._cache.move_to_end(content_id)
            return cached
        row = self._conn.execute(
            "SELECT subject, html, list_id, transactional, template, text, track_clicks FROM contents WHERE id = ?",
            (content_id,),
        ).fetchone()
        if row is None:
            raise LookupError(f"content {content_id} does not exist")
        subject, html, list_id, transactional, template, text, track_clicks = row
        lists = {
            "list_id": list_id,
            "transactional": bool(transactional),
            "footer": self._footer,
            "track_clicks": bool(track_clicks),
        }
        try:
            prepared = prepare_template(subject, html, text, **lists) if template else prepare(subject, html, **lists)
        except ValueError as problem:  # a stored template that no longer parses fails its recipients, no outage
            raise MailNotBuildable(f"the message cannot be prepared: {problem}") from None
        self._cache[content_id] = prepared
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return prepared
