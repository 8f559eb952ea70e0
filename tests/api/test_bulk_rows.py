"""The row helpers of eoffice.rows, and the rows deferred to commit, write exactly what
the ORM would, on both databases.

On PostgreSQL they send the rows as one JSON parameter expanded by json_populate_recordset;
a timestamp shifted by a time zone, a JSON value turned into a string or rows out of order
would corrupt documents, deliveries or the audit chain without any statement failing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import inspect
from sqlmodel import select

from tests.conftest import Env


def _agency_id() -> int:
    from eoffice.db import new_session
    from eoffice.models import Agency

    with new_session() as session:
        agency = session.exec(select(Agency).order_by(Agency.id)).first()
        assert agency is not None and agency.id is not None
        return agency.id


def test_insert_rows_round_trips_every_kind_of_value(env: Env) -> None:
    from eoffice.db import new_session
    from eoffice.models import Document
    from eoffice.rows import insert_rows

    sender = _agency_id()
    # An aware time in another zone: stored as naive UTC like the ORM stores it.
    at = datetime(2026, 3, 1, 23, 30, 15, 123456, tzinfo=timezone(timedelta(hours=7)))
    values = [{"sender_id": sender, "type_name": "Công văn", "subject": f"Tiếng Việt {i}",
               "due_date": date(2026, 12, 31), "to_places": ["Như trên", "Lưu: VT"],
               "also_on_paper": True, "page_amount": i, "issued_at": at}
              for i in range(3)]
    with new_session() as session:
        written = insert_rows(session, Document, values)
        # Attached as clean persistent objects: nothing left for a flush to write.
        assert all(inspect(d).persistent for d in written)
        assert not session.dirty and not session.new
        session.commit()
        ids = [d.id for d in written]
    assert ids == sorted(ids) and [d.page_amount for d in written] == [0, 1, 2]
    # What the call returned is what a fresh read finds, column by column (the objects
    # are made from the values written, not read back).
    columns = [column.name for column in Document.__table__.c]
    with new_session() as session:
        for document, expected in zip(written, values, strict=True):
            fresh = session.get(Document, document.id)
            assert fresh is not None
            assert ({c: getattr(document, c) for c in columns}
                    == {c: getattr(fresh, c) for c in columns})
            assert document.issued_at is not None and document.issued_at.tzinfo == UTC
            assert fresh.subject == expected["subject"] == document.subject
            assert fresh.due_date == date(2026, 12, 31)
            assert fresh.to_places == ["Như trên", "Lưu: VT"]
            assert fresh.also_on_paper is True
            assert fresh.issued_at == at.astimezone(UTC) == document.issued_at
            # Model defaults filled in as the ORM's constructor would.
            assert fresh.status == "draft" and fresh.channel == "electronic"
            assert fresh.created_at is not None


def _assert_as_read_fresh(written: list[tuple[Any, list[Any]]]) -> None:
    """Each object, column by column, equals what a new session reads for its row."""
    from eoffice.db import new_session

    with new_session() as session:
        for model, items in written:
            columns = [column.name for column in model.__table__.c]
            for item in items:
                fresh = session.get(model, item.id)
                assert ({c: getattr(item, c) for c in columns}
                        == {c: getattr(fresh, c) for c in columns}), model.__name__


def test_insert_rows_objects_equal_a_fresh_read_for_a_sends_rows(env: Env) -> None:
    """The deliveries and events a send writes (defaults, JSON, dates, times) are made from
    the values written, not read back: each column must equal what a new session reads."""
    from eoffice.db import new_session
    from eoffice.models import Agency, Delivery, DeliveryEvent, Document
    from eoffice.rows import insert_rows

    at = datetime(2026, 5, 4, 3, 2, 1, 654321, tzinfo=timezone(timedelta(hours=7)))
    with new_session() as session:
        first, second = session.exec(select(Agency.id).order_by(Agency.id).limit(2)).all()
        document = insert_rows(session, Document, [{"sender_id": first, "type_name": "Tờ trình",
                                                    "subject": "Gửi"}])[0]
        deliveries = insert_rows(session, Delivery, [
            {"document_id": document.id, "recipient_id": first, "delivered_at": at,
             "pending_request_data": {"lý do": ["thu hồi", 1]}, "arrival_date": date(2026, 5, 4)},
            {"document_id": document.id, "recipient_id": second, "delivered_at": None,
             "pending_request_data": None, "arrival_date": None}])
        events = insert_rows(session, DeliveryEvent, [
            {"delivery_id": d.id, "action": "queued", "at": at} for d in deliveries])
        session.commit()
    _assert_as_read_fresh([(Delivery, deliveries), (DeliveryEvent, events)])


def test_children_name_their_parents_by_position(env: Env) -> None:
    """insert_rows_with_children (a send's deliveries and events; one statement on
    PostgreSQL): each child gets the key of the parent at its position, keys follow the
    rows' order, and the objects equal a fresh read."""
    from eoffice.db import new_session
    from eoffice.models import Agency, Delivery, DeliveryEvent, Document
    from eoffice.rows import insert_rows, insert_rows_with_children

    at = datetime(2026, 5, 4, 3, 2, 1, 654321, tzinfo=timezone(timedelta(hours=7)))
    with new_session() as session:
        agencies = session.exec(select(Agency.id).order_by(Agency.id).limit(3)).all()
        document = insert_rows(session, Document, [{"sender_id": agencies[0],
                                                    "type_name": "Tờ trình", "subject": "Gửi"}])[0]
        parents = [{"document_id": document.id, "recipient_id": agency,
                    "arrival_date": date(2026, 5, 4)} for agency in agencies]
        # Out of the parents' order, several per parent, one parent without any.
        links = [2, 0, 2, 0, 2]
        children = [{"delivery_id": link, "action": f"event {n}", "at": at}
                    for n, link in enumerate(links)]
        deliveries, events = insert_rows_with_children(session, Delivery, parents,
                                                       DeliveryEvent, children, "delivery_id")
        assert all(inspect(item).persistent for item in [*deliveries, *events])
        assert not session.dirty and not session.new
        session.commit()
    assert [d.recipient_id for d in deliveries] == list(agencies)
    assert [d.id for d in deliveries] == sorted(d.id for d in deliveries)
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert [e.delivery_id for e in events] == [deliveries[link].id for link in links]
    assert [e.action for e in events] == [f"event {n}" for n in range(len(links))]
    _assert_as_read_fresh([(Delivery, deliveries), (DeliveryEvent, events)])


