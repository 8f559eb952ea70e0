"""Periodic tasks that keep the system's guarantees (run by Celery beat)."""

from __future__ import annotations

from eoffice import outbox
from workers.celery_app import celery_app


@celery_app.task(name="housekeeping.relay_outbox")
def relay_outbox() -> int:
    """Publish outbox rows the broker missed."""
    return outbox.relay()


@celery_app.task(name="housekeeping.requeue_stuck_deliveries")
def requeue_stuck_deliveries() -> int:
    """Re-run the fan-out of deliveries left queued (a worker node died mid-task)."""
    from eoffice.db import task_session
    from eoffice.exchange.service import requeue_stuck
    from eoffice.settings import get_settings

    with task_session() as session:
        return len(requeue_stuck(session, get_settings().requeue_queued_after_seconds))
