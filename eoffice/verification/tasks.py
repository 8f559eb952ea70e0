"""Thin Celery tasks of verification: check arrived documents, re-verify stale verdicts.

Each check is split plan -> run -> store (see service.py): the file is analysed with no
database transaction open, so a slow or hostile PDF never holds a lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.exc import OperationalError
from sqlmodel import Session

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


def _plan_run_store(plan: Callable[[Session, list[int]], list[service.CheckPlan]],
                    ids: list[int]) -> list[int]:
    """Plan every check in one transaction, analyse each file with none open, store every
    report in one transaction; returns the stored reports' ids."""
    with task_session() as session:
        plans = plan(session, ids)
    checks = [(found, service.run_check(found)) for found in plans]
    if not checks:
        return []
    with task_session() as session:
        stored = service.store_checks(session, checks)
    return [report_id for report_id in stored if report_id is not None]


def _delivery_checks(session: Session, delivery_ids: list[int]) -> list[service.CheckPlan]:
    return [found for ref in delivery_ids
            if (found := service.plan_delivery_check(session, ref)) is not None]


@celery_app.task(name="verification.verify_delivery", **RETRY)
def verify_delivery(delivery_id: int) -> int | None:
    """Verify an arrived document's file and set the delivery's verdict (idempotent)."""
    stored = _plan_run_store(_delivery_checks, [delivery_id])
    return stored[0] if stored else None


@celery_app.task(name="verification.verify_arrivals", **RETRY)
def verify_arrivals(document_id: int) -> int | None:
    """Verify a document's file once for every delivery that arrived (idempotent)."""
    stored = _plan_run_store(service.plan_arrivals_checks, [document_id])
    return stored[0] if stored else None


@celery_app.task(name="verification.verify_arrivals_many", **RETRY)
def verify_arrivals_many(items: list[list[int]]) -> int:
    """Several documents' arrival checks in one planning and one storing transaction (the
    outbox batches them under load); each file is still analysed on its own."""
    return len(_plan_run_store(service.plan_arrivals_checks,
                               [int(document_id) for (document_id,) in items]))


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