def test_insert_rows_refuses_rows_of_different_shapes(env: Env) -> None:
    from eoffice.db import new_session
    from eoffice.models import Document
    from eoffice.rows import insert_rows

    sender = _agency_id()
    with new_session() as session, pytest.raises(ValueError, match="differ"):
        insert_rows(session, Document, [{"sender_id": sender, "subject": "a"},
                                        {"sender_id": sender, "page_amount": 2}])


def test_insert_rows_with_given_keys_and_later_changes(env: Env) -> None:
    """Rows whose key the caller gives come back in the caller's order whatever order the
    database returns them in; a returned object changed afterwards is written by the
    unit of work like any loaded one."""
    from eoffice.db import new_session
    from eoffice.models import Blob
    from eoffice.rows import insert_rows

    keys = ["f" * 64, "0" * 64, "a" * 64]
    with new_session() as session:
        written = insert_rows(session, Blob, [{"sha256": key, "size": n}
                                              for n, key in enumerate(keys)])
        assert [(b.sha256, b.size) for b in written] == [(key, n) for n, key in enumerate(keys)]
        written[1].size = 99
        assert list(session.dirty) == [written[1]]
        session.commit()
    with new_session() as session:
        sizes = {b.sha256: b.size for b in session.exec(
            select(Blob).where(Blob.sha256.in_(keys))).all()}  # type: ignore[attr-defined]
    assert sizes == {keys[0]: 0, keys[1]: 99, keys[2]: 2}


