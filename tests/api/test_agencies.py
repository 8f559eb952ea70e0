"""Agencies: codes, directory import, groups, mergers and routing rules."""

from __future__ import annotations

import json

import pytest

from eoffice.agencies.service import normalize_code
from eoffice.errors import ValidationFailed
from tests.conftest import Clients, Env
from tests.helpers import assert_problem, create_document, inbox_item, send

VUTHU = "000.00.12.H58"


@pytest.mark.parametrize("code", ["000.00.00.H49", "000.01.01.h59", " 000.00.01.G22 ",
                                  "H49.12.34.567.89", "A" * 35, "1234567890"])
def test_valid_codes(code: str) -> None:
    assert normalize_code(code) == code.strip().upper()


@pytest.mark.parametrize("code", ["000.00.00.49H", "00.000.00.H49", "", "A" * 36,
                                  "000..00.H49", "H49-01", "mã.cơ.quan", ".000.00.H49",
                                  "000.00.00.H9"])
def test_invalid_codes(code: str) -> None:
    with pytest.raises(ValidationFailed):
        normalize_code(code)


def test_demo_province_shape(env: Env, as_user: Clients) -> None:
    agencies = as_user.client.get("/api/v1/agencies",
                                  headers=as_user.headers("clerk.tinh")).json()
    levels = [a["level"] for a in agencies]
    assert levels.count("province") == 1
    assert levels.count("department") >= 6
    assert levels.count("district") >= 8
    assert levels.count("commune") >= 35
    communes = as_user.client.get("/api/v1/agencies", headers=as_user.headers("clerk.tinh"),
                                  params={"parent": VUTHU}).json()
    assert {a["level"] for a in communes} == {"commune"} and len(communes) == 5
    found = as_user.client.get("/api/v1/agencies", headers=as_user.headers("clerk.tinh"),
                               params={"q": "minh lãng"}).json()
    assert [a["code"] for a in found] == ["000.01.12.H58"]
    roles = {(u["role"]) for u in env.users}
    assert roles == {"clerk", "leader", "officer", "auditor", "admin"}


def test_groups_expand_to_one_delivery_per_receiver(env: Env, as_user: Clients) -> None:
    headers = as_user.headers("clerk.tinh")
    document = create_document(as_user.client, headers)
    response = send(as_user.client, headers, document["id"],
                    [f"communes-of:{VUTHU}", "all-departments", VUTHU, "000.01.12.H58"])
    assert response.status_code == 202, response.text
    recipients = [d["recipient"] for d in response.json()["deliveries"]]
    assert len(recipients) == len(set(recipients)) == 5 + 7 + 1
    again = send(as_user.client, headers, document["id"], ["all-districts"])
    assert len(again.json()["deliveries"]) == 13 + 7  # Vũ Thư was already a receiver
    commune = create_document(as_user.client, as_user.headers("clerk.minhlang"))
    everyone = send(as_user.client, as_user.headers("clerk.minhlang"), commune["id"],
                    ["all-communes"])
    assert len(everyone.json()["deliveries"]) == 39  # every commune but the sender


@pytest.mark.parametrize(("recipients", "status_code"), [
    (["000.99.99.H58"], 422), (["all-provinces"], 422), (["communes-of:000.00.99.H58"], 422),
    ([], 422), ([""], 422), ([42], 422), (["000.00.00.H58"], 422),
])
def test_bad_recipients(env: Env, as_user: Clients, recipients: list[object],
                        status_code: int) -> None:
    headers = as_user.headers("clerk.tinh")
    document = create_document(as_user.client, headers)
    response = as_user.client.post(f"/api/v1/documents/{document['id']}/send",
                                   headers=headers, json={"recipients": recipients})
    assert_problem(response, status_code, "recipients")
    assert as_user.client.get(f"/api/v1/documents/{document['id']}",
                              headers=headers).json()["status"] == "draft"


