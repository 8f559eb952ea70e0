"""Documents: metadata rules, files, numbering, and nothing partial on bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import select

from tests.conftest import Clients, Env
from tests.helpers import (
    assert_problem,
    create_document,
    make_pdf,
    metadata,
    override_settings,
    send,
)

CLERK = "clerk.minhlang"


def _post(client: TestClient, headers: dict[str, str], meta: object, content: bytes | None,
          name: str = "van-ban.pdf") -> object:
    files = {"file": (name, content, "application/pdf")} if content is not None else None
    raw = meta if isinstance(meta, str) else json.dumps(meta)
    return client.post("/api/v1/documents", headers=headers, data={"metadata": raw},
                       files=files)


def _counts(env: Env) -> tuple[int, int]:
    from eoffice.db import new_session
    from eoffice.models import Blob, Document

    with new_session() as session:
        return (session.exec(select(func.count()).select_from(Document)).one(),
                session.exec(select(func.count()).select_from(Blob)).one())


@pytest.mark.parametrize(("meta", "field"), [
    (metadata(type_name="Sắc lệnh"), "metadata.type_name"),
    (metadata(subject="x" * 501), "metadata.subject"),
    (metadata(subject=""), "metadata.subject"),
    (metadata(priority=5), "metadata.priority"),
    (metadata(priority="urgent"), "metadata.priority"),
    (metadata(due_date="31/12/2026"), "metadata.due_date"),
    (metadata(signer_info={"competence": "XX.", "position": "", "full_name": ""}),
     "metadata.signer_info.competence"),
    (metadata(page_amount=0), "metadata.page_amount"),
    (metadata(unknown_key=1), "metadata.unknown_key"),
    ("{not json", "metadata"),
    ("[1, 2]", "metadata"),
])
def test_bad_metadata_is_refused_with_the_field_named(env: Env, as_user: Clients, meta: object,
                                                      field: str) -> None:
    before = _counts(env)
    response = _post(as_user.client, as_user.headers(CLERK), meta, make_pdf())
    assert_problem(response, 422, field)
    assert _counts(env) == before


@pytest.mark.parametrize("level", ["mật", "Tối mật", "tuyệt mật", "secret"])
def test_secret_documents_are_refused(env: Env, as_user: Clients, level: str) -> None:
    response = _post(as_user.client, as_user.headers(CLERK),
                     metadata(confidentiality=level), make_pdf())
    body = assert_problem(response, 422, "confidentiality")
    assert "28/2018" in body["detail"]
    assert _counts(env) == (0, 0)


def test_non_pdf_posing_as_pdf_is_refused_by_content(env: Env, as_user: Clients) -> None:
    response = _post(as_user.client, as_user.headers(CLERK), metadata(),
                     b"PK\x03\x04 this is a zip file", name="looks-like.pdf")
    assert_problem(response, 415, "file")
    assert _counts(env) == (0, 0)


def test_missing_file_is_refused(env: Env, as_user: Clients) -> None:
    response = _post(as_user.client, as_user.headers(CLERK), metadata(), None)
    assert_problem(response, 422, "file")


def test_oversize_upload_is_refused_and_nothing_kept(env: Env, as_user: Clients,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    override_settings(monkeypatch, max_upload_mb=1)
    big = make_pdf() + b"%" + b"0" * (1024 * 1024 + 10)
    response = _post(as_user.client, as_user.headers(CLERK), metadata(), big)
    assert_problem(response, 413)
    assert _counts(env) == (0, 0)
    leftovers = [p for p in (env.data_dir / "blobs").rglob("*") if p.is_file()]
    assert leftovers == []


def test_files_are_stored_once_by_sha256(env: Env, as_user: Clients) -> None:
    headers = as_user.headers(CLERK)
    pdf = make_pdf("same content")
    first = create_document(as_user.client, headers, pdf)
    second = create_document(as_user.client, headers, pdf)
    assert first["file_sha256"] == second["file_sha256"]
    stored = [p for p in (env.data_dir / "blobs").rglob(first["file_sha256"])]
    assert len(stored) == 1
    assert _counts(env) == (2, 1)
    download = as_user.client.get(f"/api/v1/documents/{first['id']}/file", headers=headers)
    assert download.status_code == 200 and download.content == pdf


def test_attachments_are_kept(env: Env, as_user: Clients) -> None:
    headers = as_user.headers(CLERK)
    response = as_user.client.post(
        "/api/v1/documents", headers=headers, data={"metadata": json.dumps(metadata())},
        files=[("file", ("main.pdf", make_pdf(), "application/pdf")),
               ("attachments", ("phu-luc.pdf", make_pdf("phu luc"), "application/pdf")),
               ("attachments", ("bang.xlsx", b"xlsx-bytes", "application/vnd.ms-excel"))])
    assert response.status_code == 201, response.text
    body = response.json()
    assert [a["file_name"] for a in body["attachments"]] == ["phu-luc.pdf", "bang.xlsx"]
    got = as_user.client.get(
        f"/api/v1/documents/{body['id']}/attachments/{body['attachments'][1]['id']}",
        headers=headers)
    assert got.content == b"xlsx-bytes"
    # The create response (built from what was written) says what a later read says.
    again = as_user.client.get(f"/api/v1/documents/{body['id']}", headers=headers).json()
    assert body["attachments"] == again["attachments"]
    assert body["revisions"] == again["revisions"]
    assert [r["number"] for r in body["revisions"]] == [1]


def test_numbers_notation_and_yearly_restart(env: Env, as_user: Clients) -> None:
    headers = as_user.headers("clerk.tinh")
    decision = create_document(as_user.client, headers, type_name="quyết định")
    letter = create_document(as_user.client, headers, type_name="Công văn")
    assert decision["type_name"] == "Quyết định"
    a = as_user.client.post(f"/api/v1/documents/{decision['id']}/issue", headers=headers).json()
    b = as_user.client.post(f"/api/v1/documents/{letter['id']}/issue", headers=headers).json()
    assert (a["code_number"], a["code_notation"]) == ("01", "QĐ-UBND")
    assert (b["code_number"], b["code_notation"]) == ("02", "UBND-VP")
    assert a["number_notation"] == "01/QĐ-UBND"
    again = as_user.client.post(f"/api/v1/documents/{letter['id']}/issue", headers=headers)
    assert_problem(again, 409)

    from eoffice.db import new_session
    from eoffice.documents.service import next_number

    agency_id = _agency_id(env, "000.00.00.H58")
    with new_session() as session:
        numbers = [next_number(session, agency_id, "outgoing", 2027) for _ in range(10)]
        session.commit()
    assert numbers == list(range(1, 11))  # a new year starts again at 01
    created = create_document(as_user.client, headers)
    issued = as_user.client.post(f"/api/v1/documents/{created['id']}/issue",
                                 headers=headers).json()
    assert issued["code_number"] == "03"  # this year's register is untouched


def _agency_id(env: Env, code: str) -> int:
    from eoffice.db import new_session
    from eoffice.models import Agency

    with new_session() as session:
        agency = session.exec(select(Agency).where(Agency.code == code)).one()
        assert agency.id is not None
        return agency.id


def test_officer_may_draft_but_not_send(env: Env, as_user: Clients) -> None:
    headers = as_user.headers("officer.minhlang")
    document = create_document(as_user.client, headers)
    response = send(as_user.client, headers, document["id"], ["000.00.11.H58"])
    assert_problem(response, 403)


def test_reply_links_response_for(env: Env, as_user: Clients) -> None:
    client = as_user.client
    province = as_user.headers("clerk.tinh")
    original = create_document(client, province, type_name="Kế hoạch")
    send(client, province, original["id"], ["000.01.12.H58"])
    commune = as_user.headers(CLERK)
    reply = create_document(client, commune, type_name="Báo cáo",
                            response_for=original["id"])
    assert reply["response_for"] == original["id"]
    assert reply["response_for_ref"] == "01/KH-UBND"
    outsider = as_user.headers("clerk.donghop")
    response = _post(client, outsider, metadata(response_for=original["id"]), make_pdf())
    assert_problem(response, 422, "response_for")
    free_text = create_document(client, commune, response_for="15/QĐ-UBND")
    assert free_text["response_for_ref"] == "15/QĐ-UBND"


def test_unknown_routes_and_methods_are_problems(client: TestClient) -> None:
    assert_problem(client.get("/api/v1/nothing-here"), 404)
    assert_problem(client.delete("/api/v1/inbox"), 405)
    assert_problem(client.get("/api/v1/inbox"), 401)


def test_row_keys_in_paths_are_bounded_on_every_route(env: Env, as_user: Clients) -> None:
    """Every integer key in an API path is 1..2**31-1 (the tables' INTEGER keys): out of
    range it is a 422 naming the parameter, before any query (SQLite overflowed on 2**70
    with a 500; Schemathesis found it)."""
    row_id_max = 2**31 - 1  # INTEGER, int4 on PostgreSQL
    client = as_user.client
    keys = []
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["schema"].get("type") == "integer":
                    assert parameter["schema"].get("minimum") == 1, (method, path)
                    assert parameter["schema"].get("maximum") == row_id_max, (method, path)
                    keys.append((method, path, parameter["name"]))
    assert len(keys) >= 15, keys
    headers = as_user.headers(CLERK)
    for method, path, name in keys:
        for value in (2**70, row_id_max + 1, 0):
            url = re.sub(r"\{(\w+)\}", lambda m, name=name, value=value:
                         str(value) if m[1] == name else "1", path)
            response = client.request(method.upper(), url, headers=headers, json={})
            assert_problem(response, 422, field=name)


def test_numbers_out_of_range_are_bad_input_not_crashes(env: Env, as_user: Clients) -> None:
    """Inputs Schemathesis turned into 500s: a reply to a key no table holds, a paging
    offset past 64 bits, a report number in Unicode digits ("¹" passes str.isdigit)."""
    client = as_user.client
    headers = as_user.headers(CLERK)
    before = _counts(env)
    for key in (2**70, -(2**70), 0):
        assert_problem(_post(client, headers, metadata(response_for=key), make_pdf()),
                       422, "response_for")
        assert_problem(_post(client, headers, metadata(response_for=str(abs(key))),
                             make_pdf()), 422, "response_for")
    assert _counts(env) == before, "nothing stored"
    assert_problem(client.get("/api/v1/registers/outgoing", headers=headers,
                              params={"offset": 2**70}), 422, "offset")
    assert_problem(client.get("/api/v1/verification-reports/¹", headers=headers),
                   422, "report_id")


def test_nul_characters_are_bad_input_on_every_database(env: Env, as_user: Clients) -> None:
    """PostgreSQL cannot store U+0000 in text: in a query parameter, the metadata or a file
    name it is a 422 on either database (on PostgreSQL it was a 500), and nothing stays."""
    client = as_user.client
    headers = as_user.headers(CLERK)
    before = _counts(env)
    for path, params in (("/api/v1/inbox", {"q": "a\x00b"}),
                         ("/api/v1/inbox", {"sender": "\x00"}),
                         ("/api/v1/registers/outgoing", {"q": "\x00"})):
        assert_problem(client.get(path, headers=headers, params=params), 422,
                       next(iter(params)))
    assert_problem(_post(client, headers, metadata(subject="Về việc\x00 kiểm tra"),
                         make_pdf("nul")), 422, "metadata")
    assert_problem(_post(client, headers, {**metadata(), "place": "\x00"}, make_pdf("nul 2")),
                   422, "metadata")
    assert _counts(env) == before, "nothing stored"


def test_uploads_do_not_stay_in_memory(env: Env) -> None:
    """The blob store copies in 1 MiB chunks from a file object; it never reads it whole."""
    from eoffice.blobs.service import LocalBlobStore

    class Counting:
        def __init__(self, size: int) -> None:
            self.remaining = size
            self.largest = 0

        def read(self, n: int = -1) -> bytes:
            assert n > 0, "the store must read in bounded chunks"
            chunk = min(n, self.remaining)
            self.remaining -= chunk
            self.largest = max(self.largest, chunk)
            return b"x" * chunk

    source = Counting(200 * 1024 * 1024)
    stored = LocalBlobStore(Path(env.data_dir) / "blobs").put_file(source)  # type: ignore[arg-type]
    assert stored.size == 200 * 1024 * 1024
    assert source.largest <= 1024 * 1024


def test_stored_files_are_on_disk_before_their_row_commits(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file and the directory entry of its rename are fsynced before put_file returns:
    the database commit that follows must never name a file a power cut could lose."""
    import io
    import os

    from eoffice.blobs.service import LocalBlobStore

    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    root = Path(env.data_dir) / "blobs"
    stored = LocalBlobStore(root).put_file(io.BytesIO(b"%PDF-1.7 durable"))
    final = root / stored.sha256[:2] / stored.sha256[2:4] / stored.sha256
    assert final.read_bytes() == b"%PDF-1.7 durable"
    assert len(synced) == 2
    assert synced[0].startswith(str(root / "tmp")), "the content, before the rename"
    assert synced[1] == str(final.parent), "the directory holding the renamed file"


def test_blob_store_makes_missing_folders_whenever_they_go_missing(env: Env) -> None:
    """The store creates its folders once, not on every file: a folder removed under a
    running store (an operator's clean-up, a restored backup) is made again when needed."""
    import io
    import shutil

    from eoffice.blobs.service import LocalBlobStore

    root = Path(env.data_dir) / "blobs-moved"
    store = LocalBlobStore(root)
    first = store.put_file(io.BytesIO(b"%PDF-1.7 first"))
    shutil.rmtree(root)
    second = store.put_file(io.BytesIO(b"%PDF-1.7 second"))
    again = store.put_file(io.BytesIO(b"%PDF-1.7 first"))
    assert again.sha256 == first.sha256 != second.sha256
    with store.open(second.sha256) as reader, store.open(again.sha256) as other:
        assert reader.read() == b"%PDF-1.7 second" and other.read() == b"%PDF-1.7 first"
