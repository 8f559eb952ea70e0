"""Thin Celery tasks of webhooks: push one event, and the beat sweep that retries."""

from __future__ import annotations

import logging

from sqlalchemy.exc import OperationalError

from eoffice import metrics, observability
from eoffice.db import task_session
from eoffice.exchange.service import STATUS_LISTENERS
from eoffice.settings import get_settings
from eoffice.webhooks import service
from workers.celery_app import celery_app

log = logging.getLogger(__name__)

RETRY = {"autoretry_for": (OperationalError, ConnectionError), "retry_backoff": True,
         "retry_backoff_max": 300, "retry_jitter": True, "max_retries": 10}

if service.on_status_events not in STATUS_LISTENERS:
    STATUS_LISTENERS.append(service.on_status_events)

# Task outcome counters live in the database so every worker process and node adds up;
# worker logs go through our (JSON) handler with the request id. Installed from here because
# this module is imported by every worker; harmless if workers/celery_app.py does it too.
metrics.install_task_signals()
observability.install_worker_logging()


@celery_app.task(name="webhooks.push", **RETRY)
def push(delivery_id: str) -> str:
    """Make one signed attempt to push a webhook delivery."""
    # Three short steps on purpose: no transaction stays open across the HTTP call.
    with task_session() as session:
        attempt = service.claim_attempt(session, delivery_id)
    if attempt is None:
        return "skipped"
    result = service.post(attempt)
    with task_session() as session:
        status = service.record_attempt(session, delivery_id, result)
    log.info("webhook %s to %s: %s (%s)", delivery_id, attempt.url, status,
             result.status_code or result.error)
    return status


@celery_app.task(name="webhooks.sweep", **RETRY)
def sweep() -> int:
    """Enqueue every push whose backoff has elapsed."""
    with task_session() as session:
        return service.enqueue_due(session)


BEAT_SCHEDULE = {
    "webhooks-sweep": {"task": "webhooks.sweep",
                       "schedule": get_settings().webhook_sweep_seconds},
}
