"""Thin Celery tasks of the statistics: incremental updates and the periodic reconciliation."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab
from sqlalchemy.exc import OperationalError

from eoffice.db import task_session
from eoffice.exchange.service import STATUS_LISTENERS
from eoffice.settings import get_settings
from eoffice.stats import service
from workers.celery_app import celery_app

RETRY = {"autoretry_for": (OperationalError, ConnectionError), "retry_backoff": True,
         "retry_backoff_max": 300, "retry_jitter": True, "max_retries": 10}

# Every business-status package of a delivery also updates that delivery's statistics.
if service.on_status_events not in STATUS_LISTENERS:
    STATUS_LISTENERS.append(service.on_status_events)


@celery_app.task(name="stats.apply", **RETRY)
def apply(kind: str, ref_id: int) -> int:
    """Recompute the aggregate items of one document or delivery (idempotent)."""
    with task_session() as session:
        return service.apply_event(session, kind, ref_id)


@celery_app.task(name="stats.apply_many", **RETRY)
def apply_many(items: list[list[Any]]) -> int:
    """Several stats events in one transaction (the outbox batches them under load)."""
    with task_session() as session:
        return service.apply_events(session, [(str(kind), int(ref)) for kind, ref in items])


@celery_app.task(name="stats.reconcile", **RETRY)
def reconcile() -> dict[str, int]:
    """Compare the aggregates with a full recomputation, log and fix any drift."""
    with task_session() as session:
        run = service.reconcile(session, fix=True)
        return {"cells_checked": run.cells_checked, "cells_fixed": run.cells_fixed,
                "items_fixed": run.items_fixed}


BEAT_SCHEDULE = {
    "stats-reconcile": {"task": "stats.reconcile",
                        "schedule": get_settings().stats_reconcile_seconds},
    "stats-reconcile-nightly": {"task": "stats.reconcile",
                                "schedule": crontab(hour=18, minute=30)},  # 01:30 Vietnam
}
