"""The outbox publisher gathers committed rows: one UPDATE, and rows of a batchable task as
one message to its batch task, which does what the single tasks would have done."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import select

from tests.conftest import Clients, Env
from tests.helpers import make_pdf, metadata, point_producer_at, restore_producer

CLERK = "clerk.minhlang"


def _drain(queue: str) -> list[Any]:
    """Every message waiting in a queue of the in-process app's broker."""
    from workers.celery_app import celery_app

    messages = []
    with celery_app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue)
        while True:
            try:
                message = simple.get(block=True, timeout=0.5)
            except simple.Empty:
                break
            messages.append(message)
            message.ack()
        simple.close()
    return messages


def test_rows_committed_together_go_out_as_one_batch(env: Env, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from eoffice import outbox
    from eoffice.db import new_session
    from eoffice.models import OutboxMessage
    from eoffice.observability import set_request_id
    from eoffice.settings import get_settings

    monkeypatch.setenv("EOFFICE_TASKS_EAGER", "false")
    monkeypatch.setenv("EOFFICE_OUTBOX_BATCH_SECONDS", "5")  # flushed by hand below
    get_settings.cache_clear()
    point_producer_at(f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    try:
        for document_id, request_id in ((11, "req-a"), (12, "req-b"), (13, "req-b")):
            set_request_id(request_id)
            with new_session() as session:
                outbox.enqueue(session, "stats.apply", "document", document_id, queue="stats")
                if document_id == 11:
                    outbox.enqueue(session, "exchange.deliver", document_id)
                session.commit()
        set_request_id(None)
        with new_session() as session:
            assert all(row.published_at is None
                       for row in session.exec(select(OutboxMessage)).all())
        assert outbox.flush_publisher() == 4
        stats, fast = _drain("stats"), _drain("fast")
    finally:
        restore_producer()
    assert len(stats) == 1 and len(fast) == 1
    batch = stats[0]
    assert batch.headers["task"] == "stats.apply_many"
    assert json.loads(batch.body)[0] == [[["document", 11], ["document", 12],
                                          ["document", 13]]]
    assert batch.headers["request_ids"] == ["req-a", "req-b", "req-b"]
    assert fast[0].headers["task"] == "exchange.deliver"
    with new_session() as session:
        rows = session.exec(select(OutboxMessage)).all()
    assert len(rows) == 4 and all(row.published_at is not None for row in rows)


def _send(as_user: Clients, env: Env, text: str) -> int:
    response = as_user.client.post(
        "/api/v1/documents", headers=as_user.headers(CLERK),
        data={"metadata": json.dumps(metadata()),
              "recipients": json.dumps([env.user("clerk.vuthu")["agency_code"]])},
        files={"file": ("a.pdf", make_pdf(text), "application/pdf")})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_batch_tasks_do_what_the_single_tasks_do(env: Env, as_user: Clients) -> None:
    from eoffice.db import new_session
    from eoffice.models import Delivery
    from eoffice.stats import service as stats
    from eoffice.stats.tasks import apply_many
    from eoffice.verification.tasks import verify_arrivals_many

    ids = [_send(as_user, env, f"Lô {n}") for n in range(3)]
    with new_session() as session:
        # Forget what the eager single tasks did, then let the batch tasks redo it.
        for table in ("stats_items", "stats_cells", "stats_months"):
            session.execute(text(f"DELETE FROM {table}"))
        session.commit()
    _forget_arrival_checks()
    # Every item is left to the batch; a repeated item changes nothing.
    assert apply_many.run([["document", i] for i in ids] + [["document", ids[0]]]) > 0
    assert apply_many.run([["document", i] for i in ids]) == 0
    assert verify_arrivals_many.run([[i] for i in ids]) == 3
    assert verify_arrivals_many.run([[i] for i in ids]) == 0  # already checked
    with new_session() as session:
        verdicts = [d.verification_indication for d in session.exec(
            select(Delivery).where(Delivery.document_id.in_(ids))).all()]  # type: ignore[attr-defined]
        run = stats.reconcile(session, fix=False)
    assert verdicts == ["NO_SIGNATURE_FOUND"] * 3
    assert run.cells_fixed == 0 and run.items_fixed == 0


def _forget_arrival_checks() -> None:
    from eoffice.db import new_session
    from eoffice.models import Delivery

    with new_session() as session:
        for delivery in session.exec(select(Delivery)).all():
            delivery.verification_indication = None
            delivery.verification_report_id = None
            session.add(delivery)
        session.commit()
        session.execute(text("DELETE FROM verification_reports"))
        session.commit()


def test_a_batch_of_arrival_checks_costs_the_queries_of_one(env: Env, as_user: Clients) -> None:
    from sqlalchemy import event

    from eoffice.db import get_engine
    from eoffice.verification.tasks import verify_arrivals_many

    ids = [_send(as_user, env, f"Đếm {n}") for n in range(5)]
    _forget_arrival_checks()
    statements: list[str] = []
    many: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, _parameters: Any, _context: Any,
              executemany: bool) -> None:
        # Sealing the audit chain after a commit is time-driven, not part of the check.
        if "audit_events" not in statement or statement.startswith("INSERT"):
            statements.append(statement)
        if executemany:  # one statement per row on the server
            many.append(statement)

    def shape(run: list[str]) -> list[str]:
        # SQLAlchemy inserts ORM rows one by one on SQLite (it cannot match RETURNING rows
        # to objects there); on PostgreSQL the reports go in one statement.
        kept = [s.split(" (")[0] for s in run if not s.startswith("BEGIN")]
        return kept if env.backend == "postgres" else [s for s in kept
                                                       if not s.startswith("INSERT")]

    event.listen(get_engine(), "before_cursor_execute", count)
    try:
        assert verify_arrivals_many.run([[ids[0]]]) == 1
        alone, statements[:] = shape(statements), []
        assert verify_arrivals_many.run([[i] for i in ids[1:]]) == 4
        together = shape(statements)
    finally:
        event.remove(get_engine(), "before_cursor_execute", count)
    assert together == alone, "\n".join(s[:90] for s in together)
    if env.backend == "postgres":
        # The deliveries' verdicts too: one UPDATE for the batch, not one per delivery.
        assert not many, many


def test_an_api_process_asks_a_worker_to_seal(env: Env, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from eoffice.audit import service as audit
    from eoffice.audit.tasks import seal
    from eoffice.db import new_session
    from eoffice.settings import get_settings

    monkeypatch.setenv("EOFFICE_TASKS_EAGER", "false")
    get_settings.cache_clear()
    monkeypatch.setattr(audit, "_last_seal", [float("-inf")])
    point_producer_at(f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    try:
        with new_session() as session:
            waiting = audit.unsealed_count(session)
            audit.record(session, actor="test", action="test.entry", object_type="test",
                         object_id=1)
            session.commit()
        fast = _drain("fast")
    finally:
        restore_producer()
    # The request's process only asked; the hashing is the worker's.
    assert [m.headers["task"] for m in fast] == ["audit.seal"]
    with new_session() as session:
        assert audit.unsealed_count(session) == waiting + 1
    monkeypatch.setenv("EOFFICE_TASKS_EAGER", "true")
    get_settings.cache_clear()
    assert seal.apply().get() == waiting + 1


def test_a_fresh_process_commits_its_first_message(sqlite_env: Env) -> None:
    """A process that enqueues before anything loaded the task modules (a CLI command, a
    script) commits normally: loading them inside the after-commit hook used to register
    listeners mid-dispatch and fail the commit ('deque mutated during iteration')."""
    import os
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from eoffice.db import new_session\n"
        "from eoffice.outbox import enqueue\n"
        "assert 'workers.celery_app' not in sys.modules\n"
        "with new_session() as session:\n"
        "    enqueue(session, 'exchange.deliver', 1)\n"
        "    session.commit()\n"
        "print('committed')\n")
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "EOFFICE_TASKS_EAGER": "false",
             # Nothing listens there: the message stays in the outbox for the relay.
             "EOFFICE_BROKER_URL": "redis://127.0.0.1:9/0"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "committed" in done.stdout
