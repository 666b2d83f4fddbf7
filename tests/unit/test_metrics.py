"""The metrics' own parts: the recorder's tally holds increments until COMMIT, the JSON log
lines, and the Grafana dashboard asks only for metrics the server exports."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from pipeline import metrics, metrics_folder
from pipeline.runtime import JsonLines
from tests.helpers import ROOT


def events_total(kind: str) -> float:
    return REGISTRY.get_sample_value("ses_sender_ses_events_total", {"kind": kind}) or 0.0


def test_the_tally_counts_only_what_was_committed() -> None:
    tally, before = metrics.Tally(), events_total("bounce")
    # A request rolled back to its savepoint, and a batch whose commit failed, count nothing
    tally.mark()
    tally.events["bounce"] += 1
    tally.rollback_to_mark()
    tally.events["bounce"] += 2
    tally.discard()
    tally.commit()
    assert events_total("bounce") == before
    # What survived its savepoint counts once the batch commits
    tally.mark()
    tally.events["bounce"] += 3
    tally.opens += 1
    tally.release_mark()
    tally.commit()
    assert events_total("bounce") == before + 3
    tally.commit()  # a second commit adds nothing
    assert events_total("bounce") == before + 3


def test_a_json_log_line_is_one_object_with_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("stages.sender", logging.ERROR, __file__, 1, "sent %d", (3,), sys.exc_info())
    line = JsonLines().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "sent 3" and parsed["level"] == "ERROR" and parsed["logger"] == "stages.sender"
    assert "ValueError: boom" in parsed["exception"]


def test_the_grafana_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {re.sub(r"_(bucket|count|sum|total)$", "", name) for e in exprs for name in re.findall(r"ses_sender_\w+", e)}
    exported = {collector._name for collector in vars(metrics).values() if hasattr(collector, "_name")}
    exported = {f"ses_sender_{name}" if not name.startswith("ses_sender_") else name for name in exported}
    exported.add("ses_sender_backlog_recipients")  # made at each scrape (stages/ingest/metrics_view.py)
    assert used <= exported, used - exported


def test_the_folder_is_emptied_at_start_and_found_elsewhere_when_it_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(metrics_folder.ENV, raising=False)
    database = tmp_path / "mail.db"
    stale = tmp_path / "mail.db.metrics" / "counter_123.db"
    stale.parent.mkdir()
    stale.write_bytes(b"from the last run")
    assert metrics_folder.prepare(database) == stale.parent and not stale.exists()
    assert os.environ[metrics_folder.ENV] == str(stale.parent)
    # A database whose folder cannot hold the metrics (here, a file where a folder should be)
    monkeypatch.delenv(metrics_folder.ENV)
    (tmp_path / "a-file").write_text("")
    elsewhere = metrics_folder.prepare(tmp_path / "a-file" / "x.db")
    assert elsewhere is not None and elsewhere.is_dir() and elsewhere != tmp_path / "a-file"
    shutil.rmtree(elsewhere)
