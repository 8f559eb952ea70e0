"""Breaking things on purpose with real PostgreSQL, Redis and Celery workers.

Nothing is lost, duplicated or leaked when a worker is killed mid fan-out, when the broker
restarts while documents are being sent, when the database goes away under the API, or when
one request is sent twice at once with the same Idempotency-Key.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlmodel import Session, col, select

from tests.conftest import Env
from tests.helpers import create_document, login
from tests.platform.infra import (
    CeleryProcess,
    RedisServer,
    TcpProxy,
    point_app_at,
    restore_app_broker,
    shared_redis_url,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
SENDER = "clerk.tinh"


def add_communes(env: Env, count: int) -> list[str]:
    """Extra commune agencies under one district, so a send can reach 100 receivers."""
    from eoffice.models import Agency

    engine = create_engine(env.database_url)
    with Session(engine) as session:
        district = session.exec(select(Agency).where(Agency.code == "000.00.11.H58")).one()
        codes = [f"000.{n:02d}.11.H58" for n in range(10, 10 + count)]
        for n, code in enumerate(codes):
            session.add(Agency(code=code, name=f"UBND xã thử nghiệm {n}", level="commune",
                               parent_id=district.id))
        session.commit()
    engine.dispose()
    return codes


def receivers(env: Env, count: int) -> list[str]:
    from eoffice.models import Agency

    engine = create_engine(env.database_url)
    with Session(engine) as session:
        codes = [c for c in session.exec(select(Agency.code).order_by(col(Agency.id))).all()
                 if c != env.user(SENDER)["agency_code"]]
    engine.dispose()
    if len(codes) < count:
        codes += add_communes(env, count - len(codes))
    return codes[:count]


def settings_for(env: Env, broker_url: str, **extra: str) -> dict[str, str]:
    return {"EOFFICE_DATA_DIR": str(env.data_dir), "EOFFICE_DATABASE_URL": env.database_url,
            "EOFFICE_BROKER_URL": broker_url, "EOFFICE_TASKS_EAGER": "false",
            "EOFFICE_BROKER_POLLING_INTERVAL": "0.1", "EOFFICE_ENVIRONMENT": "test",
            "EOFFICE_LOG_JSON": "true", "EOFFICE_OUTBOX_RELAY_SECONDS": "1", **extra}


@pytest.fixture
def app_client() -> Iterator[TestClient]:
    from eoffice.app import create_app

    with TestClient(create_app()) as client:
        yield client


def delivery_counts(env: Env, document_ids: list[int]) -> dict[str, int]:
    """Rows per state for these documents, plus duplicates (must be 0)."""
    engine = create_engine(env.database_url)
    with engine.connect() as conn:
        ids = ",".join(str(i) for i in document_ids) or "0"
        total, delivered = conn.execute(text(
            f"SELECT count(*), count(*) FILTER (WHERE transport_status='delivered' "
            f"AND status_code='01') FROM deliveries WHERE document_id IN ({ids})")).one()
        duplicates = conn.execute(text(
            f"SELECT count(*) FROM (SELECT document_id, recipient_id FROM deliveries "
            f"WHERE document_id IN ({ids}) GROUP BY 1, 2 HAVING count(*) > 1) d")).scalar()
        arrivals = conn.execute(text(
            f"SELECT count(*) FROM delivery_events e JOIN deliveries d ON d.id = e.delivery_id "
            f"WHERE d.document_id IN ({ids}) AND e.code = '01'")).scalar()
    engine.dispose()
    return {"total": total, "delivered": delivered, "duplicates": duplicates,
            "arrival_events": arrivals}


def fan_out_in_progress(env: Env) -> bool:
    """A worker holds the deliveries' row locks: exchange.deliver is mid-transaction."""
    engine = create_engine(env.database_url)
    with engine.connect() as conn:
        found = conn.execute(text(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname = 'deliveries' AND l.mode = 'RowShareLock' "
            "AND l.pid <> pg_backend_pid() "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )).scalar()
    engine.dispose()
    return bool(found)


