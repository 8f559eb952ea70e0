"""One request per document: POST /documents with `recipients` issues and sends it, all or
nothing, and an Idempotency-Key makes a retried request harmless."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import select

from tests.conftest import Clients, Env
from tests.helpers import assert_problem, inbox_item, listening, make_pdf, metadata

CLERK = "clerk.minhlang"


def _create(as_user: Clients, username: str, recipients: str | None, pdf: bytes | None = None,
            key: str | None = None, **meta: Any) -> Any:
    data = {"metadata": json.dumps(metadata(**meta))}
    if recipients is not None:
        data["recipients"] = recipients
    headers = as_user.headers(username)
    if key is not None:
        headers = {**headers, "Idempotency-Key": key}
    return as_user.client.post("/api/v1/documents", headers=headers, data=data,
                               files={"file": ("a.pdf", pdf or make_pdf(), "application/pdf")})


def _rows() -> dict[str, int]:
    from eoffice.db import new_session
    from eoffice.models import Delivery, Document, OutboxMessage

    with new_session() as session:
        return {model.__name__: session.exec(select(func.count()).select_from(model)).one()
                for model in (Document, Delivery, OutboxMessage)}


@pytest.mark.parametrize("form", ["json", "comma"])
def test_one_request_issues_and_sends(env: Env, as_user: Clients, form: str) -> None:
    district, province = env.user("clerk.vuthu")["agency_code"], env.user(
        "clerk.tinh")["agency_code"]
    recipients = (json.dumps([district, province]) if form == "json"
                  else f"{district}, {province}")
    response = _create(as_user, CLERK, recipients)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "sent" and body["code_number"] == "01"
    assert sorted(d["recipient"] for d in body["deliveries"]) == sorted([district, province])
    # Tasks run eagerly in tests: the fan-out has happened by now.
    item = inbox_item(as_user.client, as_user.headers("clerk.vuthu"), body["id"])
    assert item["status_code"] == "01"


@pytest.mark.parametrize(("username", "recipients", "status", "field"), [
    ("officer.minhlang", '["000.00.12.H58"]', 403, None),   # officers draft, they do not send
    (CLERK, '["000.99.99.H58"]', 422, "recipients"),          # unknown agency
    (CLERK, '[""]', 422, "recipients"),
    (CLERK, "[not json", 422, "recipients"),
])
def test_a_refused_send_stores_nothing(env: Env, as_user: Clients, username: str,
                                       recipients: str, status: int, field: str | None
                                       ) -> None:
    before = _rows()
    response = _create(as_user, username, recipients)
    assert_problem(response, status, field)
    assert _rows() == before


def test_without_recipients_it_stays_a_draft(env: Env, as_user: Clients) -> None:
    response = _create(as_user, CLERK, "")
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "draft" and response.json()["deliveries"] == []


def test_idempotency_key_creates_one_document(env: Env, as_user: Clients) -> None:
    district = env.user("clerk.vuthu")["agency_code"]
    pdf = make_pdf("Một lần thôi")
    first = _create(as_user, CLERK, district, pdf=pdf, key="create-1")
    again = _create(as_user, CLERK, district, pdf=pdf, key="create-1")
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["code_number"] == first.json()["code_number"]
    # Same key, another file: refused rather than silently answered with the first document.
    other = _create(as_user, CLERK, district, pdf=make_pdf("Khác"), key="create-1")
    assert_problem(other, 422, "Idempotency-Key")
    before = _rows()
    assert _create(as_user, CLERK, district, pdf=pdf, key="create-1").status_code == 201
    assert _rows() == before


@pytest.mark.parametrize("receivers", [2, 12])
def test_arrivals_are_notified_inline_or_by_a_task(env: Env, as_user: Clients,
                                                   receivers: int) -> None:
    """Small fan-outs notify arrivals in the fan-out transaction; large ones in a task, so
    their receivers see the document first. Either way every arrival is notified once."""
    from eoffice.db import new_session
    from eoffice.exchange.service import INLINE_NOTIFY_MAX
    from eoffice.models import Delivery, DeliveryEvent, OutboxMessage

    codes = sorted({u["agency_code"] for u in env.users
                    if u.get("agency_level") == "commune"
                    and u["agency_code"] != env.user(CLERK)["agency_code"]})[:receivers]
    response = _create(as_user, CLERK, json.dumps(codes))
    assert response.status_code == 201, response.text
    document_id = response.json()["id"]
    with new_session() as session:
        arrivals = session.exec(select(DeliveryEvent).join(
            Delivery, Delivery.id == DeliveryEvent.delivery_id)  # type: ignore[arg-type]
            .where(Delivery.document_id == document_id)
            .where(DeliveryEvent.code == "01")).all()
        notify_tasks = session.exec(select(OutboxMessage)
                                    .where(OutboxMessage.task == "exchange.notify_status")
                                    ).all()
    assert len(arrivals) == receivers
    assert all(event.notified_at is not None for event in arrivals)
    assert len(notify_tasks) == (1 if receivers > INLINE_NOTIFY_MAX else 0)


@pytest.mark.parametrize(("inline_max", "receivers"), [(10, 2), (1, 2), (0, 1)])
def test_small_sends_are_delivered_in_the_request(env: Env, as_user: Clients,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  inline_max: int, receivers: int) -> None:
    """Up to `inline_delivery_max` receivers the request itself fills their inboxes; beyond
    it the deliveries are queued for a worker's fan-out. Both end with one arrival each."""
    from eoffice.db import new_session
    from eoffice.models import Delivery, DeliveryEvent, OutboxMessage
    from eoffice.settings import get_settings

    monkeypatch.setenv("EOFFICE_INLINE_DELIVERY_MAX", str(inline_max))
    get_settings.cache_clear()
    codes = sorted({u["agency_code"] for u in env.users
                    if u.get("agency_level") == "commune"
                    and u["agency_code"] != env.user(CLERK)["agency_code"]})[:receivers]
    response = _create(as_user, CLERK, json.dumps(codes))
    assert response.status_code == 201, response.text
    inline = receivers <= inline_max
    expected = "delivered" if inline else "queued"
    assert [d["transport_status"] for d in response.json()["deliveries"]] == \
        [expected] * receivers
    document_id = response.json()["id"]
    with new_session() as session:
        fanouts = session.exec(select(OutboxMessage)
                               .where(OutboxMessage.task == "exchange.deliver")).all()
        checks = session.exec(select(OutboxMessage).where(
            OutboxMessage.task == "verification.verify_arrivals")).all()
        arrivals = session.exec(select(DeliveryEvent).join(
            Delivery, Delivery.id == DeliveryEvent.delivery_id)  # type: ignore[arg-type]
            .where(Delivery.document_id == document_id)
            .where(DeliveryEvent.code == "01")).all()
    assert len(fanouts) == (0 if inline else 1)
    assert len(checks) == 1 and len(arrivals) == receivers
    # Tasks run eagerly here: the queued ones have been fanned out by now.
    for code in codes:
        user = next(u for u in env.users if u["agency_code"] == code and u["role"] == "clerk")
        assert inbox_item(as_user.client, as_user.headers(user["username"]),
                          document_id)["status_code"] == "01"