def test_insert_rows_writes_the_rows_it_references_first_if_missing(env: Env) -> None:
    """A document and its file's row in one call (one statement on PostgreSQL): the file's
    row is inserted when new, left alone when another upload stored it already, and the
    document's foreign key holds either way."""
    from eoffice.db import new_session
    from eoffice.models import Blob, Document
    from eoffice.rows import insert_rows

    sender = _agency_id()
    sha = "c" * 64
    blob = {"sha256": sha, "size": 7, "content_type": "application/pdf",
            "created_at": datetime(2026, 1, 1, tzinfo=UTC)}
    with new_session() as session:
        document = {"sender_id": sender, "type_name": "Công văn", "subject": "Tệp",
                    "file_sha256": sha}
        first = insert_rows(session, Document, [document], referenced=[(Blob, [blob])])
        second = insert_rows(session, Document, [document],
                             referenced=[(Blob, [{**blob, "size": 99}])])
        session.commit()
    with new_session() as session:
        stored = session.exec(select(Blob).where(Blob.sha256 == sha)).all()
        assert [(b.size, b.content_type) for b in stored] == [(7, "application/pdf")]
        files = {d.file_sha256 for d in session.exec(select(Document).where(
            Document.id.in_([first[0].id, second[0].id]))).all()}  # type: ignore[union-attr]
    assert files == {sha}


def test_insert_ignore_rows_keeps_the_first_and_update_rows_changes_each(env: Env) -> None:
    from eoffice.db import new_session
    from eoffice.models import AuditEvent, Blob, utcnow
    from eoffice.rows import insert_ignore_rows, update_rows

    now = utcnow()
    with new_session() as session:
        insert_ignore_rows(session, Blob, [
            {"sha256": "a" * 64, "size": 1, "content_type": "application/pdf",
             "created_at": now},
            {"sha256": "b" * 64, "size": 2, "content_type": "application/pdf",
             "created_at": now}])
        insert_ignore_rows(session, Blob, [
            {"sha256": "a" * 64, "size": 99, "content_type": "text/plain", "created_at": now},
            {"sha256": "c" * 64, "size": 3, "content_type": "application/pdf",
             "created_at": now}])
        session.commit()
    with new_session() as session:
        sizes = {b.sha256[0]: b.size for b in session.exec(select(Blob)).all()}
    assert sizes == {"a": 1, "b": 2, "c": 3}

    with new_session() as session:
        entries = [AuditEvent(action="test.bulk", object_type="t", object_id=str(i),
                              data={"i": i}) for i in range(3)]
        session.add_all(entries)
        session.commit()
        update_rows(session, AuditEvent, [
            {"id": e.id, "seq": 1000 + i, "prev_hash": f"p{i}", "hash": f"h{i}"}
            for i, e in enumerate(entries)])
        session.commit()
        ids = [e.id for e in entries]
    with new_session() as session:
        rows = session.exec(select(AuditEvent).where(AuditEvent.action == "test.bulk")
                            .order_by(AuditEvent.id)).all()
    assert [(r.id, r.seq, r.prev_hash, r.hash, r.data) for r in rows] == [
        (ids[i], 1000 + i, f"p{i}", f"h{i}", {"i": i}) for i in range(3)]


def test_deferred_rows_are_written_in_order_with_their_values(env: Env) -> None:
    """Audit entries deferred to commit keep the order they were recorded in (the chain is
    sealed in id order) and their JSON data."""
    from eoffice.audit.service import record
    from eoffice.db import new_session
    from eoffice.models import AuditEvent

    with new_session() as session:
        for i in range(5):
            record(session, actor="tester", action="test.deferred", object_type="t",
                   object_id=i, data={"i": i, "when": date(2026, 1, i + 1)})
        session.commit()
    with new_session() as session:
        rows = session.exec(select(AuditEvent).where(AuditEvent.action == "test.deferred")
                            .order_by(AuditEvent.id)).all()
    assert [r.object_id for r in rows] == [str(i) for i in range(5)]
    assert [r.data for r in rows] == [{"i": i, "when": f"2026-01-0{i + 1}"} for i in range(5)]
    assert all(r.at.tzinfo is not None for r in rows)


