from pipeline.db.dialect import numbered


def test_placeholders_are_numbered_in_order() -> None:
    assert numbered("UPDATE r SET a = ? WHERE id = ? AND b IN (?, ?)") == (
        "UPDATE r SET a = $1 WHERE id = $2 AND b IN ($3, $4)"
    )


def test_a_question_mark_inside_quotes_is_text() -> None:
    assert numbered("SELECT '?', \"a?b\" FROM t WHERE x = ? AND y = 'it''s ?'") == (
        "SELECT '?', \"a?b\" FROM t WHERE x = $1 AND y = 'it''s ?'"
    )


def test_a_query_without_placeholders_is_unchanged() -> None:
    assert numbered("SELECT 1") == "SELECT 1"