def test_worker_killed_mid_fan_out_loses_and_duplicates_nothing(
        pg_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = shared_redis_url()
    import redis

    redis.Redis.from_url(broker).flushdb()
    settings = settings_for(pg_env, broker)
    targets = receivers(pg_env, 100)
    point_app_at(monkeypatch, settings)
    worker = CeleryProcess("worker", settings, tmp_path / "worker.log")
    try:
        from eoffice.app import create_app

        with TestClient(create_app()) as client:
            headers = login(client, SENDER, pg_env.password(SENDER))
            document = create_document(client, headers)
            request_id = "platform-e2e-" + os.urandom(4).hex()
            # The send is queued before any worker runs, so the kill lands inside the fan-out.
            sent = client.post(f"/api/v1/documents/{document['id']}/send",
                               headers={**headers, "X-Request-ID": request_id},
                               json={"recipients": targets})
            assert sent.status_code == 202, sent.text
            assert sent.headers["X-Request-ID"] == request_id
            assert len(sent.json()["deliveries"]) == 100

            # Hold the fan-out inside its transaction: it has locked and updated the
            # deliveries when it comes to write their events, and waits there for this
            # lock. Catching a fan-out that runs freely depends on timing it no longer
            # gives (it takes milliseconds).
            blocker = create_engine(pg_env.database_url).connect()
            blocker.execute(text("LOCK TABLE delivery_events IN SHARE MODE"))
            try:
                worker.start()
                wait_for(lambda: fan_out_in_progress(pg_env), timeout=40, interval=0.005,
                         message="the fan-out to start")
                children = worker.children()
                assert children, "prefork pool processes"
                for pid in children:
                    os.kill(pid, signal.SIGKILL)
            finally:
                blocker.rollback()
                blocker.close()
                blocker.engine.dispose()
            killed_at = delivery_counts(pg_env, [document["id"]])
            # The transaction died with the process: nothing half-delivered is visible.
            assert killed_at["delivered"] in (0, 100)

            # task_reject_on_worker_lost puts the message back; a new pool process redoes it.
            wait_for(lambda: delivery_counts(pg_env, [document["id"]])["delivered"] == 100,
                     timeout=40, message="every receiver to get the document")
            time.sleep(1.0)  # a late duplicate delivery run would show up here
            final = delivery_counts(pg_env, [document["id"]])
            assert final == {"total": 100, "delivered": 100, "duplicates": 0,
                             "arrival_events": 100}, final
            for code in (targets[0], targets[-1]):
                user = next((u for u in pg_env.users if u["agency_code"] == code
                             and u["role"] == "clerk"), None)
                if user:
                    inbox = client.get("/api/v1/inbox", headers=login(
                        client, user["username"], pg_env.password(user["username"]))).json()
                    assert [i["document_id"] for i in inbox["items"]] == [document["id"]]

            # The request id followed the document: outbox row -> task log line in the worker.
            from eoffice.db import new_session
            from eoffice.models import OutboxMessage

            with new_session() as session:
                row = session.exec(select(OutboxMessage)
                                   .where(OutboxMessage.task == "exchange.deliver")).one()
            assert row.request_id == request_id

            def deliver_logged() -> list[dict[str, object]]:
                lines = []
                for line in worker.output().splitlines():
                    if line.startswith("{"):
                        record = json.loads(line)
                        if record.get("task") == "exchange.deliver":
                            lines.append(record)
                return lines

            logged = wait_for(deliver_logged, timeout=10, message="the task's log line")
            assert {r["request_id"] for r in logged} == {request_id}, logged
            assert any(r["outcome"] == "success" for r in logged)
    except BaseException:
        print(worker.output()[-5000:])
        raise
    finally:
        worker.stop()
        restore_app_broker()


def test_broker_restart_while_sending_loses_nothing(
        pg_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared_redis_url()  # same requirement as the other integration tests
    own_redis = RedisServer(tmp_path / "redis")
    own_redis.start()
    # The fan-out goes through the broker (small sends are otherwise delivered in the request).
    settings = settings_for(pg_env, own_redis.url, EOFFICE_INLINE_DELIVERY_MAX="0")
    targets = receivers(pg_env, 3)
    point_app_at(monkeypatch, settings)
    worker = CeleryProcess("worker", settings, tmp_path / "worker.log")
    beat = CeleryProcess("beat", settings, tmp_path / "beat.log")
    worker.start()
    beat.start()
    documents: list[int] = []
    errors: list[str] = []
    try:
        from eoffice.app import create_app

        with TestClient(create_app()) as client:
            headers = login(client, SENDER, pg_env.password(SENDER))
            drafts = [create_document(client, headers, subject=f"Văn bản số {n}")["id"]
                      for n in range(16)]

            def send_all() -> None:
                for document_id in drafts:
                    response = client.post(f"/api/v1/documents/{document_id}/send",
                                           headers=headers, json={"recipients": targets})
                    if response.status_code != 202:
                        errors.append(response.text)
                    documents.append(document_id)
                    time.sleep(0.15)

            sender = threading.Thread(target=send_all)
            sender.start()
            time.sleep(0.6)
            own_redis.kill()          # the broker dies while documents are being sent
            time.sleep(1.5)
            own_redis.start()         # and comes back on the same port with its AOF
            sender.join(60)
            assert not errors, errors
            assert len(documents) == 16
            wait_for(lambda: delivery_counts(pg_env, documents)["delivered"] == 16 * 3,
                     timeout=45, message="every document delivered after the restart")
            time.sleep(1.0)
            final = delivery_counts(pg_env, documents)
            assert final == {"total": 48, "delivered": 48, "duplicates": 0,
                             "arrival_events": 48}, final
            from eoffice.db import new_session
            from eoffice.models import OutboxMessage

            with new_session() as session:
                published = session.exec(select(OutboxMessage)
                                         .where(OutboxMessage.task == "exchange.deliver")).all()
            # Some sends found the broker down: the relay on beat published them later.
            assert all(m.published_at is not None for m in published)
            assert any(m.attempts > 1 for m in published) or "relay" in beat.output()
    except BaseException:
        print(worker.output()[-4000:], beat.output()[-2000:])
        raise
    finally:
        beat.stop()
        worker.stop()
        own_redis.stop()
        restore_app_broker()


def test_database_outage_gives_503_stores_nothing_and_recovers(
        pg_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.engine import make_url

    from eoffice.db import engine_for
    from eoffice.settings import get_settings

    direct = make_url(pg_env.database_url)
    proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432)
    proxy.start()
    monkeypatch.setenv("EOFFICE_DATABASE_URL", direct.set(host="127.0.0.1", port=proxy.port)
                       .render_as_string(hide_password=False))
    get_settings.cache_clear()
    engine_for.cache_clear()

    def count(table: str) -> int:
        engine = create_engine(pg_env.database_url)
        with engine.connect() as conn:
            value = int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() or 0)
        engine.dispose()
        return value

    from eoffice.app import create_app
    from tests.helpers import make_pdf, metadata

    try:
        with TestClient(create_app()) as client:
            headers = login(client, SENDER, pg_env.password(SENDER))
            draft = create_document(client, headers)
            before = {t: count(t) for t in ("documents", "deliveries", "outbox",
                                            "audit_events", "blobs")}
            proxy.cut()
            created = client.post("/api/v1/documents", headers=headers,
                                  data={"metadata": json.dumps(metadata())},
                                  files={"file": ("x.pdf", make_pdf("outage"),
                                                  "application/pdf")})
            assert created.status_code == 503, created.text
            assert created.headers["content-type"].startswith("application/problem+json")
            assert created.json()["detail_vi"]
            sent = client.post(f"/api/v1/documents/{draft['id']}/send", headers=headers,
                               json={"recipients": ["000.00.11.H58"]})
            assert sent.status_code == 503
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("error")
            assert client.get("/healthz").status_code == 200, "alive, just not ready"
            assert client.get("/metrics").status_code == 200, "scrapes survive the outage"
            after = {t: count(t) for t in before}
            assert after == before, "nothing partial was stored"

            proxy.restore()
            wait_for(lambda: client.get("/readyz").status_code == 200, timeout=20,
                     message="readiness after the database returns")
            sent = client.post(f"/api/v1/documents/{draft['id']}/send", headers=headers,
                               json={"recipients": ["000.00.11.H58"]})
            assert sent.status_code == 202, sent.text
            assert count("deliveries") == before["deliveries"] + 1
    finally:
        proxy.cut()


def _terminate_backend(env: Env, pid: int) -> None:
    """What a database restart or an administrator does to a pooled connection's backend:
    PostgreSQL sends its FATAL notice and closes the socket."""
    admin = create_engine(env.database_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
            wait_for(lambda: not conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}).scalar(),
                timeout=10, message="the backend is gone")
    finally:
        admin.dispose()


