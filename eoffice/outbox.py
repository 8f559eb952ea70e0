"""Transactional outbox: tasks are written with the change and published after commit.

A crash between commit and publish loses nothing (the relay publishes what is left) and a
publish that happens twice does no harm (the Celery task id is the outbox id and every task is
idempotent).

With a real broker, committed rows are handed to a per-process publisher that sends what
gathered within `outbox_batch_seconds` together: one UPDATE marks them all, and rows of a
task in BATCH_TASKS gather for `outbox_batch_task_seconds` and go out as one message to its
batch task, which handles them in one transaction. Under load that is what a document costs
the broker and the workers, not one message, one task and one transaction per row
(bench/routing.py).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NamedTuple, Protocol

from sqlalchemy import event
from sqlmodel import Session, col, select

from eoffice.db import defer_insert
from eoffice.models import OutboxMessage, new_uuid, utcnow
from eoffice.observability import current_request_id
from eoffice.settings import get_settings

log = logging.getLogger(__name__)

_PENDING_KEY = "eoffice_outbox_pending"
# Task -> its batch task (which takes a list of the task's argument lists).
BATCH_TASKS = {
    "stats.apply": "stats.apply_many",
    "verification.verify_arrivals": "verification.verify_arrivals_many",
}
BATCH_LIMIT = 200


class Message(Protocol):
    """What publishing reads of an outbox row: a stored OutboxMessage or a Pending one."""

    @property
    def id(self) -> str: ...
    @property
    def task(self) -> str: ...
    @property
    def args(self) -> list[Any]: ...
    @property
    def queue(self) -> str: ...
    @property
    def request_id(self) -> str | None: ...


class Pending(NamedTuple):
    """A message of this transaction, published after its commit without reading it back
    (a plain tuple: an ORM object per message cost more than its row's insert)."""

    id: str
    task: str
    args: list[Any]
    queue: str
    request_id: str | None


def _load_task_registry() -> Any:
    """The Celery app and, through it, every task module.

    Loaded when a message is enqueued, never first inside the after-commit hook: task
    modules register session listeners on import, and adding one to the list SQLAlchemy is
    iterating fails the commit ('deque mutated during iteration').
    """
    import workers.celery_app

    return workers.celery_app


def enqueue(session: Session, task: str, *args: Any, queue: str = "fast") -> None:
    """Record a task to run once the current transaction commits."""
    _load_task_registry()
    message = Pending(new_uuid(), task, list(args), queue, current_request_id())
    # The row is written at commit with the transaction's other messages (defer_insert).
    defer_insert(session, OutboxMessage, {
        "id": message.id, "task": task, "args": message.args, "queue": queue,
        "request_id": message.request_id, "created_at": utcnow(), "published_at": None,
        "attempts": 0})
    session.info.setdefault(_PENDING_KEY, []).append(message)


@event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    committed = session.info.pop(_PENDING_KEY, None)
    if committed:
        # The rows are committed and their content is known: publish without reading them
        # back (the relay covers a crash in between).
        if _load_task_registry().run_eagerly() or not _THREADED_PUBLISHER[0]:
            publish_rows(committed)  # in-process tasks run now, in order (tests)
        else:
            _publisher().add(committed)


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


def publish_rows(rows: Sequence[Message]) -> int:
    """Publish detached outbox rows and record which went out."""
    from sqlalchemy import update

    from eoffice.db import get_engine
    from workers.celery_app import run_eagerly

    done: list[str] = []
    groups: dict[tuple[str, str], list[Message]] = {}
    for row in rows:
        if row.task in BATCH_TASKS and not run_eagerly():
            groups.setdefault((row.task, row.queue), []).append(row)
        elif _publish(row):
            done.append(row.id)
    for (task, queue), members in groups.items():
        for start in range(0, len(members), BATCH_LIMIT):
            chunk = members[start:start + BATCH_LIMIT]
            sent = _publish(chunk[0]) if len(chunk) == 1 else _publish_batch(task, queue, chunk)
            if sent:
                done.extend(row.id for row in chunk)
    published = set(done)
    failed = [row.id for row in rows if row.id not in published]
    # Core statements on the table, on a pooled connection: no ORM for two UPDATEs.
    outbox = OutboxMessage.__table__  # type: ignore[attr-defined]
    with get_engine().begin() as connection:
        if done:
            connection.execute(update(outbox).where(outbox.c.id.in_(done))
                               .values(published_at=utcnow(), attempts=outbox.c.attempts + 1))
        if failed:
            connection.execute(update(outbox).where(outbox.c.id.in_(failed))
                               .values(attempts=outbox.c.attempts + 1))
    return len(done)


def _publish(row: Message) -> bool:
    from workers.celery_app import celery_app, run_eagerly

    if run_eagerly():
        try:
            celery_app.tasks[row.task].apply(args=row.args, task_id=row.id,
                                             headers={"request_id": row.request_id})
            return True
        except Exception:  # the relay tries again later, as with a broker
            log.warning("outbox run failed for %s (%s); relay will retry", row.id, row.task,
                        exc_info=True)
            return False
    return _send(row.task, row.args, row.queue, task_id=row.id,
                 headers={"request_id": row.request_id}, what=f"{row.id} ({row.task})")


def _publish_batch(task: str, queue: str, rows: list[Message]) -> bool:
    """Rows of one task as one message to its batch task (with every row's request id)."""
    return _send(BATCH_TASKS[task], [[row.args for row in rows]], queue,
                 task_id=f"batch-{uuid.uuid4()}",
                 headers={"request_id": rows[0].request_id,
                          "request_ids": [row.request_id for row in rows]},
                 what=f"{len(rows)} {task} rows")


def _send(task: str, args: list[Any], queue: str, *, task_id: str, headers: dict[str, Any],
          what: str) -> bool:
    """One message to the broker; False (and a warning) when the broker is down."""
    from workers.celery_app import celery_app

    try:
        celery_app.send_task(task, args=args, task_id=task_id, queue=queue, headers=headers)
        return True
    except Exception:  # broker down: the relay tries again later
        log.warning("outbox publish failed for %s; relay will retry", what, exc_info=True)
        return False


class _Publisher:
    """Publishes committed rows from a thread of its own, a window's worth at a time.

    Rows of a batchable task wait for their own, longer window (`outbox_batch_task_seconds`)
    so that one batch task covers many documents; other rows go out after
    `outbox_batch_seconds`.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._rows: list[Message] = []
        self._batchable: list[Message] = []
        self._batchable_since: float | None = None
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-publisher",
                                        daemon=True)
        self._thread.start()

    def add(self, rows: Sequence[Message]) -> None:
        with self._lock:
            for row in rows:
                if row.task in BATCH_TASKS:
                    if self._batchable_since is None:
                        self._batchable_since = time.monotonic()
                    self._batchable.append(row)
                else:
                    self._rows.append(row)
        self._wake.set()

    def _take(self, *, everything: bool) -> list[Message]:
        with self._lock:
            rows, self._rows = self._rows, []
            since = self._batchable_since
            if everything or len(self._batchable) >= BATCH_LIMIT or (
                    since is not None and time.monotonic() - since
                    >= get_settings().outbox_batch_task_seconds):
                rows += self._batchable
                self._batchable, self._batchable_since = [], None
        return rows

    def _batch_due_in(self) -> float | None:
        with self._lock:
            since = self._batchable_since
        if since is None:
            return None
        return max(0.0, since + get_settings().outbox_batch_task_seconds - time.monotonic())

    def flush(self, *, everything: bool = True) -> int:
        rows = self._take(everything=everything)
        if not rows:
            return 0
        try:
            return publish_rows(rows)
        except Exception:  # database or broker down: the relay publishes them later
            log.warning("outbox publisher could not publish %d rows; relay will retry",
                        len(rows), exc_info=True)
            return 0

    def _run(self) -> None:
        while True:
            self._wake.wait(self._batch_due_in())
            # Let the rows of concurrent requests gather; clear before taking them, so a row
            # added meanwhile is either taken now or wakes the next round.
            time.sleep(get_settings().outbox_batch_seconds)
            self._wake.clear()
            self.flush(everything=False)


# Celery pool processes publish in the committing thread: they must stay single-threaded so
# the verification sandbox can fork them (see eoffice.verification.sandbox), and a task
# commits once, so there is little there to gather.
_THREADED_PUBLISHER = [True]


def publish_in_committing_thread() -> None:
    """This process publishes each commit's rows itself (called in Celery pool processes)."""
    _THREADED_PUBLISHER[0] = False


_publisher_lock = threading.Lock()
_publisher_instance: list[_Publisher] = []


def _publisher() -> _Publisher:
    """This process's publisher (a forked worker child starts its own)."""
    with _publisher_lock:
        if not _publisher_instance or _publisher_instance[0].pid != os.getpid():
            _publisher_instance[:] = [_Publisher()]
        return _publisher_instance[0]


@atexit.register
def flush_publisher() -> int:
    """Publish what is waiting now (process exit; tests)."""
    if _publisher_instance and _publisher_instance[0].pid == os.getpid():
        return _publisher_instance[0].flush()
    return 0


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
