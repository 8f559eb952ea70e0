"""Prometheus metrics: request rates and latencies here; business gauges read at scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter("eoffice_http_requests_total", "HTTP requests",
                        ["method", "route", "status"], registry=REGISTRY)
HTTP_LATENCY = Histogram("eoffice_http_request_duration_seconds", "HTTP request latency",
                         ["method", "route"], registry=REGISTRY)


class DatabaseCollector(Collector):
    """Deliveries by status, outbox backlog and job outcomes, counted in the database."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from sqlalchemy import func
        from sqlmodel import select

        from eoffice.db import new_session
        from eoffice.models import Delivery, Job, OutboxMessage

        deliveries = GaugeMetricFamily("eoffice_deliveries", "Deliveries by business status",
                                       labels=["status_code", "transport_status"])
        outbox = GaugeMetricFamily("eoffice_outbox_pending", "Outbox rows not yet published")
        jobs = GaugeMetricFamily("eoffice_jobs", "Jobs by kind and status",
                                 labels=["kind", "status"])
        try:
            with new_session() as session:
                for code, transport, count in session.exec(
                        select(Delivery.status_code, Delivery.transport_status, func.count())
                        .group_by(Delivery.status_code, Delivery.transport_status)).all():
                    deliveries.add_metric([code or "", transport], count)
                outbox.add_metric([], session.exec(
                    select(func.count()).select_from(OutboxMessage)
                    .where(OutboxMessage.published_at.is_(None))).one())  # type: ignore[union-attr]
                for kind, status, count in session.exec(
                        select(Job.kind, Job.status, func.count())
                        .group_by(Job.kind, Job.status)).all():
                    jobs.add_metric([kind, status], count)
        except Exception:  # a scrape must not fail because the database is down
            return
        yield deliveries
        yield outbox
        yield jobs


REGISTRY.register(DatabaseCollector())