def test_update_rows_by_a_composite_key(env: Env) -> None:
    from eoffice.db import new_session
    from eoffice.models import StatsItem
    from eoffice.rows import insert_ignore_rows, update_rows

    base = {"agency_id": 0, "day": date(1970, 1, 1), "direction": "", "electronic": 0}
    with new_session() as session:
        insert_ignore_rows(session, StatsItem, [{"kind": kind, "ref_id": 7, **base}
                                                for kind in ("doc", "dlv")])
        update_rows(session, StatsItem, [{"kind": "dlv", "ref_id": 7, "electronic": 1,
                                          "day": date(2026, 5, 4)}], key=("kind", "ref_id"))
        session.commit()
    with new_session() as session:
        items = {i.kind: (i.electronic, i.day) for i in session.exec(
            select(StatsItem).where(StatsItem.ref_id == 7)).all()}
    assert items == {"doc": (0, date(1970, 1, 1)), "dlv": (1, date(2026, 5, 4))}


def test_a_family_is_one_statement_and_equals_a_fresh_read(env: Env) -> None:
    """insert_family (a new document sent at once): on PostgreSQL the root row, a column the
    statement computes, the children and the grandchildren by position go in ONE statement
    and the objects equal a fresh read; elsewhere it declines (None) and writes nothing."""
    from sqlalchemy import event, func

    from eoffice.db import new_session
    from eoffice.models import Agency, Delivery, DeliveryEvent, Document
    from eoffice.rows import insert_family

    at = datetime(2026, 5, 4, 3, 2, 1, 654321, tzinfo=timezone(timedelta(hours=7)))
    with new_session() as session:
        agencies = session.exec(select(Agency.id).order_by(Agency.id).limit(3)).all()
        before = session.exec(select(func.count()).select_from(Document)).one()
        statements: list[str] = []

        def count(*args: Any) -> None:
            statements.append(args[2])

        event.listen(session.get_bind(), "before_cursor_execute", count)
        family = insert_family(
            session, Document, {"sender_id": agencies[0], "type_name": "Tờ trình",
                                "subject": "Gửi", "due_date": date(2026, 12, 31),
                                "to_places": ["Như trên"], "sent_at": at},
            "document_id",
            Delivery, [{"document_id": 0, "recipient_id": agency, "delivered_at": at}
                       for agency in agencies[1:]], "delivery_id",
            DeliveryEvent, [{"delivery_id": link, "action": f"event {n}", "at": at}
                            for n, link in enumerate([1, 0, 1])],
            prelude="seven AS (SELECT 7 AS n), ",
            computed=(("code_number", "SELECT n::text || :suffix FROM seven"),),
            parameters={"suffix": "/QĐ"})
        event.remove(session.get_bind(), "before_cursor_execute", count)
        if env.backend != "postgres":
            assert family is None and not statements
            assert session.exec(select(func.count()).select_from(Document)).one() == before
            return
        assert family is not None and len(statements) == 1
        session.commit()
    document, deliveries, events = family.root, family.children, family.grandchildren
    assert family.computed == {"code_number": "7/QĐ"} and document.code_number == "7/QĐ"
    assert [d.document_id for d in deliveries] == [document.id] * 2
    assert [d.recipient_id for d in deliveries] == list(agencies[1:])
    assert [e.delivery_id for e in events] == [deliveries[1].id, deliveries[0].id,
                                               deliveries[1].id]
    assert [e.id for e in events] == sorted(e.id for e in events)
    _assert_as_read_fresh([(Document, [document]), (Delivery, deliveries),
                           (DeliveryEvent, events)])
