"""GET /metrics: every stage's metrics in Prometheus's text format, and the backlog by status.

The stages' counters, gauges and histograms come from the tree's metrics folder
(pipeline/metrics.py). The backlog is read from the database at each scrape, from the
per-topic counters the triggers keep (a sum over topics, not a count over recipients),
so it is exact and costs one small query. Authentication as for the API, unless
METRICS_PUBLIC=true (for a scraper on a private network).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from pipeline import metrics
from pipeline.db.readers import Reader
from pipeline.db.status import Status
from stages.ingest.auth import protected
from stages.ingest.keys import CTX, DB

BACKLOG_QUERY = f"SELECT name, SUM(n) FROM topic_counts WHERE name IN ({', '.join('?' * len(Status))}) GROUP BY name"


class Families:
    """A collector of metric families read once, for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


async def backlog(db: Reader) -> bytes:
    """Recipients by status, over every topic."""
    counts = {name: int(n or 0) for name, n in await db.fetchall(BACKLOG_QUERY, tuple(Status))}
    family = GaugeMetricFamily(
        f"{metrics.NAMESPACE}_backlog_recipients", "Recipients by status, over every topic", labels=["status"]
    )
    for status in Status:
        family.add_metric([status.value], counts.get(status.value, 0))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families([family]))
    return generate_latest(registry)


async def metrics_page(request: web.Request) -> web.StreamResponse:
    body = metrics.exposition() + await backlog(request.app[DB])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


guarded_page = protected(metrics_page)


async def metrics_route(request: web.Request) -> web.StreamResponse:
    """The page, behind the API's authentication unless METRICS_PUBLIC=true."""
    public = request.app[CTX].settings.metrics_public
    return await (metrics_page if public else guarded_page)(request)
