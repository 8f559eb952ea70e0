"""Helpers shared by the verification tests (trust-anchor extraction from signed PDFs)."""

from __future__ import annotations

import re
from pathlib import Path

import pyhanko.sign.general  # noqa: F401 - registers CMS attribute OIDs before asn1crypto caches
from asn1crypto import cms, x509

# Raw scan rather than a PDF parse: corpus files are hostile and the anchors must be found
# even when the PDF structure is broken.
_CONTENTS = re.compile(rb"/Contents\s*<([0-9A-Fa-f\s]+)>")


def _certs_in_signed_data(signed_data: cms.SignedData) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for choice in signed_data["certificates"] or ():
        if choice.name == "certificate":
            certs.append(choice.chosen)
    for signer_info in signed_data["signer_infos"]:
        for attr in signer_info["unsigned_attrs"] or ():
            if attr["type"].native != "signature_time_stamp_token":
                continue
            for token in attr["values"]:
                try:
                    certs.extend(_certs_in_signed_data(token["content"]))
                except Exception:  # noqa: BLE001 - broken tokens just add nothing
                    pass
    return certs


def embedded_certificates(pdf: Path) -> list[x509.Certificate]:
    """Every certificate carried by the CMS blobs (signatures, timestamps) of ``pdf``."""
    certs: dict[bytes, x509.Certificate] = {}
    for match in _CONTENTS.finditer(pdf.read_bytes()):
        try:
            blob = bytes.fromhex(re.sub(rb"\s", b"", match.group(1)).decode())
            info = cms.ContentInfo.load(blob.rstrip(b"\0") or blob, strict=False)
            signed_data = info["content"]
            for cert in _certs_in_signed_data(signed_data):
                certs[cert.dump()] = cert
        except Exception:  # noqa: BLE001
            continue
    return list(certs.values())


def anchors_for(pdf: Path) -> list[x509.Certificate]:
    """Embedded certificates at the top of their chains (self-signed or issuer not embedded)."""
    certs = embedded_certificates(pdf)
    anchors = []
    for cert in certs:
        if cert.subject == cert.issuer:
            anchors.append(cert)
            continue
        issued_by_other = any(
            other is not cert and other.subject == cert.issuer for other in certs
        )
        if not issued_by_other:
            anchors.append(cert)
    return anchors