DIRECTORY_CSV = """code,name,level,abbreviation,parent_code,successor_code
000.00.00.H99,Ủy ban nhân dân tỉnh Thử Nghiệm,province,UBND,,
000.00.11.H99,Ủy ban nhân dân huyện Một,district,UBND,000.00.00.H99,
000.01.11.H99,Ủy ban nhân dân xã Một,commune,UBND,000.00.11.H99,
"""


def test_import_directory_and_routing_between_provinces(env: Env, as_user: Clients) -> None:
    client = as_user.client
    admin = as_user.headers("admin")
    assert_problem(client.post("/api/v1/agencies/import", headers=as_user.headers("clerk.tinh"),
                               files={"file": ("a.csv", DIRECTORY_CSV, "text/csv")}), 403)
    imported = client.post("/api/v1/agencies/import", headers=admin,
                           files={"file": ("directory.csv", DIRECTORY_CSV, "text/csv")})
    assert imported.json() == {"created": 3, "updated": 0}, imported.text
    again = client.post("/api/v1/agencies/import", headers=admin,
                        files={"file": ("directory.json", json.dumps(
                            [{"code": "000.00.00.H99", "name": "UBND tỉnh Thử Nghiệm (mới)",
                              "level": "province"}]), "application/json")})
    assert again.json() == {"created": 0, "updated": 1}
    # default routing: within the province (and to central bodies) only
    headers = as_user.headers("clerk.tinh")
    document = create_document(client, headers)
    assert_problem(send(client, headers, document["id"], ["000.00.11.H99"]), 403, "recipients")


@pytest.mark.parametrize(("content", "field"), [
    ("code,name,level\n000.00.00.H9,Bad,province\n", "code"),
    ("code,name,level\n000.00.00.H98,Tên,planet\n", "level"),
    ("code,name,level,parent_code\n000.00.00.H98,Tên,district,000.00.00.H96\n", "parent_code"),
    ("[{\"code\": 1", "file"),
])
def test_import_refuses_bad_rows_and_stores_nothing(env: Env, as_user: Clients, content: str,
                                                    field: str) -> None:
    admin = as_user.headers("admin")
    before = len(as_user.client.get("/api/v1/agencies", headers=admin).json())
    good_then_bad = content
    if content.startswith("code"):
        header, rest = content.split("\n", 1)
        good = ",".join(["000.00.00.H97", "Tốt", "province"] + [""] * (header.count(",") - 2))
        good_then_bad = f"{header}\n{good}\n{rest}"
    response = as_user.client.post("/api/v1/agencies/import", headers=admin,
                                   files={"file": ("d.csv", good_then_bad, "text/csv")})
    assert_problem(response, 422, field)
    assert len(as_user.client.get("/api/v1/agencies", headers=admin).json()) == before


def test_merged_agency_forwards_to_successor(env: Env, as_user: Clients) -> None:
    client = as_user.client
    province = as_user.headers("clerk.tinh")
    old_doc = create_document(client, province)
    send(client, province, old_doc["id"], ["000.01.12.H58"])  # xã Minh Lãng
    merged = client.post("/api/v1/agencies/000.01.12.H58/merge", headers=as_user.headers("admin"),
                         json={"successor": "000.02.12.H58", "merged_at": "2025-07-01"})
    assert merged.status_code == 200, merged.text
    assert merged.json()["successor"] == "000.02.12.H58" and not merged.json()["active"]
    new_doc = create_document(client, province)
    response = send(client, province, new_doc["id"], ["000.01.12.H58"])
    delivery = response.json()["deliveries"][0]
    assert delivery["recipient"] == "000.02.12.H58"
    assert delivery["addressed_to"] == "000.01.12.H58"
    # the old document keeps the old identity
    old = client.get(f"/api/v1/documents/{old_doc['id']}", headers=province).json()
    assert old["deliveries"][0]["recipient"] == "000.01.12.H58"
    successor = as_user.headers("clerk.tamquang")
    assert inbox_item(client, successor, new_doc["id"])["status_code"] == "01"
    assert_problem(client.post("/api/v1/agencies/000.01.12.H58/merge",
                               headers=as_user.headers("admin"),
                               json={"successor": "000.01.12.H58"}), 422)
