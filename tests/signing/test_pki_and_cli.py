"""Dev PKI layout and services, and the `eoffice pki` / `eoffice sign` commands."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import typer
from asn1crypto import crl, ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import ocsp as x509_ocsp
from typer.testing import CliRunner

from eoffice.agencies.demo import demo_agencies, demo_users
from eoffice.signing.commands import register

from .conftest import Pki, pdfsig


def _cert(pki: Pki, kind: str, ident: str) -> x509.Certificate:
    _, cert, _ = pkcs12.load_key_and_certificates(
        (pki.dir / kind / f"{ident}.p12").read_bytes(), pki.passphrase(kind, ident).encode())
    assert cert is not None
    return cert


def test_layout_and_subjects(pki: Pki) -> None:
    agencies = demo_agencies()[:2]
    codes = {a.code for a in agencies}
    signing_users = [u for u in demo_users()
                     if u.agency_code in codes and u.role in ("leader", "clerk")]
    assert (pki.dir / "root.pem").is_file()
    for agency in agencies:
        for suffix in (".p12", ".pass"):
            path = pki.dir / "seals" / f"{agency.code}{suffix}"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        cert = _cert(pki, "seals", agency.code)
        subject = cert.subject
        assert subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == \
            agency.name
        assert agency.code in subject.rfc4514_string()
    for user in signing_users:
        cert = _cert(pki, "users", user.username)
        assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == \
            user.full_name
        assert isinstance(cert.public_key(), __import__(
            "cryptography.hazmat.primitives.asymmetric.rsa", fromlist=["x"]).RSAPublicKey)
        assert cert.public_key().key_size == 2048
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        assert any(d.access_location.value == f"{pki.base_url}/ocsp" for d in aia)
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert cdp[0].full_name[0].value == f"{pki.base_url}/crl/intermediate.crl"
    officers = [u for u in demo_users() if u.agency_code in codes and u.role == "officer"]
    assert not (pki.dir / "users" / f"{officers[0].username}.p12").exists()
    assert not list(pki.dir.rglob("*.key")) and not (pki.dir / "private" / "x").exists()


def test_crl_and_ocsp_services(pki: Pki) -> None:
    revoked = _cert(pki, "users", "test.revoked")
    good = _cert(pki, "users", "leader.tinh")
    response = httpx.get(f"{pki.base_url}/crl/intermediate.crl")
    assert response.status_code == 200
    parsed = crl.CertificateList.load(response.content)
    entries = parsed["tbs_cert_list"]["revoked_certificates"]
    serials = {r["user_certificate"].native for r in entries}
    assert revoked.serial_number in serials and good.serial_number not in serials
    issuer = x509.load_pem_x509_certificate((pki.dir / "intermediate.pem").read_bytes())
    for cert, expected in ((good, "good"), (revoked, "revoked")):
        request = x509_ocsp.OCSPRequestBuilder().add_certificate(
            cert, issuer, hashes.SHA256()).build().public_bytes(serialization.Encoding.DER)
        reply = httpx.post(f"{pki.base_url}/ocsp", content=request,
                           headers={"Content-Type": "application/ocsp-request"})
        parsed_reply = ocsp.OCSPResponse.load(reply.content)
        assert parsed_reply["response_status"].native == "successful"
        single = parsed_reply.basic_ocsp_response["tbs_response_data"]["responses"][0]
        assert single["cert_status"].name == expected


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keeps `sign` as a sub-command like the real CLI
        pass
    return app


def test_sign_cli_exit_codes(pki: Pki, nssdb: Path, sample_pdf: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out_dir = tmp_path / "signed"
    key = pki.dir / "users" / "leader.tinh.p12"
    passfile = pki.dir / "users" / "leader.tinh.pass"
    second = tmp_path / "second.pdf"
    second.write_bytes(sample_pdf.read_bytes())
    result = runner.invoke(_app(), ["sign", str(sample_pdf), str(second), "--out-dir",
                                    str(out_dir), "--key", str(key), "--passphrase-file",
                                    str(passfile)])
    assert result.exit_code == 0, result.output
    for name in ("input-signed.pdf", "second-signed.pdf"):
        assert pdfsig(out_dir / name, nssdb)[0].valid
    junk = tmp_path / "junk.pdf"
    junk.write_text("not a pdf")
    result = runner.invoke(_app(), ["sign", str(sample_pdf), str(junk), "--out-dir",
                                    str(tmp_path / "o2"), "--key", str(key),
                                    "--passphrase-file", str(passfile)])
    assert result.exit_code == 1
    assert "junk.pdf" in result.output and (tmp_path / "o2" / "input-signed.pdf").exists()
    result = runner.invoke(_app(), ["sign", str(sample_pdf), "--out-dir", str(out_dir),
                                    "--key", str(key), "--passphrase-file", str(passfile),
                                    "--level", "B-X"])
    assert result.exit_code == 2
    result = runner.invoke(_app(), ["sign", str(sample_pdf), "--key", str(key)])
    assert result.exit_code == 2  # --out-dir missing
    # prompted passphrase (hidden input), wrong value -> 1
    result = runner.invoke(_app(), ["sign", str(sample_pdf), "--out-dir", str(tmp_path / "o3"),
                                    "--key", str(key)], input="wrong\n")
    assert result.exit_code == 1 and "wrong" not in result.output.replace("Wrong", "")
