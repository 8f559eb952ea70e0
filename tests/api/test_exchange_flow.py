"""The core exchange through the API: send, receive, statuses at the sender, isolation."""

from __future__ import annotations

from tests.conftest import Clients, Env
from tests.helpers import create_document

COMMUNE = "clerk.minhlang"      # xã Minh Lãng, huyện Vũ Thư
DISTRICT = "clerk.vuthu"
PROVINCE = "clerk.tinh"
OUTSIDER = "clerk.donghop"      # a commune of another district, not a receiver


def test_commune_sends_to_district_and_province(env: Env, as_user: Clients) -> None:
    client = as_user.client
    sender = as_user.headers(COMMUNE)
    district_code = env.user(DISTRICT)["agency_code"]
    province_code = env.user(PROVINCE)["agency_code"]

    document = create_document(client, sender)
    assert document["status"] == "draft" and document["code_number"] is None

    sent = client.post(f"/api/v1/documents/{document['id']}/send", headers=sender,
                       json={"recipients": [district_code, province_code]})
    assert sent.status_code == 202, sent.text
    body = sent.json()
    assert body["code_number"] == "01"
    assert body["code_notation"] == "UBND-VP"
    assert {d["recipient"] for d in body["deliveries"]} == {district_code, province_code}

    for receiver in (DISTRICT, PROVINCE):
        headers = as_user.headers(receiver)
        inbox = client.get("/api/v1/inbox", headers=headers).json()
        assert inbox["total"] == 1
        item = inbox["items"][0]
        assert item["document_id"] == document["id"]
        assert item["sender"] == env.user(COMMUNE)["agency_code"]
        assert item["status_code"] == "01" and item["overdue"] is False
        accepted = client.post(f"/api/v1/deliveries/{item['delivery_id']}/status",
                               headers=headers, json={"code": "03"})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["arrival_number"] == 1

    readback = client.get(f"/api/v1/documents/{document['id']}", headers=sender).json()
    assert [d["status_code"] for d in readback["deliveries"]] == ["03", "03"]
    assert all(d["transport_status"] == "delivered" for d in readback["deliveries"])
    outbox = client.get("/api/v1/outbox", headers=sender).json()
    assert outbox["total"] == 1
    assert {d["status_code"] for d in outbox["items"][0]["deliveries"]} == {"03"}

    # An agency outside the exchange can neither see nor touch it.
    outsider = as_user.headers(OUTSIDER)
    assert client.get(f"/api/v1/documents/{document['id']}", headers=outsider).status_code == 404
    assert client.get(f"/api/v1/documents/{document['id']}/file",
                      headers=outsider).status_code == 404
    delivery_id = readback["deliveries"][0]["id"]
    touched = client.post(f"/api/v1/deliveries/{delivery_id}/status", headers=outsider,
                          json={"code": "06"})
    assert touched.status_code == 404
    assert touched.headers["content-type"].startswith("application/problem+json")
    assert client.get("/api/v1/inbox", headers=outsider).json()["total"] == 0
