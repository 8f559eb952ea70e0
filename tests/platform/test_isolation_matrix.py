"""Every role x every /api/v1 endpoint (read from the OpenAPI schema, so new endpoints are
covered automatically) x objects inside and outside the caller's scope: zero leaks."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Env
from tests.helpers import create_document, login, make_pdf, metadata
from tests.platform.receiver import Receiver

SENDER, RECEIVER = "clerk.minhlang", "clerk.vuthu"
# Agencies that neither sent nor received the document, in every role, and an auditor whose
# subtree (another district) does not contain either party.
OUTSIDERS = ["clerk.donghop", "leader.donghop", "officer.donghop", "clerk.snv", "leader.stc",
             "officer.tinh", "admin", "auditor.donghung"]
OBJECT_PARAMS = {"document_id", "delivery_id", "endpoint_id", "event_id", "attachment_id"}
DENIED = {401, 403, 404, 405, 409, 422}
# Access granted on purpose: the audit trail is read by admins across all agencies
# (eoffice/audit/api.py). Anything added here is a policy decision, not a test convenience.
GRANTED = {("admin", "/api/v1/audit/events"), ("admin", "/api/v1/audit/events/{event_id}"),
           ("admin", "/api/v1/audit/export")}


def _out_of_scope_auditor(env: Env) -> str:
    from sqlmodel import select

    from eoffice.db import new_session
    from eoffice.models import Agency, User
    from eoffice.users.service import hash_password

    with new_session() as session:
        code = env.user("clerk.donghung")["agency_code"]
        district = session.exec(select(Agency).where(Agency.code == code)).one()
        session.add(User(username="auditor.donghung", password_hash=hash_password("Audit#2026x"),
                         full_name="Thanh tra huyện", role="auditor", agency_id=district.id,
                         scope_agency_id=district.id))
        session.commit()
    return "Audit#2026x"


def _objects(env: Env, client: TestClient, marker: str) -> dict[str, Any]:
    sender = login(client, SENDER, env.password(SENDER))
    receiver = login(client, RECEIVER, env.password(RECEIVER))
    created = client.post("/api/v1/documents", headers=sender,
                          data={"metadata": json.dumps(metadata(subject=marker))},
                          files={"file": ("a.pdf", make_pdf(), "application/pdf"),
                                 "attachments": ("phu-luc.pdf", make_pdf("phụ lục"),
                                                 "application/pdf")})
    assert created.status_code == 201, created.text
    document = created.json()
    sent = client.post(f"/api/v1/documents/{document['id']}/send", headers=sender,
                       json={"recipients": [env.user(RECEIVER)["agency_code"]]})
    assert sent.status_code == 202, sent.text
    rx = Receiver().start()
    endpoint = client.post("/api/v1/webhooks", headers=receiver,
                           json={"url": rx.url + "/" + marker}).json()
    from sqlmodel import col, select

    from eoffice.db import new_session
    from eoffice.models import AuditEvent, WebhookDelivery

    with new_session() as session:
        hook_delivery = session.exec(select(WebhookDelivery.id)).first()
        event_id = session.exec(select(AuditEvent.id).where(
            AuditEvent.object_type == "document").order_by(col(AuditEvent.id).desc())).first()
    rx.stop()
    return {"document_id": document["id"], "delivery_id": sent.json()["deliveries"][0]["id"],
            "endpoint_id": endpoint["id"], "event_id": event_id,
            "attachment_id": (document.get("attachments") or [{"id": 1}])[0]["id"],
            "hook_delivery_id": hook_delivery, "code": env.user(SENDER)["agency_code"],
            "direction": "outgoing", "fingerprint": "0" * 64, "job_id": "0" * 32,
            "report_ref": "1", "secret": endpoint["secret"]}


def _fill(path: str, objects: dict[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "delivery_id" and path.startswith("/api/v1/webhooks"):
            return str(objects["hook_delivery_id"])
        return str(objects.get(name, 1))

    return re.sub(r"{(\w+)}", value, path)


def test_no_endpoint_leaks_outside_the_callers_scope(sqlite_env: Env) -> None:
    from eoffice.app import create_app

    marker = "MẬT-ĐỘ-MARKER-7Q2Z"
    app = create_app()
    auditor_password = None
    with TestClient(app) as client:
        objects = _objects(sqlite_env, client, marker)
        auditor_password = _out_of_scope_auditor(sqlite_env)
        paths = app.openapi()["paths"]
        operations = [(method.upper(), path) for path, ops in paths.items()
                      if path.startswith("/api/v1") and path != "/api/v1/auth/token"
                      for method in ops]
        assert len(operations) >= 30
        leaks: list[str] = []
        checked = 0
        for username in OUTSIDERS:
            password = (auditor_password if username == "auditor.donghung"
                        else sqlite_env.password(username))
            headers = login(client, username, password)
            for method, path in operations:
                if (username, path) in GRANTED:
                    continue
                url = _fill(path, objects)
                kwargs: dict[str, Any] = {"headers": headers}
                if method in ("POST", "PUT", "PATCH"):
                    kwargs["json"] = {}
                response = client.request(method, url, **kwargs)
                checked += 1
                body = response.text
                where = f"{username} {method} {url} -> {response.status_code}"
                if response.status_code >= 500:
                    leaks.append(f"{where}: server error {body[:200]}")
                if marker in body or objects["secret"] in body:
                    leaks.append(f"{where}: exposes the document or webhook")
                params = set(re.findall(r"{(\w+)}", path))
                if params & OBJECT_PARAMS and response.status_code not in DENIED:
                    leaks.append(f"{where}: object outside the caller's scope answered")
                if response.status_code in (403, 404):
                    assert response.headers["content-type"].startswith(
                        "application/problem+json"), where
        assert checked == len(OUTSIDERS) * len(operations) - len(GRANTED)
        assert leaks == [], "\n".join(leaks)

        # Control: the same requests succeed for the parties, so the matrix can fail.
        sender = login(client, SENDER, sqlite_env.password(SENDER))
        receiver = login(client, RECEIVER, sqlite_env.password(RECEIVER))
        mine = client.get(f"/api/v1/documents/{objects['document_id']}", headers=sender)
        assert mine.status_code == 200 and marker in mine.text
        theirs = client.get(f"/api/v1/deliveries/{objects['delivery_id']}", headers=receiver)
        assert theirs.status_code == 200
        assert client.get(f"/api/v1/webhooks/{objects['endpoint_id']}",
                          headers=receiver).status_code == 200, "outsiders deleted nothing"
        inbox = client.get("/api/v1/inbox", headers=receiver).json()
        assert inbox["items"][0]["status_code"] == "01", "outsiders changed nothing"


@pytest.mark.parametrize("username", ["clerk.minhlang", "auditor"])
def test_unauthenticated_and_scoped_controls(sqlite_env: Env, username: str) -> None:
    from eoffice.app import create_app

    with TestClient(create_app()) as client:
        headers = login(client, username, sqlite_env.password(username))
        document = create_document(client, login(client, SENDER, sqlite_env.password(SENDER)))
        # An auditor of the province reads the commune's document; nobody anonymous does.
        assert client.get(f"/api/v1/documents/{document['id']}",
                          headers=headers).status_code == 200
        assert client.get(f"/api/v1/documents/{document['id']}").status_code == 401
