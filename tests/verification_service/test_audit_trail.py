"""Audit trail: `eoffice audit verify` catches edits and deletions, anchors, read/export API."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import text
from sqlmodel import Session
from typer.testing import CliRunner

from tests.conftest import Clients, Env
from tests.helpers import create_document


def _engine():  # type: ignore[no-untyped-def]
    from eoffice.db import get_engine

    return get_engine()


def _audit_verify() -> tuple[int, str]:
    from eoffice.cli import app

    result = CliRunner().invoke(app, ["audit", "verify"])
    return result.exit_code, result.output


def _make_activity(as_user: Clients, env: Env, documents: int = 3) -> None:
    for _ in range(documents):
        document = create_document(as_user.client, as_user.headers("clerk.minhlang"))
        sent = as_user.client.post(f"/api/v1/documents/{document['id']}/send",
                                   headers=as_user.headers("clerk.minhlang"),
                                   json={"recipients": [env.user("clerk.vuthu")["agency_code"]]})
        assert sent.status_code == 202


def _ids() -> list[int]:
    with _engine().connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT id FROM audit_events ORDER BY id"))]


def test_intact_chain(env: Env, as_user: Clients) -> None:
    _make_activity(as_user, env)
    code, output = _audit_verify()
    assert code == 0, output
    assert f"audit chain intact: {len(_ids())} entries" in output


def test_altered_row_is_caught(env: Env, as_user: Clients) -> None:
    _make_activity(as_user, env)
    target = _ids()[4]
    with _engine().begin() as conn:
        conn.execute(text("UPDATE audit_events SET data = :d WHERE id = :i"),
                     {"d": json.dumps({"number": "99/QĐ-UBND"}), "i": target})
    code, output = _audit_verify()
    assert code == 1
    assert f"BROKEN at entry {target}: entry content altered" in output


def test_deleted_middle_row_is_caught(env: Env, as_user: Clients) -> None:
    _make_activity(as_user, env)
    ids = _ids()
    with _engine().begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE id = :i"), {"i": ids[3]})
    code, output = _audit_verify()
    assert code == 1
    assert f"BROKEN at entry {ids[4]}: link to previous entry broken" in output
    # entries are sealed in id order here, so the chain position of the gap is its id's rank
    assert "chain positions 4..4 are missing" in output


def test_anchor_catches_truncated_tail(env: Env, as_user: Clients) -> None:
    from eoffice.audit.tasks import anchor

    _make_activity(as_user, env, documents=2)
    anchor_id = anchor()
    assert anchor_id is not None
    assert anchor() is None  # nothing new since
    code, output = _audit_verify()
    assert code == 0 and "1 timestamp anchors valid" in output, output
    ids = _ids()
    with _engine().begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE id >= :i"), {"i": ids[-2]})
    code, output = _audit_verify()
    assert code == 1
    assert f"entry {ids[-1]}, anchored by timestamp {anchor_id}, is missing" in output


def test_anchor_token_covers_the_head(env: Env, as_user: Clients) -> None:
    from eoffice.audit import service

    _make_activity(as_user, env, documents=1)
    with Session(_engine()) as session:
        head = service.chain_head(session)
        assert head is not None
        token = service.request_timestamp(head[1], service.anchor_tsa_url())
        with pytest.raises(ValueError):
            service.store_anchor(session, head[0], "00" * 32, token, "x")
        stored = service.store_anchor(session, head[0], head[1], token, "x")
        session.commit()
        # A forged token (another entry's hash swapped in) is refused by `audit verify`.
        stored.head_hash = "11" * 32
        session.add(stored)
        session.commit()
    code, output = _audit_verify()
    assert code == 1 and "differs from the hash anchored" in output


def test_unreachable_tsa_fails_visibly(env: Env, as_user: Clients) -> None:
    from pyhanko.sign.timestamps.common_utils import TimestampRequestError

    from eoffice.audit import service

    with pytest.raises((TimestampRequestError, OSError)):
        service.request_timestamp("ab" * 32, "http://127.0.0.1:9/tsa", timeout=2)


def test_read_and_export_by_scope(env: Env, as_user: Clients) -> None:
    _make_activity(as_user, env, documents=2)
    client = as_user.client
    admin = client.get("/api/v1/audit/events?limit=1000", headers=as_user.headers("admin"))
    assert admin.status_code == 200
    everything = admin.json()
    assert everything["total"] == len(_ids())
    auditor = client.get("/api/v1/audit/events?limit=1000",
                         headers=as_user.headers("auditor")).json()
    assert 0 < auditor["total"] <= everything["total"]
    sent = client.get("/api/v1/audit/events", headers=as_user.headers("admin"),
                      params={"action": "document.sent", "object_type": "document"}).json()
    assert sent["total"] == 2 and {e["action"] for e in sent["items"]} == {"document.sent"}
    empty = client.get("/api/v1/audit/events", headers=as_user.headers("admin"),
                       params={"from": "2001-01-01", "to": "2001-01-02"}).json()
    assert empty["total"] == 0
    # The first and last days a date can name are no bounds at all, not an overflow.
    unbounded = client.get("/api/v1/audit/events?limit=1000", headers=as_user.headers("admin"),
                           params={"from": "0001-01-01", "to": "9999-12-31"})
    assert unbounded.status_code == 200, unbounded.text
    assert unbounded.json()["total"] >= everything["total"]  # reading is audited too
    backwards = client.get("/api/v1/audit/events", headers=as_user.headers("admin"),
                           params={"from": "2001-01-02", "to": "2001-01-01"})
    assert backwards.status_code == 422
    for user in ("clerk.tinh", "leader.vuthu", "officer.minhlang"):
        assert client.get("/api/v1/audit/events",
                          headers=as_user.headers(user)).status_code == 403
        assert client.get("/api/v1/audit/verify",
                          headers=as_user.headers(user)).status_code == 403

    jsonl = client.get("/api/v1/audit/export?format=jsonl", headers=as_user.headers("admin"))
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [e["id"] for e in lines] == _ids() and lines[0]["prev_hash"] == "0" * 64
    csv_text = client.get("/api/v1/audit/export?format=csv",
                          headers=as_user.headers("auditor")).text
    rows = list(csv.reader(io.StringIO(csv_text)))
    assert rows[0][:3] == ["id", "at", "actor"]
    # Sign-ins since the first read are audited too: count again now.
    in_scope = client.get("/api/v1/audit/events?limit=1000",
                          headers=as_user.headers("auditor")).json()
    assert [int(r[0]) for r in rows[1:]] == [e["id"] for e in in_scope["items"]]
    outside = set(_ids()) - {e["id"] for e in in_scope["items"]}
    assert outside  # e.g. trust-store and other districts' entries

    verify = client.get("/api/v1/audit/verify", headers=as_user.headers("auditor")).json()
    assert verify["ok"] is True and verify["checked"] == len(_ids())


def test_trail_cannot_be_edited_through_the_api(env: Env, as_user: Clients) -> None:
    _make_activity(as_user, env, documents=1)
    client, admin = as_user.client, as_user.headers("admin")
    first = _ids()[0]
    assert client.get(f"/api/v1/audit/events/{first}", headers=admin).status_code == 200
    assert client.put(f"/api/v1/audit/events/{first}", headers=admin,
                      json={"data": {}}).status_code == 405
    assert client.patch(f"/api/v1/audit/events/{first}", headers=admin,
                        json={"data": {}}).status_code == 405
    assert client.delete(f"/api/v1/audit/events/{first}", headers=admin).status_code == 405
    assert client.delete("/api/v1/audit/events", headers=admin).status_code == 405
    assert client.post("/api/v1/audit/events", headers=admin, json={}).status_code == 405
