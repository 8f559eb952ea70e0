"""POST /verify and stored reports (JSON, HTML, sealed PDF)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sqlmodel import Session, select

from eoffice.models import AuditEvent, VerificationReport
from eoffice.verification import VerifyOptions, load_certificates, verify_file
from tests.conftest import Clients, Env
from tests.helpers import make_pdf
from tests.verification_service.conftest import DevPki
from tests.verification_service.helpers import signed_pdf, tampered

CONTRACT_KEYS = {"file", "indication", "sub_indication", "signatures", "elapsed_ms"}
SIGNATURE_KEYS = {"field", "indication", "sub_indication", "signer", "signing_time", "intact",
                  "valid", "trusted", "coverage", "modification_level", "timestamp",
                  "revocation", "errors"}


def _post(as_user: Clients, user: str, content: bytes, name: str = "van-ban.pdf",
          **form: str):  # type: ignore[no-untyped-def]
    return as_user.client.post("/api/v1/verify", headers=as_user.headers(user),
                               files={"file": (name, content, "application/pdf")}, data=form)


def test_signed_upload_passes_and_is_stored(env: Env, as_user: Clients, dev_pki: DevPki,
                                            tmp_path: Path) -> None:
    response = _post(as_user, "clerk.minhlang", signed_pdf(dev_pki, tmp_path))
    assert response.status_code == 200, response.text
    body = response.json()
    assert CONTRACT_KEYS <= set(body)
    assert body["file"] == "van-ban.pdf"
    assert body["indication"] == "TOTAL_PASSED", body
    (signature,) = body["signatures"]
    assert SIGNATURE_KEYS <= set(signature)
    assert signature["intact"] and signature["valid"] and signature["trusted"]
    assert signature["revocation"]["status"] == "good"  # OCSP of the served dev PKI
    assert response.headers["location"] == f"/api/v1/verification-reports/{body['report_id']}"

    from eoffice.db import get_engine
    from eoffice.trust.service import current_state

    with Session(get_engine()) as session:
        row = session.get(VerificationReport, body["report_id"])
        assert row is not None and row.indication == "TOTAL_PASSED"
        assert row.trust_state == current_state(session) == body["trust_state"]
        from eoffice.models import User

        author = session.exec(select(User).where(User.username == "clerk.minhlang")).one()
        assert row.created_by_id == author.id
        audit = session.exec(select(AuditEvent).where(
            AuditEvent.action == "verification.report_created")).all()
        assert [a.object_id for a in audit] == [str(row.id)]

    again = as_user.client.get(f"/api/v1/verification-reports/{body['report_id']}",
                               headers=as_user.headers("clerk.minhlang"))
    assert again.status_code == 200
    assert again.json()["signatures"] == body["signatures"]


def test_bad_files_get_reports_or_clear_errors(env: Env, as_user: Clients, dev_pki: DevPki,
                                               tmp_path: Path) -> None:
    user = "officer.vuthu"
    broken = _post(as_user, user, tampered(signed_pdf(dev_pki, tmp_path))).json()
    assert broken["indication"] == "TOTAL_FAILED"
    assert broken["signatures"][0]["intact"] is False
    unsigned = _post(as_user, user, make_pdf()).json()
    assert unsigned["indication"] == "NO_SIGNATURE_FOUND"
    garbage = _post(as_user, user, b"%PDF-1.7\n" + b"\x00garbage" * 500)
    assert garbage.status_code == 200
    assert garbage.json()["indication"] in ("INDETERMINATE", "TOTAL_FAILED")
    empty = _post(as_user, user, b"")
    assert empty.status_code == 422 and empty.json()["field"] == "file"
    bad_mode = _post(as_user, user, make_pdf(), revocation="sometimes")
    assert bad_mode.status_code == 422
    anonymous = as_user.client.post("/api/v1/verify",
                                    files={"file": ("a.pdf", make_pdf(), "application/pdf")})
    assert anonymous.status_code == 401


def test_upload_size_limit(env: Env, as_user: Clients, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from eoffice.settings import get_settings

    monkeypatch.setenv("EOFFICE_MAX_UPLOAD_MB", "1")
    get_settings.cache_clear()
    too_big = _post(as_user, "clerk.tinh", b"%PDF-1.7\n" + b"0" * (1024 * 1024 + 10))
    assert too_big.status_code == 413
    assert too_big.headers["content-type"].startswith("application/problem+json")
    get_settings.cache_clear()


def test_reports_are_private_to_their_author(env: Env, as_user: Clients) -> None:
    report_id = _post(as_user, "clerk.minhlang", make_pdf()).json()["report_id"]
    url = f"/api/v1/verification-reports/{report_id}"
    assert as_user.client.get(url, headers=as_user.headers("clerk.donghop")).status_code == 404
    assert as_user.client.get(url, headers=as_user.headers("admin")).status_code == 200
    assert as_user.client.get("/api/v1/verification-reports/999999",
                              headers=as_user.headers("admin")).status_code == 404
    assert as_user.client.get("/api/v1/verification-reports/abc",
                              headers=as_user.headers("admin")).status_code == 422
    assert as_user.client.get(f"{url}?format=xml",
                              headers=as_user.headers("admin")).status_code == 422


def test_html_report_in_words(env: Env, as_user: Clients, dev_pki: DevPki,
                              tmp_path: Path) -> None:
    good = _post(as_user, "clerk.tinh", signed_pdf(dev_pki, tmp_path)).json()
    bad = _post(as_user, "clerk.tinh", tampered(signed_pdf(dev_pki, tmp_path))).json()
    headers = as_user.headers("clerk.tinh")
    page = as_user.client.get(f"/api/v1/verification-reports/{good['report_id']}.html",
                              headers=headers)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "Hợp lệ / Valid" in html and "#1b7f3b" in html
    assert "Toàn bộ tệp" in html and "Root CA eOffice" in html
    assert "Còn hiệu lực" in html  # revocation evidence in words
    also = as_user.client.get(f"/api/v1/verification-reports/{bad['report_id']}?format=html",
                              headers=headers).text
    assert "Không hợp lệ / Invalid" in also and "#b3261e" in also


def test_pdf_report_is_sealed_and_verifies(env: Env, as_user: Clients, dev_pki: DevPki,
                                           tmp_path: Path) -> None:
    report = _post(as_user, "clerk.tinh", signed_pdf(dev_pki, tmp_path)).json()
    response = as_user.client.get(f"/api/v1/verification-reports/{report['report_id']}.pdf",
                                  headers=as_user.headers("clerk.tinh"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(response.content)
    # An auditor hands the report on: it verifies on its own with the dev root.
    checked = verify_file(pdf, VerifyOptions(trust_roots=load_certificates([dev_pki.root]),
                                             revocation="soft"))
    assert checked["indication"] == "TOTAL_PASSED", checked
    assert "Ủy ban nhân dân tỉnh Thái Bình" in checked["signatures"][0]["signer"]
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "BÁO CÁO KIỂM TRA CHỮ KÝ SỐ" in text and "Hợp lệ / Valid" in text
    png = subprocess.run(["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", str(pdf),
                          str(tmp_path / "page")], capture_output=True)
    assert png.returncode == 0 and (tmp_path / "page-1.png").stat().st_size > 5000
    keep = Path(os.environ.get("EOFFICE_KEEP_REPORT_PNG", ""))
    if keep.name:  # to look at the rendering by eye
        keep.write_bytes((tmp_path / "page-1.png").read_bytes())
