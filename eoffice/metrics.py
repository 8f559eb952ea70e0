"""Prometheus metrics: request rates and latencies here; business gauges read at scrape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter("eoffice_http_requests_total", "HTTP requests",
                        ["method", "route", "status"], registry=REGISTRY)
HTTP_LATENCY = Histogram("eoffice_http_request_duration_seconds", "HTTP request latency",
                         ["method", "route"], registry=REGISTRY)
# Group commit of units of work (deps.UnitBatcher): requests per shared transaction, and
# batches rolled back because one of their requests failed (that one then runs alone).
UNIT_BATCH_SIZE = Histogram("eoffice_unit_batch_size", "Requests committed in one transaction",
                            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=REGISTRY)
UNIT_BATCHES_ROLLED_BACK = Counter("eoffice_unit_batches_rolled_back_total",
                                   "Batches of units rolled back and run again without the "
                                   "request that failed", registry=REGISTRY)


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


# --- platform (issue 5): task outcomes, queue depths, signing/verification, webhooks --------
#
# Workers are separate processes, often on other machines, so their counters cannot live in
# this process's registry. prometheus_client's multiprocess mode only aggregates processes that
# share one directory on one host; with api and workers in different containers the API would
# still see nothing. So each finished task adds itself to a row of `task_stats` (one upsert,
# summed across every worker and node), and the API exports those rows at scrape time.

_task_started: dict[str, float] = {}
_signals_installed = False


# Outcomes not yet added to the shared rows: (task, outcome) -> [count, total s, max s].
_unflushed: dict[tuple[str, str], list[float]] = {}
_last_flush = [float("-inf")]


def record_task_outcome(task: str, outcome: str, seconds: float) -> None:
    """Count one finished task; the shared rows get the sums at most every
    `task_stats_flush_seconds` (an upsert on one hot row per finished task made every task
    wait on every other)."""
    import time

    from eoffice.settings import get_settings

    cell = _unflushed.setdefault((task[:200], outcome[:16]), [0, 0.0, 0.0])
    cell[0] += 1
    cell[1] += seconds
    cell[2] = max(cell[2], seconds)
    now = time.monotonic()
    if now - _last_flush[0] >= get_settings().task_stats_flush_seconds:
        _last_flush[0] = now
        flush_task_outcomes()


def flush_task_outcomes() -> None:
    """Add this process's unflushed outcomes to `task_stats` (never raises: metrics must not
    fail work; what could not be written is kept for the next flush)."""
    import logging

    from sqlalchemy import func as sa_func
    from sqlalchemy import inspect as sa_inspect

    from eoffice.db import new_session
    from eoffice.models import TaskStat, utcnow

    if not _unflushed:
        return
    pending = dict(_unflushed)
    _unflushed.clear()
    try:
        with new_session() as session:
            dialect = session.get_bind().dialect.name
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
            greatest = sa_func.max if dialect == "sqlite" else sa_func.greatest
            # SQLModel does not declare __table__ on the class; the mapper's table is the same.
            columns = sa_inspect(TaskStat).local_table.c
            # Sorted: two processes flushing at once lock the rows in the same order.
            for (task, outcome), (count, total, longest) in sorted(pending.items()):
                stmt = insert(TaskStat).values(task=task, outcome=outcome, count=int(count),
                                               total_seconds=total, max_seconds=longest,
                                               updated_at=utcnow())
                stmt = stmt.on_conflict_do_update(
                    index_elements=["task", "outcome"],
                    set_={"count": columns.count + int(count),
                          "total_seconds": columns.total_seconds + total,
                          "max_seconds": greatest(columns.max_seconds, longest),
                          "updated_at": stmt.excluded.updated_at})
                session.exec(stmt)  # type: ignore[call-overload]
            session.commit()
    except Exception:
        for key, (count, total, longest) in pending.items():
            cell = _unflushed.setdefault(key, [0, 0.0, 0.0])
            cell[0] += count
            cell[1] += total
            cell[2] = max(cell[2], longest)
        logging.getLogger(__name__).warning("could not record task outcomes", exc_info=True)


def install_task_signals() -> None:
    """Connect Celery signals that time each task, log its outcome and count it."""
    global _signals_installed
    if _signals_installed:
        return
    import logging
    import time

    from celery import signals

    log = logging.getLogger("eoffice.tasks")

    @signals.task_prerun.connect(weak=False)
    def _started(task_id: str | None = None, **_: object) -> None:
        if task_id:
            _task_started[task_id] = time.perf_counter()

    @signals.task_postrun.connect(weak=False)
    def _finished(task_id: str | None = None, task: object = None, state: str | None = None,
                  **_: object) -> None:
        started = _task_started.pop(task_id or "", None)
        seconds = time.perf_counter() - started if started is not None else 0.0
        name = str(getattr(task, "name", "unknown"))
        outcome = (state or "unknown").lower()
        # The request id was bound in task_prerun (workers/celery_app.py), so this line
        # carries the id of the API request that caused the task.
        log.info("task %s %s in %.3f s", name, outcome, seconds,
                 extra={"task": name, "task_id": task_id, "outcome": outcome})
        record_task_outcome(name, outcome, seconds)

    @signals.worker_process_shutdown.connect(weak=False)
    def _flush_at_exit(**_: object) -> None:
        flush_task_outcomes()

    _signals_installed = True


def _queue_depths() -> dict[str, int]:
    from workers.celery_app import QUEUES, celery_app

    depths: dict[str, int] = {}
    with celery_app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        channel = conn.default_channel
        for queue in QUEUES:
            try:
                # Passive declare answers the message count on Redis and kombu's SQL transport.
                depths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except Exception:
                depths[queue] = 0
    return depths


class PlatformCollector(Collector):
    """Task outcomes and durations (all workers), queue depths, signatures, verifications."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, SummaryMetricFamily
        from sqlalchemy import func
        from sqlmodel import select

        from eoffice.db import new_session
        from eoffice.models import DocumentRevision, TaskStat, VerificationReport, WebhookDelivery
        from eoffice.settings import get_settings

        if not get_settings().tasks_eager:
            try:
                depths = _queue_depths()
            except Exception:
                depths = {}
            if depths:
                queue = GaugeMetricFamily("eoffice_queue_depth",
                                          "Messages waiting in each broker queue", labels=["queue"])
                for name, depth in depths.items():
                    queue.add_metric([name], depth)
                yield queue
        runs = CounterMetricFamily("eoffice_task_runs", "Finished Celery tasks by outcome",
                                   labels=["task", "outcome"])
        durations = SummaryMetricFamily("eoffice_task_duration_seconds",
                                        "Celery task run time", labels=["task", "outcome"])
        slowest = GaugeMetricFamily("eoffice_task_duration_max_seconds",
                                    "Longest run of each task", labels=["task", "outcome"])
        revisions = GaugeMetricFamily("eoffice_document_revisions",
                                      "File revisions by reason (signing adds one per signature)",
                                      labels=["reason"])
        verifications = GaugeMetricFamily("eoffice_verification_reports",
                                          "Stored verification reports by indication",
                                          labels=["indication"])
        webhooks = GaugeMetricFamily("eoffice_webhook_deliveries", "Webhook pushes by status",
                                     labels=["status"])
        try:
            with new_session() as session:
                for row in session.exec(select(TaskStat)).all():
                    runs.add_metric([row.task, row.outcome], row.count)
                    durations.add_metric([row.task, row.outcome], count_value=row.count,
                                         sum_value=row.total_seconds)
                    slowest.add_metric([row.task, row.outcome], row.max_seconds)
                for reason, count in session.exec(
                        select(DocumentRevision.reason, func.count())
                        .group_by(DocumentRevision.reason)).all():
                    revisions.add_metric([reason], count)
                for indication, count in session.exec(
                        select(VerificationReport.indication, func.count())
                        .group_by(VerificationReport.indication)).all():
                    verifications.add_metric([indication], count)
                for status, count in session.exec(
                        select(WebhookDelivery.status, func.count())
                        .group_by(WebhookDelivery.status)).all():
                    webhooks.add_metric([status], count)
        except Exception:  # a scrape must not fail because the database is down
            return
        yield from (runs, durations, slowest, revisions, verifications, webhooks)


REGISTRY.register(PlatformCollector())
