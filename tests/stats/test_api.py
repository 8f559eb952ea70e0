"""GET /stats/exchange through the API: counting rules, scope, bad input, exports."""

from __future__ import annotations

import csv
import io

from openpyxl import load_workbook

from tests.conftest import Clients, Env
from tests.stats.helpers import register_paper, send, stats

COMMUNE = "clerk.minhlang"
DISTRICT = "clerk.vuthu"
PROVINCE = "clerk.tinh"


def _row(body: dict, code: str) -> dict:
    return next(r for r in body["rows"] if r["agency"] == code)


def test_send_ack_paper_and_recall_move_the_figures(env: Env, as_user: Clients) -> None:
    client = as_user.client
    commune, district = as_user.headers(COMMUNE), as_user.headers(DISTRICT)
    district_code = env.user(DISTRICT)["agency_code"]
    province_code = env.user(PROVINCE)["agency_code"]
    commune_code = env.user(COMMUNE)["agency_code"]

    sent = send(client, commune, [district_code, province_code], paper=True)
    register_paper(client, commune, "outgoing", recipient_code=district_code)
    register_paper(client, district, "incoming", sender_name="Bộ Nội vụ",
                   original_ref="15/BNV-VP")
    body = stats(client, as_user.headers("auditor"))
    assert body["definition"]["vi"] and body["definition"]["en"]
    mine = _row(body, commune_code)
    assert mine["outgoing"] == {"electronic": 1, "paper": 1, "total": 2,
                                "electronic_rate": 0.5, "recalled": 0, "also_on_paper": 1}
    theirs = _row(body, district_code)
    assert theirs["incoming"]["electronic"] == 1 and theirs["incoming"]["paper"] == 1
    assert body["electronic"] == 3 and body["paper"] == 2 and body["total"] == 5
    assert body["electronic_rate"] == 3 / 5
    assert body["acknowledgement"]["acknowledged"] == 0

    delivery = next(d for d in sent["deliveries"] if d["recipient"] == district_code)
    ok = client.post(f"/api/v1/deliveries/{delivery['id']}/status", headers=district,
                     json={"code": "03"})
    assert ok.status_code == 200, ok.text
    body = stats(client, as_user.headers("auditor"))
    ack = body["acknowledgement"]
    assert ack["acknowledged"] == 1 and ack["on_time"] == 1
    assert ack["median"] == {"bucket": 0, "from_minutes": 0, "to_minutes": 1}

    recalled = client.post(f"/api/v1/documents/{sent['document_id']}/recall",
                           headers=commune, json={"reason": "Sai sót"})
    assert recalled.status_code == 200, recalled.text
    body = stats(client, as_user.headers("auditor"))
    assert _row(body, commune_code)["outgoing"]["electronic"] == 0
    assert _row(body, commune_code)["recalled"] == 1
    assert body["electronic"] == 2  # the two deliveries stay until the receivers agree (15)

    # The commune's own view covers its subtree only; the district sees its communes.
    own = stats(client, commune)
    assert [r["agency"] for r in own["rows"]] == [commune_code]
    tiers = stats(client, as_user.headers("auditor"), group_by="tier")
    assert {r["tier"] for r in tiers["rows"]} >= {"commune", "district", "province"}


def test_bad_input_is_a_clear_4xx(env: Env, as_user: Clients) -> None:
    client = as_user.client
    commune = as_user.headers(COMMUNE)
    cases = [
        ({"from": "2026-05-01", "to": "2026-04-01"}, 422, "from"),
        ({"from": "1900-01-01", "to": "2026-01-01"}, 422, "from"),
        ({"from": "2026-01-01", "to": "2999-01-01"}, 422, "to"),
        ({"from": "2026-02-30"}, 422, "from"),
        ({"period": "2026-13"}, 422, "period"),
        ({"agency": "999.99.99.H99"}, 404, "agency"),
        ({"agency": env.user("clerk.tinh")["agency_code"]}, 403, "agency"),
        ({"level": "galaxy"}, 422, "level"),
        ({"group_by": "planet"}, 422, "group_by"),
    ]
    for params, status, field in cases:
        response = client.get("/api/v1/stats/exchange", headers=commune, params=params)
        assert response.status_code == status, (params, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["field"] == field, params
        assert response.json().get("detail_vi")
    assert client.get("/api/v1/stats/exchange").status_code == 401


def test_exports_carry_the_same_rows(env: Env, as_user: Clients) -> None:
    client = as_user.client
    commune = as_user.headers(COMMUNE)
    send(client, commune, [env.user(DISTRICT)["agency_code"]])
    auditor = as_user.headers("auditor")
    body = stats(client, auditor, level="commune")
    text = client.get("/api/v1/stats/exchange.csv", headers=auditor,
                      params={"level": "commune"})
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text.content.decode("utf-8-sig"))))
    assert len(rows) == len(body["rows"]) + 1
    assert [r["agency"] for r in rows[:-1]] == [r["agency"] for r in body["rows"]]
    assert rows[-1]["agency"] == "TOTAL" and rows[-1]["electronic"] == str(body["electronic"])
    assert "Tỷ lệ trao đổi" in rows[-1]["definition"]
    book = client.get("/api/v1/stats/exchange", headers=auditor,
                      params={"level": "commune", "format": "xlsx"})
    assert book.status_code == 200
    sheet = load_workbook(io.BytesIO(book.content))["exchange"]
    values = list(sheet.iter_rows(values_only=True))
    assert len(values) == len(rows) + 1
    assert values[-1][values[0].index("electronic")] == body["electronic"]
