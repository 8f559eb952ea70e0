"""Webhooks end to end: a real local receiver that fails, backoff, give-up, re-send, isolation."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import Clients, Env
from tests.helpers import create_document, listening
from tests.platform.receiver import Receiver

SENDER = "clerk.minhlang"
RECEIVER = "clerk.vuthu"


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from eoffice.settings import get_settings

    monkeypatch.setenv("EOFFICE_WEBHOOK_BACKOFF_SECONDS", "0.05")
    monkeypatch.setenv("EOFFICE_WEBHOOK_BACKOFF_MAX_SECONDS", "0.2")
    monkeypatch.setenv("EOFFICE_WEBHOOK_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("EOFFICE_WEBHOOK_TIMEOUT_SECONDS", "3")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver().start()
    yield rx
    rx.stop()


def _sweep_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Run the beat sweep (as beat would) until the predicate holds."""
    from eoffice.webhooks.tasks import sweep

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.06)
        sweep.apply()


def _register(as_user: Clients, username: str, url: str, **extra: object) -> dict:  # type: ignore[type-arg]
    created = as_user.client.post("/api/v1/webhooks", headers=as_user.headers(username),
                                  json={"url": url, **extra})
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


def _send(env: Env, as_user: Clients, to: str = RECEIVER) -> dict:  # type: ignore[type-arg]
    document = create_document(as_user.client, as_user.headers(SENDER))
    sent = as_user.client.post(f"/api/v1/documents/{document['id']}/send",
                               headers=as_user.headers(SENDER),
                               json={"recipients": [env.user(to)["agency_code"]]})
    assert sent.status_code == 202, sent.text
    return sent.json()  # type: ignore[no-any-return]


def test_arrival_is_retried_with_backoff_then_delivered_signed(
        env: Env, as_user: Clients, receiver: Receiver, fast_retries: None) -> None:
    from eoffice.webhooks.service import verify_signature

    client = as_user.client
    receiver.fail_first = 2
    endpoint = _register(as_user, RECEIVER, receiver.url, events=["document.arrived"])
    assert endpoint["secret"].startswith("whsec_")
    listed = client.get("/api/v1/webhooks", headers=as_user.headers(RECEIVER)).json()
    assert listed["total"] == 1 and "secret" not in listed["items"][0]

    sent = _send(env, as_user)
    _sweep_until(lambda: len(receiver.requests) >= 3)
    time.sleep(0.3)
    assert len(receiver.requests) == 3, "exactly 2 failures then one success, no extra pushes"
    ids = {r.headers["X-Eoffice-Delivery"] for r in receiver.requests}
    assert len(ids) == 1, "every retry carries the same delivery id (receivers de-duplicate)"
    for request in receiver.requests:
        assert verify_signature(endpoint["secret"], request.headers["X-Eoffice-Timestamp"],
                                request.body, request.headers["X-Eoffice-Signature"])
        assert not verify_signature("whsec_wrong", request.headers["X-Eoffice-Timestamp"],
                                    request.body, request.headers["X-Eoffice-Signature"])
    payload = receiver.requests[-1].json()
    assert payload["type"] == "document.arrived" and payload["status_code"] == "01"
    assert payload["document"]["id"] == sent["document_id"]
    # A draft is numbered by the send that delivers it: the arrival already carries it.
    assert payload["document"]["code_number"] == sent["code_number"] is not None
    assert payload["delivery_id"] == ids.pop()

    history = client.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries",
                         headers=as_user.headers(RECEIVER)).json()
    assert history["total"] == 1
    row = history["items"][0]
    assert (row["status"], row["attempts"], row["last_status_code"]) == ("succeeded", 3, 204)


def test_sender_gets_each_status_and_receiver_gets_recall(
        env: Env, as_user: Clients, receiver: Receiver, fast_retries: None) -> None:
    client = as_user.client
    sender_rx = Receiver().start()
    try:
        _register(as_user, SENDER, sender_rx.url)
        _register(as_user, RECEIVER, receiver.url)
        sent = _send(env, as_user)
        delivery_id = sent["deliveries"][0]["id"]
        accepted = client.post(f"/api/v1/deliveries/{delivery_id}/status",
                               headers=as_user.headers(RECEIVER), json={"code": "03"})
        assert accepted.status_code == 200, accepted.text
        recall = client.post(f"/api/v1/documents/{sent['document_id']}/recall",
                             headers=as_user.headers(SENDER), json={"reason": "Sai sót số liệu"})
        assert recall.status_code == 200, recall.text
        codes = [r.json()["status_code"] for r in sender_rx.of_type("delivery.status")]
        assert codes == ["01", "03", "13"]
        assert [r.json()["status_code"] for r in receiver.of_type("document.arrived")] == ["01"]
        recalls = receiver.of_type("document.recall_requested")
        assert len(recalls) == 1 and recalls[0].json()["reason"] == "Sai sót số liệu"
        # The receiver is not told about its own status changes, the sender not about arrivals.
        assert not receiver.of_type("delivery.status")
        assert not sender_rx.of_type("document.arrived")
    finally:
        sender_rx.stop()


