"""edXML business statuses, recall/update/replace, forwarding, overdue flags, history."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlmodel import select

from tests.conftest import Clients, Env
from tests.helpers import (
    assert_problem,
    create_document,
    inbox_item,
    make_pdf,
    metadata,
    send,
    status,
)

SENDER = "clerk.tinh"
RECEIVER = "clerk.vuthu"
VUTHU = "000.00.12.H58"
DONGHUNG = "000.00.13.H58"


def _sent(as_user: Clients, recipients: list[str] | None = None, **meta: object
          ) -> tuple[dict, dict]:
    document = create_document(as_user.client, as_user.headers(SENDER), **meta)
    response = send(as_user.client, as_user.headers(SENDER), document["id"],
                    recipients or [VUTHU])
    assert response.status_code == 202, response.text
    item = inbox_item(as_user.client, as_user.headers(RECEIVER), document["id"])
    return document, item


def test_full_processing_chain(env: Env, as_user: Clients) -> None:
    client = as_user.client
    document, item = _sent(as_user)
    receiver = as_user.headers(RECEIVER)
    delivery = item["delivery_id"]
    assert status(client, receiver, delivery, "03").json()["arrival_number"] == 1
    assert_problem(status(client, receiver, delivery, "04"), 422, "assignee")
    assert_problem(status(client, receiver, delivery, "04", assignee="officer.minhlang"), 422,
                   "assignee")
    assert status(client, receiver, delivery, "04",
                  assignee="officer.vuthu").json()["status_code"] == "04"
    officer = as_user.headers("officer.vuthu")
    assert status(client, officer, delivery, "05").json()["status_code"] == "05"
    done = status(client, officer, delivery, "06").json()
    assert done["status_code"] == "06" and done["completed_at"]
    history = client.get(f"/api/v1/documents/{document['id']}/history",
                         headers=as_user.headers(SENDER)).json()
    assert [h["code"] for h in history if h["code"]] == ["01", "03", "04", "05", "06"]
    assert history[-1]["actor"] == "officer.vuthu"
    # completed is final
    assert_problem(status(client, officer, delivery, "05"), 409, "code")
    recall = client.post(f"/api/v1/documents/{document['id']}/recall",
                         headers=as_user.headers(SENDER), json={"reason": "nhầm"})
    assert_problem(recall, 409)


def test_a_nul_character_that_reaches_the_database_is_bad_input(env: Env,
                                                                 as_user: Clients) -> None:
    """A reason with U+0000 goes into a delivery event: PostgreSQL refuses such text (it
    was a 500 there); on either database it is a 422 and the delivery does not move."""
    client = as_user.client
    _, item = _sent(as_user)
    receiver = as_user.headers(RECEIVER)
    refused = status(client, receiver, item["delivery_id"], "02", reason="Sai\x00 thẩm quyền")
    if env.backend == "postgres":
        assert_problem(refused, 422)
        assert "NUL" in refused.json()["detail"]
    else:  # SQLite stores it; what matters there is that nothing fails
        assert refused.status_code == 200, refused.text
    if env.backend == "postgres":
        again = inbox_item(client, receiver, item["document_id"])
        assert again["status_code"] == "01", "nothing of the refused change stayed"


def test_transitions_that_make_no_sense(env: Env, as_user: Clients) -> None:
    client = as_user.client
    _, item = _sent(as_user)
    receiver = as_user.headers(RECEIVER)
    delivery = item["delivery_id"]
    assert_problem(status(client, receiver, delivery, "06"), 409, "code")
    assert_problem(status(client, receiver, delivery, "02"), 422, "reason")
    assert_problem(status(client, receiver, delivery, "99"), 422, "code")
    assert_problem(status(client, receiver, delivery, "1"), 422, "code")
    assert_problem(status(client, receiver, delivery, "15"), 409, "code")
    assert_problem(status(client, receiver, delivery, "13"), 403, "code")
    rejected = status(client, receiver, delivery, "02", reason="Sai thẩm quyền")
    assert rejected.json()["status_code"] == "02"
    assert_problem(status(client, receiver, delivery, "03"), 409, "code")  # accept after reject
    _, second = _sent(as_user)
    status(client, receiver, second["delivery_id"], "03")
    assert_problem(status(client, receiver, second["delivery_id"], "02", reason="x"), 409)
    # the sender cannot play the receiver
    assert_problem(status(client, as_user.headers(SENDER), second["delivery_id"], "06"), 403)


def test_recall_agreed_removes_it_from_the_inbox(env: Env, as_user: Clients) -> None:
    client = as_user.client
    document, item = _sent(as_user, [VUTHU, DONGHUNG])
    sender = as_user.headers(SENDER)
    assert_problem(client.post(f"/api/v1/documents/{document['id']}/recall", headers=sender,
                               json={"reason": ""}), 422, "reason")
    recalled = client.post(f"/api/v1/documents/{document['id']}/recall", headers=sender,
                           json={"reason": "Ban hành nhầm"})
    assert recalled.status_code == 200, recalled.text
    assert {d["status_code"] for d in recalled.json()["deliveries"]} == {"13"}
    receiver = as_user.headers(RECEIVER)
    pending = inbox_item(client, receiver, document["id"])
    assert pending["pending_request"] == "recall"
    assert_problem(status(client, receiver, item["delivery_id"], "03"), 409, "code")
    assert status(client, receiver, item["delivery_id"], "15").json()["status_code"] == "15"
    assert all(i["document_id"] != document["id"] for i in
               client.get("/api/v1/inbox", headers=receiver).json()["items"])
    assert client.get(f"/api/v1/documents/{document['id']}", headers=receiver).status_code == 404
    other = as_user.headers("clerk.donghung")
    other_item = inbox_item(client, other, document["id"])
    refused = status(client, other, other_item["delivery_id"], "16", reason="Đã triển khai")
    assert refused.json()["status_code"] == "01" and refused.json()["pending_request"] is None
    codes = {d["recipient"]: d["status_code"] for d in
             client.get(f"/api/v1/documents/{document['id']}", headers=sender)
             .json()["deliveries"]}
    assert codes == {VUTHU: "15", DONGHUNG: "01"}


def test_sender_can_recall_one_delivery_with_code_13(env: Env, as_user: Clients) -> None:
    client = as_user.client
    document, item = _sent(as_user)
    sender = as_user.headers(SENDER)
    assert_problem(status(client, sender, item["delivery_id"], "13"), 422, "reason")
    asked = status(client, sender, item["delivery_id"], "13", reason="Thay đổi nội dung")
    assert asked.status_code == 200 and asked.json()["pending_request"] == "recall"


def test_update_is_answered_by_receivers(env: Env, as_user: Clients) -> None:
    client = as_user.client
    document, item = _sent(as_user)
    sender = as_user.headers(SENDER)
    bad = client.post(f"/api/v1/documents/{document['id']}/update", headers=sender,
                      json={"reason": "sửa", "changes": {"priority": 9}})
    assert_problem(bad, 422, "priority")
    bad = client.post(f"/api/v1/documents/{document['id']}/update", headers=sender,
                      json={"reason": "sửa", "changes": {"code_number": "99"}})
    assert_problem(bad, 422, "code_number")
    updated = client.post(f"/api/v1/documents/{document['id']}/update", headers=sender,
                          json={"reason": "Đính chính hạn xử lý",
                                "changes": {"due_date": "2030-01-31", "priority": 1}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["due_date"] == "2030-01-31" and updated.json()["priority"] == 1
    receiver = as_user.headers(RECEIVER)
    detail = client.get(f"/api/v1/deliveries/{item['delivery_id']}", headers=receiver).json()
    assert detail["pending_request"] == "update"
    assert detail["pending_request_data"]["changes"]["priority"] == 1
    agreed = status(client, receiver, item["delivery_id"], "15")
    assert agreed.json()["status_code"] == "01" and agreed.json()["pending_request"] is None
    assert inbox_item(client, receiver, document["id"])["priority"] == 1


def test_replace_sends_the_new_document_and_asks_to_drop_the_old(env: Env,
                                                                   as_user: Clients) -> None:
    client = as_user.client
    old, item = _sent(as_user)
    sender = as_user.headers(SENDER)
    response = client.post(f"/api/v1/documents/{old['id']}/replace", headers=sender,
                           data={"metadata": json.dumps(metadata(subject="Bản thay thế")),
                                 "reason": "Thay thế văn bản sai sót"},
                           files={"file": ("new.pdf", make_pdf("new"), "application/pdf")})
    assert response.status_code == 202, response.text
    new = response.json()
    assert new["replaces"] == old["id"] and new["code_number"] == "02"
    receiver = as_user.headers(RECEIVER)
    assert inbox_item(client, receiver, new["id"])["status_code"] == "01"
    old_item = inbox_item(client, receiver, old["id"])
    assert old_item["pending_request"] == "replace"
    status(client, receiver, old_item["delivery_id"], "15")
    ids = {i["document_id"] for i in client.get("/api/v1/inbox", headers=receiver)
           .json()["items"]}
    assert new["id"] in ids and old["id"] not in ids


def test_forward_a_received_document(env: Env, as_user: Clients) -> None:
    client = as_user.client
    document, item = _sent(as_user)
    receiver = as_user.headers(RECEIVER)
    early = client.post(f"/api/v1/deliveries/{item['delivery_id']}/forward", headers=receiver,
                        json={"recipients": ["all-communes"]})
    assert_problem(early, 409)
    status(client, receiver, item["delivery_id"], "03")
    forwarded = client.post(f"/api/v1/deliveries/{item['delivery_id']}/forward",
                            headers=receiver,
                            json={"recipients": [f"communes-of:{VUTHU}"], "note": "Chuyển xã"})
    assert forwarded.status_code == 202, forwarded.text
    body = forwarded.json()
    assert body["forwarded_from"] == document["id"] and body["sender"] == VUTHU
    assert body["file_sha256"] == document["file_sha256"]
    assert len(body["deliveries"]) == 5
    commune = as_user.headers("clerk.minhlang")
    assert inbox_item(client, commune, body["id"])["sender"] == VUTHU


def test_overdue_and_same_day_flags(env: Env, as_user: Clients) -> None:
    from eoffice.db import new_session
    from eoffice.models import Delivery, utcnow
    from eoffice.timeutil import local_today

    client = as_user.client
    yesterday = (local_today() - timedelta(days=1)).isoformat()
    document, item = _sent(as_user, due_date=yesterday, priority=3)
    assert item["overdue"] is True and item["priority"] == 3
    receiver = as_user.headers(RECEIVER)
    assert client.get("/api/v1/inbox", headers=receiver,
                      params={"overdue": True}).json()["total"] == 1
    assert client.get("/api/v1/inbox", headers=receiver,
                      params={"overdue": False}).json()["total"] == 0
    sender = as_user.headers(SENDER)
    assert client.get("/api/v1/outbox", headers=sender,
                      params={"overdue": True}).json()["total"] == 1
    assert item["not_acknowledged_same_day"] is False
    with new_session() as session:
        row = session.exec(select(Delivery).where(Delivery.id == item["delivery_id"])).one()
        row.delivered_at = utcnow() - timedelta(days=2)
        session.add(row)
        session.commit()
    assert inbox_item(client, receiver, document["id"])["not_acknowledged_same_day"] is True
    status(client, receiver, item["delivery_id"], "03")
    status(client, receiver, item["delivery_id"], "06")
    after = client.get(f"/api/v1/deliveries/{item['delivery_id']}", headers=receiver).json()
    assert after["overdue"] is False and after["not_acknowledged_same_day"] is True


def test_inbox_filters_and_paging(env: Env, as_user: Clients) -> None:
    client = as_user.client
    for subject in ("Kế hoạch phòng chống lụt bão", "Báo cáo tài chính", "Giấy mời họp"):
        _sent(as_user, subject=subject)
    receiver = as_user.headers(RECEIVER)
    page = client.get("/api/v1/inbox", headers=receiver, params={"limit": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    found = client.get("/api/v1/inbox", headers=receiver, params={"q": "lụt bão"}).json()
    assert found["total"] == 1
    assert client.get("/api/v1/inbox", headers=receiver,
                      params={"status": "03"}).json()["total"] == 0
    assert_problem(client.get("/api/v1/inbox", headers=receiver, params={"limit": 0}), 422,
                   "limit")
    assert_problem(client.get("/api/v1/inbox", headers=receiver, params={"status": "x"}), 422,
                   "status")
    assert_problem(client.get("/api/v1/inbox", headers=as_user.headers("admin")), 403)


def test_inbox_urgent_unread_sender_and_dates(env: Env, as_user: Clients) -> None:
    from eoffice.timeutil import local_today

    client = as_user.client
    urgent_doc, _ = _sent(as_user, priority=2, subject="Hỏa tốc")
    normal_doc, _ = _sent(as_user, subject="Thường")
    receiver = as_user.headers(RECEIVER)

    def ids(**params: object) -> set[int]:
        page = client.get("/api/v1/inbox", headers=receiver, params=params)
        assert page.status_code == 200, page.text
        return {i["document_id"] for i in page.json()["items"]}

    assert ids(urgent=True) == {urgent_doc["id"]}
    client.get(f"/api/v1/documents/{urgent_doc['id']}", headers=receiver)  # read it
    assert ids(unread=True) == {normal_doc["id"]}
    assert ids(sender="000.00.00.H58") == {urgent_doc["id"], normal_doc["id"]}
    assert ids(sender="000.00.11.H58") == set()
    today = local_today()
    assert ids(arrived_from=today.isoformat(), arrived_to=today.isoformat()) == {
        urgent_doc["id"], normal_doc["id"]}
    assert ids(arrived_from=(today + timedelta(days=1)).isoformat()) == set()
    # The first and last days a date can name are no bounds, not an overflow (a 500 once).
    assert ids(arrived_from="0001-01-01", arrived_to="9999-12-31") == {
        urgent_doc["id"], normal_doc["id"]}
    assert_problem(client.get("/api/v1/inbox", headers=receiver, params={
        "arrived_from": "2026-02-02", "arrived_to": "2026-01-01"}), 422, "arrived_from")
    assert_problem(client.get("/api/v1/inbox", headers=receiver,
                              params={"arrived_from": "02/02/2026"}), 422, "arrived_from")


def test_deliveries_left_queued_are_fanned_out_again(env: Env, as_user: Clients) -> None:
    """A worker node that dies holding the fan-out task: the sweep re-runs it, once."""
    from sqlalchemy import update

    from eoffice.db import new_session
    from eoffice.housekeeping_tasks import requeue_stuck_deliveries
    from eoffice.models import Delivery, utcnow

    client = as_user.client
    document, item = _sent(as_user, [VUTHU, DONGHUNG])
    with new_session() as session:  # as if the worker died before delivering
        session.exec(update(Delivery).where(Delivery.document_id == document["id"])  # type: ignore[call-overload]
                     .values(transport_status="queued", status_code=None,
                             created_at=utcnow() - timedelta(minutes=10)))
        session.commit()
    assert client.get("/api/v1/inbox", headers=as_user.headers(RECEIVER)).json()["total"] == 0
    assert requeue_stuck_deliveries() == 1
    assert inbox_item(client, as_user.headers(RECEIVER), document["id"])["status_code"] == "01"
    deliveries = client.get(f"/api/v1/documents/{document['id']}",
                            headers=as_user.headers(SENDER)).json()["deliveries"]
    assert len(deliveries) == 2 and {d["transport_status"] for d in deliveries} == {"delivered"}
    assert requeue_stuck_deliveries() == 0
