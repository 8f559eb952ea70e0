"""Fan-out and status notifications through a real broker and a real worker (no eager mode)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import select

from tests.conftest import Env
from tests.helpers import create_document, login, send, status
from tests.integration.conftest import Worker, wait_for


def _client() -> Iterator[TestClient]:
    from eoffice.app import create_app

    with TestClient(create_app()) as client:
        yield client


def _exchange(env: Env, worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    from eoffice.settings import get_settings

    # Small sends are delivered within the request; this test is about the worker's fan-out.
    monkeypatch.setenv("EOFFICE_INLINE_DELIVERY_MAX", "0")
    get_settings.cache_clear()
    client = next(_client())
    assert not __import__("eoffice.settings").settings.get_settings().tasks_eager
    sender = login(client, "clerk.minhlang", env.password("clerk.minhlang"))
    district = login(client, "clerk.vuthu", env.password("clerk.vuthu"))
    province = login(client, "clerk.tinh", env.password("clerk.tinh"))
    document = create_document(client, sender)
    response = send(client, sender, document["id"], ["000.00.12.H58", "000.00.00.H58"])
    assert response.status_code == 202
    # the request only queued the deliveries; the worker places them in the inboxes
    assert {d["transport_status"] for d in response.json()["deliveries"]} == {"queued"}

    def arrived(headers: dict[str, str]) -> Any:
        items = client.get("/api/v1/inbox", headers=headers).json()["items"]
        return next((i for i in items if i["document_id"] == document["id"]), None)

    try:
        for headers in (district, province):
            item = wait_for(lambda h=headers: arrived(h), message="delivery by the worker")
            assert item["status_code"] == "01"
            assert status(client, headers, item["delivery_id"], "03").status_code == 200
    except AssertionError:
        print(worker.output()[-4000:])
        raise
    final = client.get(f"/api/v1/documents/{document['id']}", headers=sender).json()
    assert [d["status_code"] for d in final["deliveries"]] == ["03", "03"]

    from eoffice.db import new_session
    from eoffice.models import DeliveryEvent, OutboxMessage

    def all_notified() -> bool:
        with new_session() as session:
            pending = session.exec(select(func.count()).select_from(DeliveryEvent)
                                   .where(DeliveryEvent.code.is_not(None))  # type: ignore[union-attr]
                                   .where(DeliveryEvent.notified_at.is_(None))).one()  # type: ignore[union-attr]
            return pending == 0

    wait_for(all_notified, message="status notifications")

    def outbox_drained() -> bool:
        with new_session() as session:
            return session.exec(select(func.count()).select_from(OutboxMessage)
                                .where(OutboxMessage.published_at.is_(None))).one() == 0  # type: ignore[union-attr]

    wait_for(outbox_drained, message="every outbox row published")

    # The arrival check ran in the worker's own sandbox processes: a real verdict, not an
    # "could not verify" (the test PDF carries no signature).
    def verdicts() -> Any:
        deliveries = client.get(f"/api/v1/documents/{document['id']}",
                                headers=sender).json()["deliveries"]
        found = [d["verification_indication"] for d in deliveries]
        return found if all(found) else None

    assert wait_for(verdicts, message="arrival verdicts") == ["NO_SIGNATURE_FOUND"] * 2


def test_embedded_broker_and_worker(embedded_worker: Worker, sqlite_env: Env,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _exchange(sqlite_env, embedded_worker, monkeypatch)


@pytest.mark.integration
def test_redis_broker_postgres_and_worker(redis_worker: Worker, pg_env: Env,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _exchange(pg_env, redis_worker, monkeypatch)
