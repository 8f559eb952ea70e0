"""Periodic tasks that keep the system's guarantees (run by Celery beat)."""

from __future__ import annotations

from eoffice import outbox
from workers.celery_app import celery_app


@celery_app.task(name="housekeeping.relay_outbox")
def relay_outbox() -> int:
    """Publish outbox rows the broker missed."""
    return outbox.relay()
