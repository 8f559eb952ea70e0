"""Thin Celery tasks of the signing jobs: take a job id, run one service function.

Each service function opens its own short transactions through ``task_session`` (see the
``eoffice.signing.service`` docstring for why). A TSA/OCSP outage is retried with exponential
backoff up to ``EOFFICE_SIGN_MAX_RETRIES`` times, then the job fails with the reason; a level
is never silently downgraded. Any other error fails the job and is re-raised for the logs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import OperationalError

from eoffice.db import task_session
from eoffice.settings import get_settings
from eoffice.signing import service
from workers.celery_app import celery_app

COMMON: dict[str, Any] = {"bind": True, "autoretry_for": (OperationalError,),
                          "retry_backoff": True, "retry_backoff_max": 300, "retry_jitter": True,
                          "max_retries": 10, "acks_late": True}

BEAT_SCHEDULE = {
    "signing-expire-stale": {"task": "signing.expire_stale", "schedule": 300.0},
}


def _run(task: Any, work: Callable[[str, service.SessionFactory], str], job_id: str) -> str:
    settings = get_settings()
    try:
        return work(job_id, task_session)
    except service.TransientJobError as exc:
        retries = int(task.request.retries or 0)
        if retries >= settings.sign_max_retries:
            service.fail_job(job_id, exc.error, task_session)
            return "failed"
        countdown = min(settings.sign_retry_backoff_seconds * 2 ** retries,
                        settings.sign_retry_backoff_max_seconds)
        service.note_retry(job_id, exc.error, retries + 1, countdown, task_session)
        raise task.retry(exc=exc, countdown=countdown,
                         max_retries=settings.sign_max_retries) from None
    except OperationalError:
        raise  # database unreachable: Celery's autoretry handles it
    except Exception as exc:
        service.fail_job(job_id, exc, task_session)
        raise


@celery_app.task(name="signing.prepare", **COMMON)
def prepare(self: Any, job_id: str) -> str:
    """Reserve the signature field and compute the attributes to sign."""
    return _run(self, service.run_prepare, job_id)


@celery_app.task(name="signing.complete", **COMMON)
def complete(self: Any, job_id: str) -> str:
    """Embed the signature and save the new revision."""
    return _run(self, service.run_complete, job_id)


@celery_app.task(name="signing.seal", **COMMON)
def seal(self: Any, job_id: str) -> str:
    """Apply the organisation seal and stamp the attachments."""
    return _run(self, service.run_seal, job_id)


@celery_app.task(name="signing.expire_stale")
def expire_stale() -> int:
    """Fail signing jobs whose signature will never come."""
    return service.expire_stale(task_session)
