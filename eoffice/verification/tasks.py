"""Thin Celery tasks of verification: check arrived documents, re-verify stale verdicts.

Each check is split plan -> run -> store (see service.py): the file is analysed with no
database transaction open, so a slow or hostile PDF never holds a lock.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import OperationalError

from eoffice.db import task_session
from eoffice.verification import service
from workers.celery_app import celery_app

log = logging.getLogger(__name__)

RETRY = {"autoretry_for": (OperationalError, ConnectionError), "retry_backoff": True,
         "retry_backoff_max": 300, "retry_jitter": True, "max_retries": 10}

BEAT_SCHEDULE = {
    "verification-reverify": {"task": "verification.reverify", "schedule": 3600.0,
                              "options": {"queue": "crypto"}},
}


@celery_app.task(name="verification.verify_delivery", **RETRY)
def verify_delivery(delivery_id: int) -> int | None:
    """Verify an arrived document's file and set the delivery's verdict (idempotent)."""
    with task_session() as session:
        plan = service.plan_delivery_check(session, delivery_id)
    if plan is None:
        return None
    report = service.run_check(plan)
    with task_session() as session:
        return service.store_check(session, plan, report)


@celery_app.task(name="verification.verify_arrivals", **RETRY)
def verify_arrivals(document_id: int) -> int | None:
    """Verify a document's file once for every delivery that arrived (idempotent)."""
    with task_session() as session:
        plan = service.plan_arrivals_check(session, document_id)
    if plan is None:
        return None
    report = service.run_check(plan)
    with task_session() as session:
        return service.store_check(session, plan, report)


@celery_app.task(name="verification.verify_arrivals_many", **RETRY)
def verify_arrivals_many(items: list[list[int]]) -> int:
    """Several documents' arrival checks: one planning and one storing transaction for all
    (the outbox batches them under load); each file is still analysed on its own."""
    with task_session() as session:
        plans = [plan for (document_id,) in items
                 if (plan := service.plan_arrivals_check(session, int(document_id)))]
    reports = [service.run_check(plan) for plan in plans]
    with task_session() as session:
        for plan, report in zip(plans, reports, strict=True):
            service.store_check(session, plan, report)
    return len(plans)


@celery_app.task(name="verification.reverify", **RETRY)
def reverify(limit: int | None = None) -> int:
    """Re-verify documents whose verdict used another trust state or is too old."""
    with task_session() as session:
        plans = service.plan_reverification(session, limit)
    for plan in plans:
        report = service.run_check(plan)
        with task_session() as session:
            service.store_check(session, plan, report)
    if plans:
        log.info("re-verified %d documents", len(plans))
    return len(plans)
