"""The pre-encoded CMS path (fast_cms) produces what pyHanko's own Signer.async_sign produces."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes, Signer

from eoffice.signing.keys import LoadedKeySigner, signer_from_key_and_cert

from .conftest import Pki


def _sign(signer: Signer, digest: bytes, *, stock: bool, **kwargs: object) -> bytes:
    fn = Signer.async_sign if stock else type(signer).async_sign
    return asyncio.run(fn(signer, digest, "sha256", **kwargs)).dump()  # type: ignore[arg-type]


def _self_signed(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fast-cms test")])
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(4242)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
            .sign(key, hashes.SHA256()))


def test_rsa_pades_cms_is_byte_identical_to_pyhanko(pki: Pki) -> None:
    signer = pki.signer("users", "leader.tinh")
    for i in range(3):  # later calls come from the cached template
        digest = hashlib.sha256(f"doc {i}".encode()).digest()
        ours = _sign(signer, digest, stock=False, use_pades=True,
                     signed_attr_settings=PdfCMSSignedAttributes())
        assert ours == _sign(signer, digest, stock=True, use_pades=True,
                             signed_attr_settings=PdfCMSSignedAttributes())


@pytest.mark.parametrize("kind", ["ecdsa", "rsa-pss"])
def test_randomised_signatures_match_except_signature_value(kind: str) -> None:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "ecdsa":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(65537, 2048)
    signer = signer_from_key_and_cert(key, _self_signed(key))
    if kind == "rsa-pss":
        signer = LoadedKeySigner(key, signer.signing_cert, prefer_pss=True)
    digest = hashlib.sha256(b"payload").digest()
    ours = cms.ContentInfo.load(_sign(signer, digest, stock=False, use_pades=True))
    stock = cms.ContentInfo.load(_sign(signer, digest, stock=True, use_pades=True))
    ours_si, stock_si = (c["content"]["signer_infos"][0] for c in (ours, stock))
    for field in ("version", "sid", "digest_algorithm", "signed_attrs", "signature_algorithm"):
        assert ours_si[field].dump() == stock_si[field].dump(), field
    for field in ("version", "digest_algorithms", "encap_content_info", "certificates"):
        assert ours["content"][field].dump() == stock["content"][field].dump(), field
    signed = ours_si["signed_attrs"].untag().dump(force=True)
    signed = b"\x31" + signed[1:]
    if kind == "ecdsa":
        key.public_key().verify(ours_si["signature"].native, signed,  # type: ignore[call-arg]
                                ec.ECDSA(hashes.SHA256()))
    else:
        assert ours_si["signature_algorithm"]["algorithm"].native == "rsassa_pss"
        key.public_key().verify(  # type: ignore[call-arg]
            ours_si["signature"].native, signed,
            padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO), hashes.SHA256())


def test_other_shapes_fall_back_to_pyhanko(pki: Pki) -> None:
    """Non-PAdES CMS (signing-time, algorithm protection) is not templated: pyHanko builds it."""
    signer = pki.signer("users", "leader.tinh")
    digest = hashlib.sha256(b"x").digest()
    settings = PdfCMSSignedAttributes(signing_time=dt.datetime(2025, 5, 1, tzinfo=dt.UTC))
    ours = _sign(signer, digest, stock=False, use_pades=False, signed_attr_settings=settings)
    assert ours == _sign(signer, digest, stock=True, use_pades=False,
                         signed_attr_settings=settings)
    attrs = cms.ContentInfo.load(ours)["content"]["signer_infos"][0]["signed_attrs"]
    assert {"signing_time", "cms_algorithm_protection"} <= {a["type"].native for a in attrs}