def test_gives_up_after_bounded_attempts_and_can_be_resent(
        env: Env, as_user: Clients, receiver: Receiver, fast_retries: None) -> None:
    from sqlmodel import select

    from eoffice.db import new_session
    from eoffice.models import AuditEvent

    client = as_user.client
    receiver.fail_first = 10_000
    endpoint = _register(as_user, RECEIVER, receiver.url)
    _send(env, as_user)
    url = f"/api/v1/webhooks/{endpoint['id']}/deliveries"
    headers = as_user.headers(RECEIVER)
    _sweep_until(lambda: client.get(url, headers=headers,
                                    params={"status": "failed"}).json()["total"] == 1)
    time.sleep(0.3)
    from eoffice.webhooks.tasks import sweep

    sweep.apply()
    assert len(receiver.requests) == 4, "max_attempts bounds the retries"
    failed = client.get(url, headers=headers, params={"status": "failed"}).json()["items"][0]
    assert failed["last_error"] == "HTTP 500" and failed["attempts"] == 4
    with new_session() as session:
        assert session.exec(select(AuditEvent).where(AuditEvent.action == "webhook.failed")
                            ).first() is not None

    receiver.fail_first = 0
    receiver.requests.clear()
    resent = client.post(f"{url}/{failed['id']}/resend", headers=headers)
    assert resent.status_code == 202, resent.text
    assert len(receiver.requests) == 1
    assert receiver.requests[0].headers["X-Eoffice-Delivery"] == failed["id"]
    again = client.get(url, headers=headers).json()["items"][0]
    assert (again["status"], again["attempts"]) == ("succeeded", 1)
    # Re-sending something still pending or unknown is refused.
    assert client.post(f"{url}/nope/resend", headers=headers).status_code == 404


def test_endpoints_are_private_to_their_agency(env: Env, as_user: Clients,
                                               receiver: Receiver) -> None:
    client = as_user.client
    endpoint = _register(as_user, RECEIVER, receiver.url)
    base = f"/api/v1/webhooks/{endpoint['id']}"
    for outsider in ("clerk.donghop", "clerk.minhlang", "admin"):
        headers = as_user.headers(outsider)
        assert client.get(base, headers=headers).status_code == 404
        assert client.get(f"{base}/deliveries", headers=headers).status_code == 404
        assert client.delete(base, headers=headers).status_code == 404
        assert client.get("/api/v1/webhooks", headers=headers).json()["total"] == 0
    for role_user in ("officer.vuthu", "leader.vuthu", "auditor"):
        assert client.get("/api/v1/webhooks",
                          headers=as_user.headers(role_user)).status_code == 403
        assert client.post("/api/v1/webhooks", headers=as_user.headers(role_user),
                           json={"url": receiver.url}).status_code == 403
    bad = client.post("/api/v1/webhooks", headers=as_user.headers(RECEIVER),
                      json={"url": "ftp://example.org/x"})
    assert bad.status_code == 422 and bad.json()["field"] == "url"
    bad = client.post("/api/v1/webhooks", headers=as_user.headers(RECEIVER),
                      json={"url": receiver.url, "events": ["document.deleted"]})
    assert bad.status_code == 422

    assert client.delete(base, headers=as_user.headers(RECEIVER)).status_code == 204
    assert client.get("/api/v1/webhooks", headers=as_user.headers(RECEIVER)).json()["total"] == 0
    _send(env, as_user)
    assert receiver.requests == [], "a deleted endpoint gets nothing"


def test_signature_freshness() -> None:
    from eoffice.webhooks.service import sign, verify_signature

    body = b'{"a":1}'
    header = sign("k", "1000", body)
    assert verify_signature("k", "1000", body, header, now=1100)
    assert not verify_signature("k", "1000", body, header, now=2000)
    assert not verify_signature("k", "1000", body + b" ", header, now=1000)
    assert not verify_signature("k", "x", body, header, now=1000)


def test_endpoints_are_read_again_only_after_one_changed(
        env: Env, as_user: Clients, receiver: Receiver) -> None:
    """Every status change asks for the endpoints of the agencies it concerns; the answer is
    cached per process behind a version that each endpoint write moves."""
    reads: list[str] = []

    def before(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        # The listener's read of the active endpoints (a push loads its own by id).
        if "WHERE webhook_endpoints.active" in statement:
            reads.append(statement)

    with listening(as_user.client, ("before_cursor_execute", before)):
        _send(env, as_user)
        reads.clear()
        _send(env, as_user)
        assert reads == [], "a send while no endpoint changed reads none"
        endpoint = _register(as_user, RECEIVER, receiver.url, events=["document.arrived"])
        reads.clear()
        _send(env, as_user)
        assert len(reads) == 1, "the first send after a change reads them once"
    history = as_user.client.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries",
                                 headers=as_user.headers(RECEIVER)).json()
    assert history["total"] == 1, "the new endpoint got the arrival that followed it"