@pytest.mark.parametrize("env", ["postgres"], indirect=True)
def test_create_and_send_statement_budget(env: Env, as_user: Clients) -> None:
    """What one create-and-send costs PostgreSQL: each statement costs the app a tenth of a
    millisecond or more, so a change that adds one should be a decision, not an accident
    (an autoflush splitting the document's UPDATE in two went unnoticed once)."""
    from eoffice.db import new_session
    from eoffice.models import AuditEvent, DocumentRevision

    receiver = json.dumps([env.user("clerk.vuthu")["agency_code"]])
    assert _create(as_user, CLERK, receiver, pdf=make_pdf("warm")).status_code == 201
    statements: list[str] = []

    def before(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    def committed(_conn: object) -> None:
        statements.append("COMMIT")

    with listening(as_user.client, ("before_cursor_execute", before), ("commit", committed)):
        response = _create(as_user, CLERK, receiver, pdf=make_pdf("budget"))
    assert response.status_code == 201, response.text
    # The request's own transaction; eager tasks (tests) run after its commit.
    first_transaction = statements[:statements.index("COMMIT")]
    writes = [s.split()[0] for s in first_transaction]
    # The caller (+ directory and webhook versions); then ONE statement for the file's row,
    # the register number, the document (issued and sent), its delivery and the delivery's
    # events (documents.service.insert_issued_and_sent); then the revision, audit and outbox
    # rows deferred to commit (one statement).
    assert len(first_transaction) == 3, "\n".join(s[:80] for s in first_transaction)
    assert writes == ["SELECT", "WITH", "WITH"]
    for table in ("blobs", "register_counters", "documents", "deliveries", "delivery_events"):
        assert f"INSERT INTO {table} " in first_transaction[1], table
    document_id = response.json()["id"]
    with new_session() as session:
        assert session.exec(select(DocumentRevision.number).where(
            DocumentRevision.document_id == document_id)).all() == [1]
        actions = set(session.exec(select(AuditEvent.action).where(
            AuditEvent.object_id == str(document_id))).all())
    assert {"document.created", "document.issued", "document.sent"} <= actions


@pytest.mark.parametrize("path", ["create_and_send", "send", "status", "inbox"])
def test_per_document_calls_run_as_one_unit(env: Env, as_user: Clients, path: str) -> None:
    """The calls agency systems make per document run as one unit of work (deps.UnitOfWork).

    On PostgreSQL the unit runs on the event loop (no worker thread waits for the
    interpreter lock) and only the file's sync goes to a worker thread, once, before the
    commit (blobs.put_for_commit), so the loop serves other requests meanwhile;
    elsewhere the unit takes one hop to a worker thread (the caller, handler and commit as
    dependencies took three).
    """
    import threading
    from unittest import mock

    import anyio.to_thread

    from eoffice.blobs.service import LocalBlobStore

    receiver = env.user("clerk.vuthu")["agency_code"]
    draft = _create(as_user, CLERK, None)
    sent = _create(as_user, CLERK, json.dumps([receiver]), pdf=make_pdf("hops"))
    assert draft.status_code == sent.status_code == 201
    delivery = sent.json()["deliveries"][0]["id"]
    client = as_user.client
    receiving = as_user.headers("clerk.vuthu")  # signed in before counting
    calls = {
        "create_and_send": lambda: _create(as_user, CLERK, json.dumps([receiver]),
                                           pdf=make_pdf("hops 2")),
        "send": lambda: client.post(f"/api/v1/documents/{draft.json()['id']}/send",
                                    headers=as_user.headers(CLERK),
                                    json={"recipients": [receiver]}),
        "status": lambda: client.post(f"/api/v1/deliveries/{delivery}/status",
                                      headers=receiving, json={"code": "03"}),
        "inbox": lambda: client.get("/api/v1/inbox", headers=receiving),
    }
    real_hop, real_publish = anyio.to_thread.run_sync, LocalBlobStore.publish_staged
    hops: list[object] = []
    statement_threads: set[int] = set()
    put_threads: list[int] = []

    async def counted(function: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(function)
        return await real_hop(function, *args, **kwargs)

    def publish(store: LocalBlobStore, *args: Any, **kwargs: Any) -> Any:
        put_threads.append(threading.get_ident())
        return real_publish(store, *args, **kwargs)

    def before(*_: object) -> None:
        statement_threads.add(threading.get_ident())

    loop_thread = client.portal.call(threading.get_ident)  # type: ignore[union-attr]
    with mock.patch.object(anyio.to_thread, "run_sync", counted), \
            mock.patch.object(LocalBlobStore, "publish_staged", publish), \
            listening(client, ("before_cursor_execute", before)):
        response = calls[path]()
    assert response.status_code < 300, response.text
    assert len(put_threads) == (1 if path == "create_and_send" else 0)
    assert loop_thread not in put_threads
    if env.backend == "postgres":
        assert client.app.state.unit_engines  # type: ignore[attr-defined]
        assert statement_threads == {loop_thread}
        # The file's sync runs in the loop's executor while the deferred rows are written.
        assert not hops, hops
    else:
        assert loop_thread not in statement_threads
        assert len(hops) == 1, hops


def test_register_numbers_print_alike_on_every_path(env: Env, as_user: Clients) -> None:
    """The one-statement numbering (PostgreSQL) formats in SQL what format_number does in
    Python: two digits at least, nothing cut off past 99."""
    from eoffice.db import new_session
    from eoffice.documents.service import format_number
    from eoffice.models import Agency, RegisterCounter
    from eoffice.timeutil import local_now

    receiver = json.dumps([env.user("clerk.vuthu")["agency_code"]])
    assert _create(as_user, CLERK, receiver).status_code == 201  # the counter exists now
    with new_session() as session:
        agency = session.exec(select(Agency).where(
            Agency.code == env.user(CLERK)["agency_code"])).one()
        agency_id = agency.id
    for last in (8, 98, 1233):  # 09 10, 99 100, 1234 1235
        with new_session() as session:
            counter = session.get(RegisterCounter, (agency_id, "outgoing", local_now().year))
            assert counter is not None
            counter.last_number = last
            session.add(counter)
            session.commit()
        sent = _create(as_user, CLERK, receiver, pdf=make_pdf(f"n{last}"))
        assert sent.status_code == 201, sent.text
        assert sent.json()["code_number"] == format_number(last + 1)
        # Drafts issued on their own take the Python path.
        draft = _create(as_user, CLERK, None, pdf=make_pdf(f"d{last}")).json()
        issued = as_user.client.post(f"/api/v1/documents/{draft['id']}/issue",
                                     headers=as_user.headers(CLERK))
        assert issued.json()["code_number"] == format_number(last + 2)


@pytest.mark.parametrize("env", ["postgres"], indirect=True)
def test_times_are_stored_in_utc_whatever_the_servers_time_zone(env: Env,
                                                                 as_user: Clients) -> None:
    """A server set to Vietnam's time zone (likely in a province's data centre) must not
    shift the times a send writes: the columns hold naive UTC, whichever statement
    writes them (ORM, Core, or the numbering statement's text)."""
    from eoffice.db import new_session
    from eoffice.models import AuditEvent, Delivery, Document, DocumentRevision, utcnow

    def vietnam(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET TIME ZONE 'Asia/Ho_Chi_Minh'")
        cursor.close()
        dbapi_connection.commit()

    # On every checkout, on every engine the request may use (its connections are pooled).
    with listening(as_user.client, ("checkout", vietnam)):
        before = utcnow()
        sent = _create(as_user, CLERK, json.dumps([env.user("clerk.vuthu")["agency_code"]]))
        after = utcnow()
    assert sent.status_code == 201, sent.text
    with new_session() as session:
        document = session.get(Document, sent.json()["id"])
        assert document is not None
        delivery = session.exec(select(Delivery).where(
            Delivery.document_id == document.id)).one()
        audit = session.exec(select(AuditEvent.at).where(
            AuditEvent.object_id == str(document.id))).all()
        revision = session.exec(select(DocumentRevision.created_at).where(
            DocumentRevision.document_id == document.id)).one()
        for stored in (document.created_at, document.issued_at, document.sent_at,
                       document.updated_at, delivery.delivered_at, revision, *audit):
            assert stored is not None and before <= stored <= after, (stored, before, after)


@pytest.mark.parametrize("env", ["postgres"], indirect=True)
def test_an_app_served_from_two_loops_gives_each_loop_its_own_unit_engine(env: Env) -> None:
    """An asyncio engine's connections belong to the loop that made them: an app served from
    two event loops at once (two test clients; uvicorn has one per process) keeps one engine
    per loop, and a loop's engine is disposed when its lifespan ends, not the other's."""
    from fastapi.testclient import TestClient

    from eoffice.app import create_app
    from tests.helpers import login

    app = create_app()
    with TestClient(app) as first:
        headers = login(first, "clerk.vuthu", env.password("clerk.vuthu"))
        with TestClient(app) as second:
            assert len(app.state.unit_engines) == 2
            assert first.get("/api/v1/inbox", headers=headers).status_code == 200
            assert second.get("/api/v1/inbox", headers=headers).status_code == 200
        assert len(app.state.unit_engines) == 1
        assert first.get("/api/v1/inbox", headers=headers).status_code == 200
    assert app.state.unit_engines == {}


@pytest.mark.parametrize("env", ["postgres"], indirect=True)
def test_both_engines_take_their_pool_size_from_the_settings(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """An API process on PostgreSQL holds two pools (request threads, event loop): both are
    sized by EOFFICE_DB_POOL_SIZE and EOFFICE_DB_MAX_OVERFLOW, which the compose file sets
    against PostgreSQL's max_connections."""
    from eoffice.db import engine_for, unit_engine_for
    from eoffice.settings import get_settings

    monkeypatch.setenv("EOFFICE_DB_POOL_SIZE", "3")
    monkeypatch.setenv("EOFFICE_DB_MAX_OVERFLOW", "2")
    get_settings.cache_clear()
    engine_for.cache_clear()
    try:
        url = get_settings().database_url
        unit = unit_engine_for(url)
        assert unit is not None
        for pool in (engine_for(url).pool, unit.sync_engine.pool):
            assert pool.size() == 3  # type: ignore[attr-defined]
            assert pool._max_overflow == 2  # type: ignore[attr-defined]
    finally:
        engine_for(get_settings().database_url).dispose()
        get_settings.cache_clear()
        engine_for.cache_clear()


def test_a_sent_document_answers_as_a_read_finds_it_with_its_trail_in_order(
        env: Env, as_user: Clients) -> None:
    """The response is built from the values written (on PostgreSQL the document, number,
    delivery and events come from one statement, never read back): every field must be
    what a later read finds, and the audit trail keeps the order of the separate steps."""
    from eoffice.db import new_session
    from eoffice.models import AuditEvent, Delivery, DeliveryEvent

    receivers = [env.user("clerk.vuthu")["agency_code"], env.user("clerk.tinh")["agency_code"]]
    for round_number in (1, 2):  # the register's first number this year, then the next
        response = _create(as_user, CLERK, json.dumps(receivers),
                           pdf=make_pdf(f"read {round_number}"), due_date="2026-12-31")
        assert response.status_code == 201, response.text
        sent = response.json()
        assert sent["code_number"] == f"0{round_number}"
        read = as_user.client.get(f"/api/v1/documents/{sent['id']}",
                                  headers=as_user.headers(CLERK)).json()
        fields = [name for name in sent if name != "deliveries"]
        assert {n: sent[n] for n in fields} == {n: read[n] for n in fields}
        # The arrival check has run since (tasks are eager here): only its fields moved.
        moved = {"verification_indication", "verification_report_id", "updated_at"}
        assert [{k: v for k, v in d.items() if k not in moved} for d in sent["deliveries"]] \
            == [{k: v for k, v in d.items() if k not in moved} for d in read["deliveries"]]
    with new_session() as session:
        trail = session.exec(select(AuditEvent.action).where(
            AuditEvent.object_type == "document").where(
            AuditEvent.object_id == str(sent["id"])).order_by(AuditEvent.id)).all()
        events = session.exec(select(DeliveryEvent.action, Delivery.recipient_id).join(
            Delivery, Delivery.id == DeliveryEvent.delivery_id)  # type: ignore[arg-type]
            .where(Delivery.document_id == sent["id"]).order_by(DeliveryEvent.id)).all()
    assert trail[:4] == ["document.created", "delivery.arrived", "document.issued",
                         "document.sent"]
    assert [action for action, _ in events] == ["queued", "queued", "arrived", "arrived"]
    assert len({recipient for _, recipient in events}) == 2
