"""Widgets added after signing over a signed one: a later signature may, anything else may not."""

from __future__ import annotations

import io
from pathlib import Path

from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko_certvalidator.registry import SimpleCertificateStore

from eoffice.verification import VerifyOptions, verify_file
from eoffice.verification.testing import Identity, SigningPKI, make_pdf, make_pki

LEADER_BOX = (350, 80, 550, 180)
# Decree 30: the seal lies over about the left third of the leader's image.
SEAL_BOX = (320, 70, 430, 190)


def _sign(pdf: bytes, who: Identity, root: Identity, field: str,
          box: tuple[int, int, int, int]) -> bytes:
    signer = signers.SimpleSigner(signing_cert=who.asn1, signing_key=who.asn1_key,
                                  cert_registry=SimpleCertificateStore.from_certs([root.asn1]))
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    meta = signers.PdfSignatureMetadata(field_name=field)
    pdf_signer = signers.PdfSigner(meta, signer=signer,
                                   new_field_spec=fields.SigFieldSpec(field, box=box))
    return pdf_signer.sign_pdf(writer, bytes_reserved=8192).getvalue()


def _verify(tmp_path: Path, data: bytes, pki: SigningPKI) -> dict:
    path = tmp_path / "doc.pdf"
    path.write_bytes(data)
    return verify_file(path, VerifyOptions(trust_roots=[pki.root.asn1], revocation="off",
                                           decree30=True))


def test_seal_over_the_leader_signature_is_allowed(tmp_path: Path) -> None:
    pki = make_pki()
    leader = _sign(make_pdf(), pki.leaves["leader"], pki.root, "Leader", LEADER_BOX)
    sealed = _sign(leader, pki.leaves["seal"], pki.root, "Seal", SEAL_BOX)
    report = _verify(tmp_path, sealed, pki)
    assert report["indication"] == "TOTAL_PASSED", report
    assert report["decree30"]["conformant"] is True


def test_an_unsigned_widget_over_a_signature_is_flagged(tmp_path: Path) -> None:
    pki = make_pki()
    leader = _sign(make_pdf(), pki.leaves["leader"], pki.root, "Leader", LEADER_BOX)
    writer = IncrementalPdfFileWriter(io.BytesIO(leader), strict=False)
    fields.append_signature_field(writer, fields.SigFieldSpec("Cover", box=SEAL_BOX))
    out = io.BytesIO()
    writer.write(out)
    report = _verify(tmp_path, out.getvalue(), pki)
    assert report["indication"] != "TOTAL_PASSED", report
    leader_report = report["signatures"][0]
    assert leader_report["modification_level"] not in ("NONE", "LTA_UPDATES") or \
        leader_report["sub_indication"] not in (None, "NO_CERTIFICATE_CHAIN_FOUND"), leader_report
