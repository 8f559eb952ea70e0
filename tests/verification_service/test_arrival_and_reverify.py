"""Arrival check (verification.verify_delivery), verdict on deliveries, re-verification."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session, col, select

from eoffice.models import Delivery, VerificationReport
from tests.conftest import Clients, Env
from tests.helpers import create_document
from tests.verification_service.conftest import DevPki
from tests.verification_service.helpers import signed_pdf, tampered

SENDER = "clerk.minhlang"
RECEIVER = "clerk.vuthu"


def _send(env: Env, as_user: Clients, pdf: bytes) -> dict:  # type: ignore[type-arg]
    client = as_user.client
    document = create_document(client, as_user.headers(SENDER), pdf=pdf)
    sent = client.post(f"/api/v1/documents/{document['id']}/send",
                       headers=as_user.headers(SENDER),
                       json={"recipients": [env.user(RECEIVER)["agency_code"]]})
    assert sent.status_code == 202, sent.text
    delivery_id = sent.json()["deliveries"][0]["id"]
    response = client.get(f"/api/v1/deliveries/{delivery_id}", headers=as_user.headers(RECEIVER))
    assert response.status_code == 200
    return response.json()


def _engine():  # type: ignore[no-untyped-def]
    from eoffice.db import get_engine

    return get_engine()


def test_valid_document_is_checked_on_arrival(env: Env, as_user: Clients, dev_pki: DevPki,
                                              tmp_path: Path) -> None:
    delivery = _send(env, as_user, signed_pdf(dev_pki, tmp_path))
    assert delivery["verification_indication"] == "TOTAL_PASSED"
    summary = delivery["verification"]
    assert summary["indication"] == "TOTAL_PASSED" and summary["report_id"]
    assert delivery["suggested_rejection_reason"] is None
    inbox = as_user.client.get("/api/v1/inbox", headers=as_user.headers(RECEIVER)).json()
    assert inbox["items"][0]["verification"]["report_id"] == summary["report_id"]
    # The receiver (who can see the document) reads the stored report.
    report = as_user.client.get(summary["report_url"], headers=as_user.headers(RECEIVER))
    assert report.status_code == 200 and report.json()["purpose"] == "arrival"
    assert report.json()["decree30"]["conformant"] is False  # one signature, no seal
    # Outbox may publish twice: the task reuses the stored report.
    from eoffice.verification.tasks import verify_delivery

    assert verify_delivery(delivery["id"]) is None
    with Session(_engine()) as session:
        assert len(session.exec(select(VerificationReport)).all()) == 1
    accepted = as_user.client.post(f"/api/v1/deliveries/{delivery['id']}/status",
                                   headers=as_user.headers(RECEIVER), json={"code": "03"})
    assert accepted.status_code == 200


def test_broken_signature_blocks_acceptance(env: Env, as_user: Clients, dev_pki: DevPki,
                                            tmp_path: Path) -> None:
    delivery = _send(env, as_user, tampered(signed_pdf(dev_pki, tmp_path)))
    assert delivery["verification_indication"] == "TOTAL_FAILED"
    reason = delivery["suggested_rejection_reason"]
    assert reason and "không hợp lệ" in reason and "invalid" in reason
    headers = as_user.headers(RECEIVER)
    accept = as_user.client.post(f"/api/v1/deliveries/{delivery['id']}/status",
                                 headers=headers, json={"code": "03"})
    assert accept.status_code == 409
    reject = as_user.client.post(f"/api/v1/deliveries/{delivery['id']}/status",
                                 headers=headers, json={"code": "02", "reason": reason})
    assert reject.status_code == 200 and reject.json()["status_code"] == "02"


def test_reverify_after_trust_store_change(env: Env, as_user: Clients, dev_pki: DevPki,
                                           tmp_path: Path) -> None:
    from eoffice.verification.tasks import reverify

    delivery = _send(env, as_user, signed_pdf(dev_pki, tmp_path))
    first_report = delivery["verification"]["report_id"]
    assert reverify() == 0  # nothing stale yet

    # The dev root leaves the store (e.g. an operator distrusts it).
    admin = as_user.headers("admin")
    anchors = as_user.client.get("/api/v1/trust/anchors", headers=admin).json()["items"]
    (dev_root,) = [a for a in anchors if a["source"] == "dev-pki"]
    from eoffice.trust.service import DEV_PKI_SOURCE

    assert dev_root["source"] == DEV_PKI_SOURCE
    removed = as_user.client.delete(f"/api/v1/trust/anchors/{dev_root['fingerprint']}",
                                    headers=admin)
    assert removed.status_code == 200 and removed.json()["active"] is False

    assert reverify() == 1
    with Session(_engine()) as session:
        row = session.get(Delivery, delivery["id"])
        assert row is not None and row.verification_indication == "INDETERMINATE"
        reports = session.exec(select(VerificationReport)
                               .order_by(col(VerificationReport.id))).all()
        assert [r.purpose for r in reports] == ["arrival", "reverify"]
        assert reports[0].id == first_report and reports[0].indication == "TOTAL_PASSED"
        assert reports[1].trust_state != reports[0].trust_state
        assert row.verification_report_id == reports[1].id
    assert reverify() == 0  # up to date now

    # A later sync (new process, same files) must not undo the administrator's removal.
    from eoffice.trust.service import forget_sync_cache, sync

    forget_sync_cache()
    with Session(_engine()) as session:
        result = sync(session)
        session.commit()
    assert result.added == [] and "not re-added" in result.errors[0]