def test_a_pooled_connection_the_server_closed_is_replaced_at_checkout(pg_env: Env) -> None:
    """After a restart or a terminated backend, the next checkout from either engine (the
    sync one of threads and tasks, the asyncio one of the units of work) takes a working
    connection: pre-ping finds the dead one and the pool replaces it, so no caller sees
    the error."""
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncEngine

    from eoffice.db import engine_for, unit_engine_for

    engine = engine_for.__wrapped__(pg_env.database_url)  # a pool of its own
    try:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        _terminate_backend(pg_env, int(first or 0))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != first
    finally:
        engine.dispose()

    async def through_the_unit_engine() -> None:
        unit_engine = unit_engine_for(pg_env.database_url)
        assert isinstance(unit_engine, AsyncEngine)
        try:
            async with unit_engine.connect() as conn:
                first = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
            _terminate_backend(pg_env, int(first or 0))
            async with unit_engine.connect() as conn:
                second = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
            assert second != first
        finally:
            await unit_engine.dispose()

    asyncio.run(through_the_unit_engine())


def test_same_idempotency_key_twice_at_once_sends_once(pg_env: Env) -> None:
    from eoffice.app import create_app

    app = create_app()
    targets = receivers(pg_env, 5)
    with TestClient(app) as first, TestClient(app) as second:
        headers = login(first, SENDER, pg_env.password(SENDER))
        draft = create_document(first, headers)
        barrier = threading.Barrier(2)
        responses: list[object] = [None, None]

        def post(index: int, client: TestClient) -> None:
            barrier.wait()
            responses[index] = client.post(
                f"/api/v1/documents/{draft['id']}/send",
                headers={**headers, "Idempotency-Key": "send-once-7f3a"},
                json={"recipients": targets})

        threads = [threading.Thread(target=post, args=(i, c))
                   for i, c in enumerate((first, second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        statuses = [r.status_code for r in responses]  # type: ignore[attr-defined]
        assert statuses == [202, 202], [r.text for r in responses]  # type: ignore[attr-defined]
        bodies = [r.json() for r in responses]  # type: ignore[attr-defined]
        assert bodies[0]["code_number"] == bodies[1]["code_number"]
        assert sorted(d["id"] for d in bodies[0]["deliveries"]) == \
            sorted(d["id"] for d in bodies[1]["deliveries"])
        replayed = [r.headers.get("Idempotent-Replayed") for r in responses]  # type: ignore[attr-defined]
        assert replayed.count("true") == 1
    counts = delivery_counts(pg_env, [draft["id"]])
    assert counts["total"] == 5 and counts["duplicates"] == 0
    engine = create_engine(pg_env.database_url)
    with engine.connect() as conn:
        sends = conn.execute(text("SELECT count(*) FROM audit_events WHERE action = "
                                  "'document.sent' AND object_id = :id"),
                             {"id": str(draft["id"])}).scalar()
        # Five receivers are delivered in the request itself: one arrival, one check.
        arrivals = conn.execute(text("SELECT count(*) FROM audit_events WHERE action = "
                                     "'delivery.arrived' AND object_id = :id"),
                                {"id": str(draft["id"])}).scalar()
        checks = conn.execute(text("SELECT count(*) FROM outbox WHERE task = "
                                   "'verification.verify_arrivals'")).scalar()
    engine.dispose()
    assert sends == 1 and arrivals == 1 and checks == 1
