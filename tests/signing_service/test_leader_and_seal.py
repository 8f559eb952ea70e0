"""Leader signature with the server-held key, then issuance with the organisation seal."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Clients, Env
from tests.helpers import make_pdf

from .conftest import ServicePki, download, new_document, pdfsig, verify

API = "/api/v1"


def _sign(as_user: Clients, pki: ServicePki, document_id: int, username: str = "leader.tinh",
          passphrase: str | None = None, **extra: object) -> object:
    body = {"passphrase": passphrase if passphrase is not None else pki.passphrase(username),
            **extra}
    return as_user.client.post(f"{API}/documents/{document_id}/sign",
                               headers=as_user.headers(username), json=body)


def test_leader_signs_a_new_revision_that_verifies(env: Env, as_user: Clients,
                                                   service_pki: ServicePki, nssdb: Path,
                                                   tmp_path: Path) -> None:
    client = as_user.client
    leader = as_user.headers("leader.tinh")
    document = new_document(as_user)
    original = download(client, leader, document["id"], tmp_path / "original.pdf")

    response = _sign(as_user, service_pki, document["id"])  # agency default level: B-T
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "succeeded"  # eager tasks: the worker ran inside the request

    job = client.get(f"{API}/jobs/{accepted['job_id']}", headers=leader).json()
    assert job["kind"] == "sign.leader" and job["status"] == "succeeded"
    assert job["progress"] == 100 and job["error"] is None and job["level"] == "B-T"
    assert job["result"]["revision"] == 2

    readback = client.get(f"{API}/documents/{document['id']}", headers=leader).json()
    assert readback["revision"] == 2 and readback["status"] == "draft"
    assert [r["reason"] for r in readback["revisions"]] == ["upload", "leader_signature"]
    assert readback["file_sha256"] == job["result"]["sha256"]

    signed = download(client, leader, document["id"], tmp_path / "signed.pdf")
    report = verify(signed, service_pki.root)
    assert report["indication"] == "TOTAL_PASSED", report
    [signature] = report["signatures"]
    assert signature["field"].startswith("LeaderSignature")
    assert signature["timestamp"], "B-T carries a signature timestamp from the TSA"
    sigs = pdfsig(signed, nssdb)
    assert len(sigs) == 1 and sigs[0]["valid"], sigs
    # The older revision is kept, byte for byte.
    kept = download(client, leader, document["id"], tmp_path / "rev1.pdf", revision=1)
    assert kept.read_bytes() == original.read_bytes()
    # Someone outside both agencies' exchange never sees the job.
    outsider = as_user.headers("leader.snv")
    assert client.get(f"{API}/jobs/{accepted['job_id']}", headers=outsider).status_code == 404


def test_wrong_passphrase_is_422_and_changes_nothing(env: Env, as_user: Clients,
                                                    service_pki: ServicePki) -> None:
    client = as_user.client
    leader = as_user.headers("leader.tinh")
    document = new_document(as_user)
    response = _sign(as_user, service_pki, document["id"], passphrase="not-the-passphrase")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["field"] == "passphrase" and problem["detail_vi"]
    job = client.get(f"{API}/jobs/{problem['job_id']}", headers=leader).json()
    assert job["status"] == "failed" and job["error_code"] == "wrong_passphrase"
    readback = client.get(f"{API}/documents/{document['id']}", headers=leader).json()
    assert readback["revision"] == 1 and readback["file_sha256"] == document["file_sha256"]
    # The failed attempt does not block a correct one.
    assert _sign(as_user, service_pki, document["id"], level="B-B").status_code == 202


def test_only_the_sending_agencys_leader_signs(env: Env, as_user: Clients,
                                               service_pki: ServicePki) -> None:
    document = new_document(as_user)
    for username in ("officer.tinh", "clerk.tinh"):
        response = as_user.client.post(f"{API}/documents/{document['id']}/sign",
                                       headers=as_user.headers(username),
                                       json={"passphrase": "whatever"})
        assert response.status_code == 403, response.text
    other = _sign(as_user, service_pki, document["id"], username="leader.snv")
    assert other.status_code == 404, other.text
    bad_level = _sign(as_user, service_pki, document["id"], level="B-X")
    assert bad_level.status_code == 422 and bad_level.json()["field"] == "level"
    readback = as_user.client.get(f"{API}/documents/{document['id']}",
                                  headers=as_user.headers("leader.tinh")).json()
    assert readback["revision"] == 1


def test_clerk_issues_with_seal_after_the_leader(env: Env, as_user: Clients,
                                                 service_pki: ServicePki, nssdb: Path,
                                                 tmp_path: Path) -> None:
    client = as_user.client
    clerk = as_user.headers("clerk.tinh")
    document = new_document(as_user, attachments=[
        ("phu-luc.pdf", make_pdf("Phu luc", pages=1), "application/pdf"),
        ("bang-tinh.csv", b"a,b\n1,2\n", "text/csv")])
    assert _sign(as_user, service_pki, document["id"], level="B-B").status_code == 202

    response = client.post(f"{API}/documents/{document['id']}/issue-signed", headers=clerk,
                           json={"level": "B-T"})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "succeeded" and accepted["number_notation"] == "01/QĐ-UBND"
    job = client.get(f"{API}/jobs/{accepted['job_id']}", headers=clerk).json()
    assert job["kind"] == "sign.seal" and job["result"]["revision"] == 3
    stamped = {a["file_name"]: a for a in job["result"]["attachments"]}
    assert stamped["phu-luc.pdf"]["stamped"] is True
    assert stamped["bang-tinh.csv"] == {**stamped["bang-tinh.csv"], "stamped": False}

    readback = client.get(f"{API}/documents/{document['id']}", headers=clerk).json()
    assert readback["status"] == "issued" and readback["code_number"] == "01"
    assert [r["reason"] for r in readback["revisions"]] == ["upload", "leader_signature",
                                                            "seal"]
    sealed = download(client, clerk, document["id"], tmp_path / "sealed.pdf")
    report = verify(sealed, service_pki.root, decree30=True)
    leader_sig, seal_sig = report["signatures"]
    assert seal_sig["field"].startswith("OrganisationSeal")
    assert seal_sig["indication"] == "TOTAL_PASSED", seal_sig
    assert (leader_sig["intact"], leader_sig["valid"], leader_sig["trusted"]) == (True,) * 3
    assert leader_sig["changed_form_fields"] == [seal_sig["field"]]
    # The seal lies over the leader's image, as Decree 30 requires: a signing step, not a change.
    assert leader_sig.get("changes", []) == [], leader_sig
    assert leader_sig["indication"] == "TOTAL_PASSED", leader_sig
    assert report["decree30"]["order"] == ["personal", "seal"]
    sigs = pdfsig(sealed, nssdb)
    assert [s["valid"] for s in sigs] == [True, True], sigs

    # The PDF attachment now carries the organisation's text stamp; the CSV is unchanged.
    attachments = {a["file_name"]: a for a in readback["attachments"]}
    pdf_attachment = client.get(
        f"{API}/documents/{document['id']}/attachments/{attachments['phu-luc.pdf']['id']}",
        headers=clerk)
    (tmp_path / "att.pdf").write_bytes(pdf_attachment.content)
    att_report = verify(tmp_path / "att.pdf", service_pki.root)
    assert att_report["indication"] == "TOTAL_PASSED", att_report
    assert att_report["signatures"][0]["field"].startswith("AttachmentSeal")
    csv = client.get(
        f"{API}/documents/{document['id']}/attachments/{attachments['bang-tinh.csv']['id']}",
        headers=clerk)
    assert csv.content == b"a,b\n1,2\n"

    again = client.post(f"{API}/documents/{document['id']}/issue-signed", headers=clerk)
    assert again.status_code == 409


def test_issue_before_the_leader_signature_is_refused(env: Env, as_user: Clients,
                                                      service_pki: ServicePki) -> None:
    client = as_user.client
    clerk = as_user.headers("clerk.tinh")
    document = new_document(as_user)
    response = client.post(f"{API}/documents/{document['id']}/issue-signed", headers=clerk)
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["code"] == "leader_signature_missing"
    assert "leader" in problem["detail"] and "người có thẩm quyền" in problem["detail_vi"]
    readback = client.get(f"{API}/documents/{document['id']}", headers=clerk).json()
    assert readback["status"] == "draft" and readback["code_number"] is None
    # The leader may not seal, nor the clerk sign as the leader.
    leader_try = client.post(f"{API}/documents/{document['id']}/issue-signed",
                             headers=as_user.headers("leader.tinh"))
    assert leader_try.status_code == 403
    # Numbering was not consumed by the refusal: the next issuance is number 01.
    assert _sign(as_user, service_pki, document["id"], level="B-B").status_code == 202
    issued = client.post(f"{API}/documents/{document['id']}/issue-signed", headers=clerk,
                         json={"level": "B-B"})
    assert issued.status_code == 202 and issued.json()["number_notation"] == "01/QĐ-UBND"


def test_sealed_document_is_decree30_conformant(env: Env, as_user: Clients,
                                                service_pki: ServicePki, tmp_path: Path) -> None:
    client = as_user.client
    clerk = as_user.headers("clerk.tinh")
    document = new_document(as_user)
    assert _sign(as_user, service_pki, document["id"], level="B-B").status_code == 202
    issued = client.post(f"{API}/documents/{document['id']}/issue-signed", headers=clerk,
                         json={"level": "B-B"})
    assert issued.json()["status"] == "succeeded"
    sealed = download(client, clerk, document["id"], tmp_path / "sealed.pdf")
    report = verify(sealed, service_pki.root, decree30=True)
    assert report["decree30"]["conformant"], report["decree30"]
    assert report["indication"] == "TOTAL_PASSED"


def test_seal_from_an_hsm_over_pkcs11(env: Env, as_user: Clients, service_pki: ServicePki,
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seal key on a SoftHSM2 token: PIN and key label are configuration, not requests."""
    import subprocess

    from .conftest import override_settings, require_tool

    for tool in ("softhsm2-util", "pkcs11-tool", "openssl"):
        require_tool(tool)
    code = env.user("clerk.tinh")["agency_code"]
    script = Path(__file__).resolve().parents[2] / "scripts" / "softhsm-init.sh"
    made = subprocess.run(["bash", str(script), str(tmp_path / "hsm"),
                           str(service_pki.dir / "seals" / f"{code}.p12"),
                           str(service_pki.dir / "seals" / f"{code}.pass"), "eoffice-seals",
                           "135790"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    hsm = dict(line.split("=", 1) for line in made.stdout.split())
    (tmp_path / "pin").write_text("135790\n")
    monkeypatch.setenv("SOFTHSM2_CONF", hsm["SOFTHSM2_CONF"])
    # SoftHSM reads its configuration when the module is initialised; an earlier test in this
    # process may have initialised it with another token directory.
    import pkcs11

    pkcs11.lib(hsm["PKCS11_MODULE"]).reinitialize()
    override_settings(monkeypatch, pkcs11_module=hsm["PKCS11_MODULE"],
                      pkcs11_token="eoffice-seals", pkcs11_pin_file=tmp_path / "pin",
                      pkcs11_key_label="seal", pkcs11_chain_file=service_pki.dir / "chain.pem",
                      seal_keys_dir=tmp_path / "no-files-here")
    document = new_document(as_user)
    assert _sign(as_user, service_pki, document["id"], level="B-B").status_code == 202
    issued = as_user.client.post(f"{API}/documents/{document['id']}/issue-signed",
                                 headers=as_user.headers("clerk.tinh"), json={"level": "B-B"})
    assert issued.status_code == 202 and issued.json()["status"] == "succeeded", issued.text
    sealed = download(as_user.client, as_user.headers("clerk.tinh"), document["id"],
                      tmp_path / "sealed.pdf")
    report = verify(sealed, service_pki.root, decree30=True)
    assert report["decree30"]["order"] == ["personal", "seal"]
    assert report["signatures"][1]["indication"] == "TOTAL_PASSED", report["signatures"][1]
