"""Thin Celery tasks of the audit trail: periodic RFC 3161 anchoring of the chain head."""

from __future__ import annotations

import logging

from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from sqlalchemy.exc import OperationalError

from eoffice.audit import service
from eoffice.db import task_session
from eoffice.settings import get_settings
from workers.celery_app import celery_app

log = logging.getLogger(__name__)

BEAT_SCHEDULE = {
    "audit-anchor": {"task": "audit.anchor",
                     "schedule": get_settings().audit_anchor_minutes * 60.0},
    # Commits seal the chain at most every audit_seal_interval_seconds per process; this seals
    # what a burst's last commits left, and what a process that died in between left.
    "audit-seal": {"task": "audit.seal", "schedule": get_settings().audit_seal_beat_seconds},
}


@celery_app.task(name="audit.seal")
def seal() -> int:
    """Chain committed entries that are not sealed yet."""
    with task_session() as session:
        return service.seal(session)


@celery_app.task(name="audit.anchor", autoretry_for=(TimestampRequestError, OSError,
                                                     OperationalError),
                 retry_backoff=True, retry_backoff_max=600, max_retries=5)
def anchor() -> int | None:
    """Timestamp the newest audit entry; a TSA outage retries, then the task fails visibly."""
    with task_session() as session:
        head = service.chain_head(session)
        last = service.latest_anchor(session)
    if head is None or (last is not None and last.last_event_id == head[0]):
        return None  # nothing new to anchor
    url = service.anchor_tsa_url()
    # No database transaction is open while the TSA answers.
    token = service.request_timestamp(head[1], url)
    with task_session() as session:
        stored = service.store_anchor(session, head[0], head[1], token, url)
        log.info("audit chain anchored at entry %s", head[0])
        return stored.id
