"""Loading trust anchors: PEM or DER files, and the configured trust directory."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from asn1crypto import pem, x509

TRUST_DIR_ENV = "EOFFICE_TRUST_DIR"
_CERT_SUFFIXES = {".pem", ".crt", ".cer", ".der"}


class CertificateLoadError(ValueError):
    """A trust file could not be read or holds no certificate."""


def _load_one(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateLoadError(f"{path}: {exc.strerror or exc}") from exc
    certs: list[x509.Certificate] = []
    try:
        if pem.detect(data):
            for kind, _, der in pem.unarmor(data, multiple=True):
                if kind in ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"):
                    certs.append(x509.Certificate.load(der))
        else:
            certs.append(x509.Certificate.load(data))
        for cert in certs:
            cert.native  # noqa: B018 - force a full parse now, not during validation
    except Exception as exc:  # noqa: BLE001 - asn1crypto raises many types
        raise CertificateLoadError(f"{path}: not a certificate ({exc})") from exc
    if not certs:
        raise CertificateLoadError(f"{path}: no certificate found")
    return certs


def load_certificates(paths: Iterable[str | Path]) -> list[x509.Certificate]:
    """Certificates from PEM (one or many) or DER files; raises CertificateLoadError."""
    out: list[x509.Certificate] = []
    for p in paths:
        out.extend(_load_one(Path(p)))
    return out


def configured_trust_store() -> list[x509.Certificate]:
    """Every certificate file in ``$EOFFICE_TRUST_DIR`` (none if unset)."""
    directory = os.environ.get(TRUST_DIR_ENV)
    if not directory:
        return []
    root = Path(directory)
    if not root.is_dir():
        raise CertificateLoadError(f"{TRUST_DIR_ENV}={directory} is not a directory")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in _CERT_SUFFIXES)
    return load_certificates(files)
