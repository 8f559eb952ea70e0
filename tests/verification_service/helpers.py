"""Signed PDFs for the verification-service tests."""

from __future__ import annotations

from pathlib import Path

from eoffice.signing.engine import sign_pdf_file
from eoffice.signing.keys import load_p12_signer
from tests.helpers import make_pdf
from tests.verification_service.conftest import LEADER, DevPki


def signed_pdf(pki: DevPki, tmp_path: Path, text: str = "Văn bản ký số") -> bytes:
    """A one-page PDF signed (PAdES B-B) by the province leader of the dev PKI."""
    plain = tmp_path / "plain.pdf"
    plain.write_bytes(make_pdf(text))
    out = tmp_path / "signed.pdf"
    p12, passphrase = pki.user_p12(LEADER)
    sign_pdf_file(plain, out, load_p12_signer(p12, passphrase))
    return out.read_bytes()


def tampered(pdf: bytes) -> bytes:
    """Flip one signed byte of the page content (the signature no longer matches)."""
    index = pdf.index(b"Tj ET")
    return pdf[:index - 3] + b"X" + pdf[index - 2:]
