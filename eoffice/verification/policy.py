"""Algorithm policy: SHA-1 and RSA < 2048 bits only with proof of existence before a cut-off."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from asn1crypto import x509

_WEAK_HASHES = frozenset({"sha1", "md5", "md2"})
_MIN_RSA_BITS = 2048


def _rsa_bits(cert: x509.Certificate) -> int | None:
    try:
        if cert.public_key.algorithm == "rsa":
            return int(cert.public_key.bit_size)
    except Exception:  # noqa: BLE001 - undecodable key: pyHanko already failed it
        return None
    return None


def _cert_hash(cert: x509.Certificate) -> str | None:
    try:
        return str(cert["signature_algorithm"].hash_algo)
    except Exception:  # noqa: BLE001 - e.g. EdDSA has no separate hash
        return None


def weak_reasons(status: Any) -> list[str]:
    """Why the signature (or its chain) relies on weak cryptography; empty if it does not."""
    reasons: list[str] = []
    md = (getattr(status, "md_algorithm", None) or "").lower()
    if md in _WEAK_HASHES:
        reasons.append(f"signature digest {md}")
    mechanism = (getattr(status, "pkcs7_signature_mechanism", None) or "").lower()
    if any(h in mechanism for h in _WEAK_HASHES):
        reasons.append(f"signature mechanism {mechanism}")
    signer = getattr(status, "signing_cert", None)
    if signer is not None:
        bits = _rsa_bits(signer)
        if bits is not None and bits < _MIN_RSA_BITS:
            reasons.append(f"signer RSA key {bits} bits")
    path = getattr(status, "validation_path", None)
    if path is not None:
        try:
            certs = list(path.iter_certs(include_root=True))
        except Exception:  # noqa: BLE001
            certs = []
        # certs[0] is the anchor: its self-signature is never relied upon.
        for issuer, cert in zip(certs, certs[1:], strict=False):
            h = _cert_hash(cert)
            if h in _WEAK_HASHES:
                reasons.append(f"certificate {cert.subject.human_friendly!r} signed with {h}")
            bits = _rsa_bits(issuer)
            if bits is not None and bits < _MIN_RSA_BITS:
                reasons.append(f"issuer {issuer.subject.human_friendly!r} RSA key {bits} bits")
    return reasons


def _proves_before(ts: Any, cutoff: datetime) -> bool:
    return bool(
        ts is not None
        and ts.intact
        and ts.valid
        and ts.trusted
        and getattr(ts, "timestamp", None) is not None
        and ts.timestamp < cutoff
    )


def weak_algorithm_findings(status: Any, cutoff: datetime, later_doc_ts: list[Any]) -> list[str]:
    """Errors for weak algorithms lacking a trusted timestamp older than ``cutoff``."""
    reasons = weak_reasons(status)
    if not reasons:
        return []
    if _proves_before(getattr(status, "timestamp_validity", None), cutoff):
        return []
    if any(_proves_before(ts, cutoff) for ts in later_doc_ts):
        return []
    return [
        f"weak algorithm without proof of existence before {cutoff.date()}: {r}" for r in reasons
    ]


def _is_ca(cert: x509.Certificate) -> bool:
    if cert.ca:
        return True
    # Legacy v1 self-signed roots carry no basicConstraints at all.
    return cert["tbs_certificate"]["version"].native == "v1" and cert.self_signed != "no"


def _issuer_chain(leaf: x509.Certificate, pool: list[x509.Certificate]) -> list[x509.Certificate]:
    """Issuers of ``leaf`` found by name among ``pool`` (leaf excluded), closest first."""
    chain: list[x509.Certificate] = []
    current = leaf
    for _ in range(16):
        if current.subject == current.issuer:
            break
        issuer = next(
            (c for c in pool if c.subject == current.issuer and c.dump() != current.dump()), None
        )
        if issuer is None or any(issuer.dump() == c.dump() for c in chain):
            break
        chain.append(issuer)
        current = issuer
    return chain


def chain_findings(status: Any, embedded: list[x509.Certificate]) -> list[str]:
    """Issuing certificates that are not CAs (certvalidator trusts anchors blindly)."""
    signer = getattr(status, "signing_cert", None)
    if signer is None:
        return []
    path = getattr(status, "validation_path", None)
    issuers: list[x509.Certificate] = []
    if path is not None:
        try:
            certs = list(path.iter_certs(include_root=True))
            issuers = [c for c in certs if c.dump() != signer.dump()]
        except Exception:  # noqa: BLE001
            issuers = []
    if not issuers:
        issuers = _issuer_chain(signer, embedded)
    return [
        f"issuing certificate {c.subject.human_friendly!r} is not a CA"
        for c in issuers
        if not _is_ca(c)
    ]
