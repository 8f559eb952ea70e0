"""Thin Celery tasks of the exchange: take ids, load rows, call one service function."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from eoffice.db import task_session
from eoffice.exchange import service
from workers.celery_app import celery_app

RETRY = {"autoretry_for": (OperationalError, ConnectionError), "retry_backoff": True,
         "retry_backoff_max": 300, "retry_jitter": True, "max_retries": 10}


@celery_app.task(name="exchange.deliver", **RETRY)
def deliver(document_id: int) -> int:
    """Fan a sent document out to its receivers' inboxes."""
    with task_session() as session:
        return service.deliver(session, document_id)


@celery_app.task(name="exchange.notify_status", **RETRY)
def notify_status(event_ids: int | list[int]) -> int:
    """Tell the other side of deliveries about business-status changes."""
    with task_session() as session:
        return service.notify_status(session, event_ids)
