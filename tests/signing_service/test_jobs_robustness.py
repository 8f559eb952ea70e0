"""Idempotent re-runs, a crash between embedding and saving, TSA outages, a worker that does
not prepare in time, and secrets that never reach the database, the broker or a log."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from sqlalchemy import text
from sqlmodel import col, select

from eoffice import outbox
from eoffice.db import new_session
from eoffice.models import DocumentRevision, OutboxMessage
from eoffice.signing import service, tasks
from tests.conftest import Clients, Env

from .conftest import ServicePki, download, new_document, override_settings, verify
from .test_two_step import prepare, token

API = "/api/v1"


def _revisions(document_id: int) -> list[tuple[int, str, str | None]]:
    with new_session() as session:
        rows = session.exec(select(DocumentRevision)
                            .where(DocumentRevision.document_id == document_id)
                            .order_by(col(DocumentRevision.number))).all()
        return [(r.number, r.reason, r.job_id) for r in rows]


def _job(as_user: Clients, job_id: str, username: str = "leader.tinh") -> dict[str, Any]:
    response = as_user.client.get(f"{API}/jobs/{job_id}", headers=as_user.headers(username))
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_rerunning_finished_tasks_changes_nothing(env: Env, as_user: Clients,
                                                  service_pki: ServicePki) -> None:
    client = as_user.client
    document = new_document(as_user)
    signed = client.post(f"{API}/documents/{document['id']}/sign",
                         headers=as_user.headers("leader.tinh"),
                         json={"passphrase": service_pki.passphrase("leader.tinh"),
                               "level": "B-B"}).json()
    sealed = client.post(f"{API}/documents/{document['id']}/issue-signed",
                         headers=as_user.headers("clerk.tinh"), json={"level": "B-B"}).json()
    assert (signed["status"], sealed["status"]) == ("succeeded", "succeeded")
    before = _revisions(document["id"])
    assert [r[1] for r in before] == ["upload", "leader_signature", "seal"]
    # What a redelivered message does: the same task with the same job id, again.
    assert tasks.prepare(signed["job_id"]) == "skipped"
    assert tasks.complete(signed["job_id"]) == "skipped"
    assert tasks.seal(sealed["job_id"]) == "skipped"
    assert _revisions(document["id"]) == before
    assert _job(as_user, signed["job_id"])["status"] == "succeeded"


class SimulatedCrash(BaseException):
    """The worker process dying: nothing after this point runs, no handler sees it."""


def test_crash_between_embedding_and_saving(env: Env, as_user: Clients,
                                            service_pki: ServicePki, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    client = as_user.client
    leader = as_user.headers("leader.tinh")
    key, cert_pem, chain, _ = token(service_pki, "leader.tinh")
    document = new_document(as_user)
    job = prepare(as_user, document["id"], cert_pem, chain)
    signature = key.sign(base64.b64decode(job["data_to_sign"]), padding.PKCS1v15(),
                         hashes.SHA256())

    # The broker is down when the signature arrives: the outbox keeps the message.
    publish = outbox._publish
    monkeypatch.setattr(outbox, "_publish", lambda row: False)
    response = client.post(f"{API}/jobs/{job['id']}/complete", headers=leader,
                           json={"signature": base64.b64encode(signature).decode()})
    assert response.status_code == 202 and response.json()["status"] == "queued"
    monkeypatch.setattr(outbox, "_publish", publish)

    # The worker embeds the signature, stores the file, then dies before saving the revision.
    save = service._save_revision

    def crash(*args: Any, **kwargs: Any) -> str:
        raise SimulatedCrash()

    monkeypatch.setattr(service, "_save_revision", crash)
    with pytest.raises(SimulatedCrash):
        outbox.relay(older_than_seconds=0)
    assert _job(as_user, job["id"])["status"] == "running"
    assert [r[1] for r in _revisions(document["id"])] == ["upload"]

    # The message is delivered again (late ack) to a healthy worker, and once more after that.
    monkeypatch.setattr(service, "_save_revision", save)
    assert outbox.relay(older_than_seconds=0) == 1
    assert tasks.complete(job["id"]) == "skipped"
    final = _job(as_user, job["id"])
    assert final["status"] == "succeeded" and final["attempts"] == 3  # prepare + 2 completes
    assert [r[1:] for r in _revisions(document["id"])] == [("upload", None),
                                                          ("leader_signature", job["id"])]
    report = verify(download(client, leader, document["id"], tmp_path / "signed.pdf"),
                    service_pki.root)
    assert report["indication"] == "TOTAL_PASSED" and len(report["signatures"]) == 1


def test_tsa_outage_is_retried_then_fails_without_downgrade(
        env: Env, as_user: Clients, service_pki: ServicePki,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import free_port

    override_settings(monkeypatch, tsa_url=f"http://127.0.0.1:{free_port()}/tsa",
                      sign_max_retries=2)
    document = new_document(as_user)
    response = as_user.client.post(f"{API}/documents/{document['id']}/sign",
                                   headers=as_user.headers("leader.tinh"),
                                   json={"passphrase": service_pki.passphrase("leader.tinh"),
                                         "level": "B-T"})
    assert response.status_code == 202, response.text
    job = _job(as_user, response.json()["job_id"])
    assert job["status"] == "failed" and job["error_code"] == "tsa_unavailable", job
    assert job["attempts"] == 1 + 3  # prepare, then the first completion and two retries
    assert "TSA" in job["error"] and job["error_vi"]
    assert [r[1] for r in _revisions(document["id"])] == ["upload"]


def test_worker_not_preparing_in_time_is_503_with_the_job(
        env: Env, as_user: Clients, service_pki: ServicePki,
        monkeypatch: pytest.MonkeyPatch) -> None:
    override_settings(monkeypatch, sign_prepare_wait_seconds=0.3)
    publish = outbox._publish
    monkeypatch.setattr(outbox, "_publish", lambda row: False)  # no worker consumes
    document = new_document(as_user)
    response = as_user.client.post(f"{API}/documents/{document['id']}/sign",
                                   headers=as_user.headers("leader.tinh"),
                                   json={"passphrase": service_pki.passphrase("leader.tinh")})
    assert response.status_code == 503, response.text
    job_id = response.json()["job_id"]
    assert _job(as_user, job_id)["status"] == "failed"
    # The late worker finds the job given up and does nothing.
    monkeypatch.setattr(outbox, "_publish", publish)
    assert outbox.relay(older_than_seconds=0) == 1
    assert _job(as_user, job_id)["status"] == "failed"
    assert [r[1] for r in _revisions(document["id"])] == ["upload"]


def test_passphrase_never_stored_or_logged(env: Env, as_user: Clients,
                                           service_pki: ServicePki,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    passphrase = service_pki.passphrase("leader.tinh")
    wrong = "Wr0ng-Passphrase-Canary-7781"
    client = as_user.client
    headers = as_user.headers("leader.tinh")
    document = new_document(as_user)
    assert client.post(f"{API}/documents/{document['id']}/sign", headers=headers,
                       json={"passphrase": wrong}).status_code == 422
    signed = client.post(f"{API}/documents/{document['id']}/sign", headers=headers,
                         json={"passphrase": passphrase, "level": "B-B"})
    assert signed.json()["status"] == "succeeded"

    with new_session() as session:
        outbox_rows = session.exec(select(OutboxMessage)).all()
        assert {"signing.prepare", "signing.complete"} <= {r.task for r in outbox_rows}
        dumped = []
        for table in ("outbox", "jobs", "audit_events", "idempotency_keys"):
            for row in session.execute(text(f"SELECT * FROM {table}")):  # noqa: S608
                dumped.append(repr(tuple(row)))
    everything = "\n".join(dumped)
    assert len(everything) > 1000  # the rows really are there
    for secret in (passphrase, wrong):
        assert secret not in everything
        assert secret not in caplog.text
    if env.backend == "sqlite":
        raw = b"".join(p.read_bytes() for p in env.data_dir.glob("eoffice.db*"))
        assert passphrase.encode() not in raw and wrong.encode() not in raw
