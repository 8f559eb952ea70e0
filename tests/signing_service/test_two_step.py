"""Two-step signing with the signer's own key: prepare → device signature → complete."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.conftest import Clients, Env

from .conftest import ServicePki, download, new_document, pdfsig, verify

API = "/api/v1"


def token(pki: ServicePki, username: str) -> tuple[Any, str, list[str], bytes]:
    """What a USB token would give: its key (stays local), certificate PEM, chain, DER."""
    key, cert, chain = pkcs12.load_key_and_certificates(pki.p12(username).read_bytes(),
                                                        pki.passphrase(username).encode())
    assert key is not None and cert is not None
    pem = serialization.Encoding.PEM
    return (key, cert.public_bytes(pem).decode(), [c.public_bytes(pem).decode() for c in chain],
            cert.public_bytes(serialization.Encoding.DER))


def prepare(as_user: Clients, document_id: int, certificate: str, chain: list[str],
            level: str = "B-B") -> dict[str, Any]:
    response = as_user.client.post(f"{API}/documents/{document_id}/sign/prepare",
                                   headers=as_user.headers("leader.tinh"),
                                   json={"certificate": certificate, "chain": chain,
                                         "level": level})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "awaiting_signature"
    job = as_user.client.get(f"{API}/jobs/{response.json()['job_id']}",
                             headers=as_user.headers("leader.tinh")).json()
    assert job["status"] == "awaiting_signature", job
    return dict(job)


def test_two_step_with_a_local_key(env: Env, as_user: Clients, service_pki: ServicePki,
                                   nssdb: Path, tmp_path: Path) -> None:
    client = as_user.client
    leader = as_user.headers("leader.tinh")
    key, cert_pem, chain, _ = token(service_pki, "leader.tinh")
    document = new_document(as_user)
    job = prepare(as_user, document["id"], cert_pem, chain, level="B-T")
    data_to_sign = base64.b64decode(job["data_to_sign"])
    digest = hashlib.sha256(data_to_sign).digest()
    assert job["digest_algorithm"] == "sha256"
    assert base64.b64decode(job["digest"]) == digest and job["digest_hex"] == digest.hex()
    assert job["progress"] == 40 and job["field"].startswith("LeaderSignature")

    signature = key.sign(data_to_sign, padding.PKCS1v15(), hashes.SHA256())
    body = {"signature": base64.b64encode(signature).decode()}
    # Only the leader who prepared completes: a colleague is refused, an outsider sees nothing.
    assert client.post(f"{API}/jobs/{job['id']}/complete", headers=as_user.headers(
        "clerk.tinh"), json=body).status_code == 403
    assert client.post(f"{API}/jobs/{job['id']}/complete", headers=as_user.headers(
        "leader.snv"), json=body).status_code == 404
    done = client.post(f"{API}/jobs/{job['id']}/complete", headers=leader, json=body)
    assert done.status_code == 202, done.text
    assert done.json()["status"] == "succeeded"
    final = client.get(f"{API}/jobs/{job['id']}", headers=leader).json()
    assert final["result"]["revision"] == 2 and final["digest"] is None

    signed = download(client, leader, document["id"], tmp_path / "signed.pdf")
    report = verify(signed, service_pki.root)
    assert report["indication"] == "TOTAL_PASSED", report
    assert report["signatures"][0]["timestamp"]
    assert [s["valid"] for s in pdfsig(signed, nssdb)] == [True]
    # A finished job takes no second signature.
    again = client.post(f"{API}/jobs/{job['id']}/complete", headers=leader, json=body)
    assert again.status_code == 409


def test_wrong_signature_fails_the_job_and_leaves_the_document(
        env: Env, as_user: Clients, service_pki: ServicePki) -> None:
    client = as_user.client
    leader = as_user.headers("leader.tinh")
    _, _, chain, cert_der = token(service_pki, "leader.tinh")
    other_key, _, _, _ = token(service_pki, "clerk.tinh")
    document = new_document(as_user)
    # base64 DER is accepted as well as PEM
    job = prepare(as_user, document["id"], base64.b64encode(cert_der).decode(), chain)
    forged = other_key.sign(base64.b64decode(job["data_to_sign"]), padding.PKCS1v15(),
                            hashes.SHA256())
    response = client.post(f"{API}/jobs/{job['id']}/complete", headers=leader,
                           json={"signature": base64.b64encode(forged).decode()})
    assert response.status_code == 202
    failed = client.get(f"{API}/jobs/{job['id']}", headers=leader).json()
    assert failed["status"] == "failed", failed
    assert failed["error_code"] == "external_signature_invalid"
    assert "not valid" in failed["error"] and failed["error_vi"]
    readback = client.get(f"{API}/documents/{document['id']}", headers=leader).json()
    assert readback["revision"] == 1 and readback["file_sha256"] == document["file_sha256"]
    # The document can be signed again after the failure.
    prepare(as_user, document["id"], base64.b64encode(cert_der).decode(), chain)


def test_bad_two_step_input_is_422(env: Env, as_user: Clients,
                                   service_pki: ServicePki) -> None:
    client = as_user.client
    leader = as_user.headers("leader.tinh")
    document = new_document(as_user)
    response = client.post(f"{API}/documents/{document['id']}/sign/prepare", headers=leader,
                           json={"certificate": "not a certificate"})
    assert response.status_code == 422 and response.json()["field"] == "certificate"
    _, cert_pem, chain, _ = token(service_pki, "leader.tinh")
    job = prepare(as_user, document["id"], cert_pem, chain)
    # A second preparation while one is pending would race for the same revision.
    busy = client.post(f"{API}/documents/{document['id']}/sign/prepare", headers=leader,
                       json={"certificate": cert_pem})
    assert busy.status_code == 409 and busy.json()["job_id"] == job["id"]
    for body in ({"signature": "***"}, {}, {"signature": "AA==", "cms": "AA=="}):
        bad = client.post(f"{API}/jobs/{job['id']}/complete", headers=leader, json=body)
        assert bad.status_code == 422, (body, bad.text)
    assert client.get(f"{API}/jobs/{job['id']}", headers=leader).json()["status"] == \
        "awaiting_signature"
