"""Decree 30/2020/ND-CP conformance: the leader signs first, then the organisation's seal.

Marker for a seal (organisation) certificate, in this order:
1. an ETSI QcType statement of eseal (0.4.0.1862.1.6.2) -> seal; esign (…6.1) -> personal;
2. otherwise a subject with an organizationName and no personal-name attribute (givenName,
   surname, pseudonym) whose commonName is absent or equal to the organizationName -> seal.
Everything else is a personal certificate.
"""

from __future__ import annotations

from typing import Any

from asn1crypto import core, x509

_QC_STATEMENTS = "1.3.6.1.5.5.7.1.3"
_QC_TYPE = "0.4.0.1862.1.6"
_QC_ESIGN = "0.4.0.1862.1.6.1"
_QC_ESEAL = "0.4.0.1862.1.6.2"
_PERSONAL_ATTRS = ("given_name", "surname", "pseudonym")


def _qc_types(cert: x509.Certificate) -> set[str]:
    """QcType OIDs from the qcStatements extension (RFC 3739 / ETSI EN 319 412-5)."""
    found: set[str] = set()
    try:
        for ext in cert["tbs_certificate"]["extensions"] or ():
            if ext["extn_id"].dotted != _QC_STATEMENTS:
                continue
            statements = core.load(ext["extn_value"].contents)
            for statement in statements:
                parts = list(statement)
                if parts and parts[0].dotted == _QC_TYPE and len(parts) > 1:
                    found.update(oid.dotted for oid in parts[1])
    except Exception:  # noqa: BLE001 - odd encodings simply do not count as markers
        return found
    return found


def certificate_kind(cert: x509.Certificate | None) -> str:
    """``"seal"``, ``"personal"`` or ``"unknown"`` (no certificate)."""
    if cert is None:
        return "unknown"
    qc = _qc_types(cert)
    if _QC_ESEAL in qc:
        return "seal"
    if _QC_ESIGN in qc:
        return "personal"
    subject = cert.subject.native
    org = subject.get("organization_name")
    if isinstance(org, list):
        org = org[0] if org else None
    if not org or any(subject.get(a) for a in _PERSONAL_ATTRS):
        return "personal"
    cn = subject.get("common_name")
    if isinstance(cn, list):
        cn = cn[0] if cn else None
    if cn is None or str(cn).strip().casefold() == str(org).strip().casefold():
        return "seal"
    return "personal"


def check_decree30(entries: list[dict[str, Any]], statuses: list[Any]) -> dict[str, Any]:
    """Conformance of the approval signatures (in signing order) to Decree 30."""
    approvals = [
        (entry, status)
        for entry, status in zip(entries, statuses, strict=True)
        if entry.get("type") == "signature"
    ]
    kinds = [certificate_kind(getattr(s, "signing_cert", None)) for _, s in approvals]
    for (entry, _), kind in zip(approvals, kinds, strict=True):
        entry["certificate_kind"] = kind
    reasons: list[str] = []
    if len(approvals) < 2:
        reasons.append("fewer than two approval signatures")
    else:
        if kinds[0] != "personal":
            reasons.append("the first signature is not made with a personal certificate")
        if "seal" not in kinds[1:]:
            reasons.append("no organisation seal signature after the leader's signature")
        first_seal = next((i for i, k in enumerate(kinds) if k == "seal"), None)
        checked = [approvals[0][0]] + ([approvals[first_seal][0]] if first_seal else [])
        for entry in checked:
            if entry["indication"] != "TOTAL_PASSED":
                reasons.append(f"signature {entry['field']!r} is {entry['indication']}")
    return {"conformant": not reasons, "reasons": reasons, "order": kinds}
