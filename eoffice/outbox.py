"""Transactional outbox: tasks are written with the change and published after commit.

A crash between commit and publish loses nothing (the relay publishes what is left) and a
publish that happens twice does no harm (the Celery task id is the outbox id and every task is
idempotent).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import event
from sqlmodel import Session, col, select

from eoffice.models import OutboxMessage, utcnow
from eoffice.observability import current_request_id

log = logging.getLogger(__name__)

_PENDING_KEY = "eoffice_outbox_pending"


def enqueue(session: Session, task: str, *args: Any, queue: str = "fast") -> OutboxMessage:
    """Record a task to run once the current transaction commits."""
    message = OutboxMessage(task=task, args=list(args), queue=queue,
                            request_id=current_request_id())
    session.add(message)
    session.info.setdefault(_PENDING_KEY, []).append(
        OutboxMessage(id=message.id, task=task, args=list(args), queue=queue,
                      request_id=message.request_id))
    return message


@event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    committed = session.info.pop(_PENDING_KEY, None)
    if committed:
        # The rows are committed and their content is known: publish straight away and mark
        # them in one statement (the relay covers a crash in between).
        publish_rows(committed)


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def publish_ids(ids: list[str]) -> int:
    """Publish these outbox rows (if still unpublished); returns how many went out.

    No transaction is held while publishing: an eager task (tests) or a slow broker must
    not block writers. A row published twice by two relays is harmless (idempotent tasks).
    """

    from eoffice.db import new_session

    with new_session() as session:
        rows = list(session.exec(select(OutboxMessage).where(col(OutboxMessage.id).in_(ids))
                                 .where(col(OutboxMessage.published_at).is_(None))).all())
        session.commit()
    return publish_rows(rows)


def publish_rows(rows: list[OutboxMessage]) -> int:
    """Publish detached outbox rows and record which went out."""
    from sqlalchemy import update

    from eoffice.db import get_engine

    done = [row.id for row in rows if _publish(row)]
    failed = [row.id for row in rows if row.id not in done]
    # A Core statement on a pooled connection: no ORM session for two UPDATEs that every
    # request and task makes.
    with get_engine().begin() as connection:
        if done:
            connection.execute(update(OutboxMessage).where(col(OutboxMessage.id).in_(done))
                               .values(published_at=utcnow(),
                                       attempts=OutboxMessage.attempts + 1))
        if failed:
            connection.execute(update(OutboxMessage).where(col(OutboxMessage.id).in_(failed))
                               .values(attempts=OutboxMessage.attempts + 1))
    return len(done)


def _publish(row: OutboxMessage) -> bool:
    from workers.celery_app import celery_app, run_eagerly

    try:
        if run_eagerly():
            celery_app.tasks[row.task].apply(args=row.args, task_id=row.id,
                                             headers={"request_id": row.request_id})
        else:
            celery_app.send_task(row.task, args=row.args, task_id=row.id, queue=row.queue,
                                 headers={"request_id": row.request_id})
        return True
    except Exception:  # broker down: the relay tries again later
        log.warning("outbox publish failed for %s (%s); relay will retry", row.id, row.task,
                    exc_info=True)
        return False


def relay(older_than_seconds: float = 5.0, limit: int = 500) -> int:
    """Publish rows that were committed but never published (broker was down, process died)."""
    from eoffice.db import new_session

    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    with new_session() as session:
        ids = list(session.exec(
            select(OutboxMessage.id).where(col(OutboxMessage.published_at).is_(None))
            .where(OutboxMessage.created_at <= cutoff).order_by(col(OutboxMessage.created_at))
            .limit(limit)).all())
    return publish_ids(ids) if ids else 0


def pending_count(session: Session) -> int:
    """How many outbox rows wait for the broker."""
    from sqlalchemy import func

    return int(session.exec(select(func.count()).select_from(OutboxMessage)
                            .where(col(OutboxMessage.published_at).is_(None))).one())
