"""Bad input gives typed errors (EN + VI), writes no output and leaves the input unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import copy_into_new_writer
from pyhanko.sign import fields, signers

from eoffice.signing import engine, errors
from eoffice.signing.engine import Level, SigningOptions
from eoffice.signing.keys import load_p12_signer, signer_from_key_and_cert

from .conftest import Pki


def _assert_refused(exc_type: type[errors.SigningError], src: Path, tmp_path: Path,
                    call) -> errors.SigningError:
    before = src.read_bytes() if src.exists() else None
    out = tmp_path / "out" / "signed.pdf"
    with pytest.raises(exc_type) as info:
        call(out)
    assert not out.exists()
    assert not list((tmp_path / "out").glob("*.partial")) if (tmp_path / "out").exists() else True
    if before is not None:
        assert src.read_bytes() == before
    err = info.value
    assert err.message_en and err.message_vi and err.message_en != err.message_vi
    return err


def test_not_a_pdf(pki: Pki, tmp_path: Path) -> None:
    src = tmp_path / "note.pdf"
    src.write_text("this is a text file, not a PDF")
    signer = pki.signer("users", "leader.tinh")
    err = _assert_refused(errors.NotAPdfError, src, tmp_path,
                          lambda out: engine.sign_pdf_file(src, out, signer))
    assert err.status_code == 422 and not err.retryable


def test_broken_pdf(pki: Pki, sample_pdf: Path, tmp_path: Path) -> None:
    src = tmp_path / "broken.pdf"
    src.write_bytes(sample_pdf.read_bytes()[:400])  # header, no xref, no trailer
    signer = pki.signer("users", "leader.tinh")
    _assert_refused(errors.BrokenPdfError, src, tmp_path,
                    lambda out: engine.sign_pdf_file(src, out, signer))


def test_encrypted_pdf(pki: Pki, sample_pdf: Path, tmp_path: Path) -> None:
    src = tmp_path / "encrypted.pdf"
    with open(sample_pdf, "rb") as handle:
        writer = copy_into_new_writer(PdfFileReader(handle))
        writer.encrypt("owner-secret", "user-secret")
        with open(src, "wb") as out:
            writer.write(out)
    signer = pki.signer("users", "leader.tinh")
    _assert_refused(errors.EncryptedPdfError, src, tmp_path,
                    lambda out: engine.sign_pdf_file(src, out, signer))


def test_docmdp_no_changes(pki: Pki, sample_pdf: Path, tmp_path: Path) -> None:
    src = tmp_path / "certified.pdf"
    stock = signers.SimpleSigner.load_pkcs12(
        str(pki.dir / "users" / "leader.tinh.p12"),
        passphrase=pki.passphrase("users", "leader.tinh").encode())
    with open(sample_pdf, "rb") as handle:
        writer = IncrementalPdfFileWriter(handle)
        meta = signers.PdfSignatureMetadata(field_name="Cert", certify=True,
                                            docmdp_permissions=fields.MDPPerm.NO_CHANGES)
        with open(src, "wb") as out:
            signers.sign_pdf(writer, meta, signer=stock, output=out)
    signer = pki.signer("users", "clerk.tinh")
    _assert_refused(errors.SignaturesForbiddenError, src, tmp_path,
                    lambda out: engine.sign_pdf_file(src, out, signer))


def test_wrong_passphrase(pki: Pki) -> None:
    with pytest.raises(errors.WrongPassphraseError) as info:
        load_p12_signer(pki.dir / "users" / "leader.tinh.p12", "not-the-passphrase")
    assert "not-the-passphrase" not in str(info.value)


def test_expired_certificate(pki: Pki, sample_pdf: Path, tmp_path: Path) -> None:
    with pytest.raises(errors.CertificateExpiredError):
        load_p12_signer(pki.dir / "users" / "test.expired.p12",
                        pki.passphrase("users", "test.expired"))
    signer = pki.signer("users", "test.expired")  # loaded unchecked: the engine must refuse
    _assert_refused(errors.CertificateExpiredError, sample_pdf, tmp_path,
                    lambda out: engine.sign_pdf_file(sample_pdf, out, signer))


def test_revoked_certificate_refused_when_level_needs_revocation(
        pki: Pki, sample_pdf: Path, tmp_path: Path) -> None:
    signer = pki.signer("users", "test.revoked")
    options = SigningOptions(level=Level.B_LT, tsa_url=pki.tsa_url, trust_roots=(pki.root,))
    err = _assert_refused(errors.CertificateRevokedError, sample_pdf, tmp_path,
                          lambda out: engine.sign_pdf_file(sample_pdf, out, signer,
                                                           options=options))
    assert not err.retryable


def test_certificate_without_signing_key_usage(pki: Pki, sample_pdf: Path,
                                               tmp_path: Path) -> None:
    signer = pki.signer("users", "test.nokeyusage")
    _assert_refused(errors.CertificateUsageError, sample_pdf, tmp_path,
                    lambda out: engine.sign_pdf_file(sample_pdf, out, signer))


def test_key_not_matching_certificate(pki: Pki) -> None:
    _, cert, chain = pkcs12.load_key_and_certificates(
        (pki.dir / "users" / "leader.tinh.p12").read_bytes(),
        pki.passphrase("users", "leader.tinh").encode())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(errors.KeyMismatchError):
        signer_from_key_and_cert(other_key, cert, chain)
    # (cryptography and openssl both refuse to write such a PKCS#12, so load_p12_signer's
    # identical check_key_matches() call is exercised through this constructor.)


def test_unreachable_tsa_is_retryable(pki: Pki, sample_pdf: Path, tmp_path: Path) -> None:
    signer = pki.signer("users", "leader.tinh")
    options = SigningOptions(level=Level.B_T, tsa_url="http://127.0.0.1:9/tsa", timeout=2)
    err = _assert_refused(errors.TimestampUnavailableError, sample_pdf, tmp_path,
                          lambda out: engine.sign_pdf_file(sample_pdf, out, signer,
                                                           options=options))
    assert err.status_code == 503 and err.retryable


def test_unreachable_revocation_is_retryable(tmp_path: Path, sample_pdf: Path) -> None:
    from eoffice.agencies.demo import demo_agencies
    from eoffice.signing.pki import init_pki

    # A PKI whose OCSP/CRL URLs point at a closed port (no users: seals are enough).
    dead = init_pki(tmp_path / "deadpki", base_url="http://127.0.0.1:9/pki",
                    agencies=demo_agencies()[:1], users=[], with_images=False)
    code = demo_agencies()[0].code
    signer = load_p12_signer(dead / "seals" / f"{code}.p12",
                             (dead / "seals" / f"{code}.pass").read_text().strip())
    options = SigningOptions(level=Level.B_LT, tsa_url="http://127.0.0.1:9/tsa",
                             trust_roots=(dead / "root.pem",), timeout=2)
    err = _assert_refused(errors.RevocationUnavailableError, sample_pdf, tmp_path,
                          lambda out: engine.sign_pdf_file(sample_pdf, out, signer,
                                                           options=options))
    assert err.status_code == 503 and err.retryable
