"""Development PKI: root, intermediate "CA for state bodies", seals, personal certificates.

Reproducibility: the same command yields the same tree, subjects, serial numbers (derived from
a SHA-256 of each certificate's role), validity windows (fixed calendar dates, not "now") and
URLs. Keys are fresh RSA-2048 keys on every run (deterministic RSA from a seed is not offered
by `cryptography`, and a dev PKI gains nothing from it); passphrases are random. ECDSA P-256 is
available with ``key_type="ec"`` for interoperability tests.

Layout under DIR (the contract in DESIGN.md plus our own service material)::

    root.pem                      trust root (the only file operators import)
    intermediate.pem              CA chuyên dùng cơ quan nhà nước (phát triển)
    chain.pem                     intermediate + root
    users/<username>.p12 / .pass  personal certificates (leaders and clerks, plus test.*)
    seals/<agency_code>.p12 / .pass
    private/                      CA, OCSP responder and TSA keys (PEM, mode 0600)
    services/ocsp.pem tsa.pem     responder / TSA certificates
    crl/root.crl crl/intermediate.crl
    index.json                    every issued certificate: serial, subject, kind, revocation
    images/signatures/<username>.png, images/seals/<agency_code>.png
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from eoffice.agencies.demo import DemoAgency, DemoUser, demo_agencies, demo_users

DEFAULT_BASE_URL = "http://127.0.0.1:8000/pki"
ROOT_NAME = "Root CA eOffice (phát triển)"
INTERMEDIATE_NAME = "CA chuyên dùng cơ quan nhà nước (phát triển)"
ORGANIZATION_IDENTIFIER = ObjectIdentifier("2.5.4.97")

# Fixed windows make two runs of `pki init` produce identical validity data, and let tests run
# without freezing time until 2034 (expired/revoked samples are dated in the past on purpose).
ROOT_VALIDITY = (dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.datetime(2049, 1, 1, tzinfo=dt.UTC))
CA_VALIDITY = (dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.datetime(2044, 1, 1, tzinfo=dt.UTC))
EE_VALIDITY = (dt.datetime(2025, 1, 1, tzinfo=dt.UTC), dt.datetime(2035, 1, 1, tzinfo=dt.UTC))
EXPIRED_VALIDITY = (dt.datetime(2024, 6, 1, tzinfo=dt.UTC), dt.datetime(2025, 6, 1, tzinfo=dt.UTC))
REVOCATION_DATE = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)

TEST_USERS = ("test.revoked", "test.expired", "test.nokeyusage")


def default_pki_dir() -> Path:
    """$EOFFICE_DATA_DIR/pki, else ./var/pki."""
    data_dir = os.environ.get("EOFFICE_DATA_DIR")
    return Path(data_dir) / "pki" if data_dir else Path("var") / "pki"


def default_base_url() -> str:
    """Base URL of the OCSP/CRL/TSA services ($EOFFICE_PKI_BASE_URL)."""
    return os.environ.get("EOFFICE_PKI_BASE_URL", DEFAULT_BASE_URL).rstrip("/")


def _serial(role: str) -> int:
    # Positive, < 2^159, stable for a given role: reproducible trees diff cleanly.
    return int.from_bytes(hashlib.sha256(role.encode()).digest()[:19], "big") | 1


def _new_key(key_type: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _name(attrs: list[tuple[ObjectIdentifier, str]]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])


@dataclass
class IssuedCert:
    """One certificate issued by the dev PKI (recorded in index.json)."""

    kind: str  # root | intermediate | ocsp | tsa | seal | user
    ident: str  # username, agency code or service name
    serial: int
    subject: str
    issuer: str
    not_before: str
    not_after: str
    revoked_at: str | None = None
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class PkiBuilder:
    """Builds the development PKI into a directory."""

    directory: Path
    base_url: str = field(default_factory=default_base_url)
    key_type: str = "rsa"
    agencies: list[DemoAgency] = field(default_factory=demo_agencies)
    users: list[DemoUser] = field(default_factory=demo_users)
    with_images: bool = True
    issued: list[IssuedCert] = field(default_factory=list)

    # -- certificate plumbing -------------------------------------------------------------
    def _cert(
        self,
        *,
        subject: x509.Name,
        public_key: object,
        issuer_cert: x509.Certificate | None,
        issuer_key: object,
        serial: int,
        validity: tuple[dt.datetime, dt.datetime],
        ca: bool = False,
        path_len: int | None = None,
        key_usage: dict[str, bool] | None = None,
        eku: list[ObjectIdentifier] | None = None,
        revocation_urls: tuple[str | None, str | None] = (None, None),
        ocsp_nocheck: bool = False,
    ) -> x509.Certificate:
        issuer_name = subject if issuer_cert is None else issuer_cert.subject
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(serial)
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
            .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(public_key),  # type: ignore[arg-type]
                critical=False,
            )
        )
        aki_key = public_key if issuer_cert is None else issuer_cert.public_key()
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(aki_key),  # type: ignore[arg-type]
            critical=False,
        )
        usage = {
            "digital_signature": False, "content_commitment": False, "key_encipherment": False,
            "data_encipherment": False, "key_agreement": False, "key_cert_sign": False,
            "crl_sign": False, "encipher_only": False, "decipher_only": False,
        }
        usage.update(key_usage or {})
        builder = builder.add_extension(x509.KeyUsage(**usage), critical=True)
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=True)
        ocsp_url, crl_url = revocation_urls
        if ocsp_url:
            access = [
                x509.AccessDescription(
                    x509.AuthorityInformationAccessOID.OCSP,
                    x509.UniformResourceIdentifier(ocsp_url)
                ),
                x509.AccessDescription(
                    x509.AuthorityInformationAccessOID.CA_ISSUERS,
                    x509.UniformResourceIdentifier(f"{self.base_url}/certs/intermediate.cer"),
                ),
            ]
            builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
        if crl_url:
            builder = builder.add_extension(
                x509.CRLDistributionPoints([
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_url)],
                        relative_name=None, reasons=None, crl_issuer=None,
                    )
                ]),
                critical=False,
            )
        if ocsp_nocheck:
            builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]

    def _record(self, kind: str, ident: str, cert: x509.Certificate,
                revoked: bool = False, files: dict[str, str] | None = None) -> None:
        self.issued.append(IssuedCert(
            kind=kind, ident=ident, serial=cert.serial_number,
            subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
            not_before=cert.not_valid_before_utc.isoformat(),
            not_after=cert.not_valid_after_utc.isoformat(),
            revoked_at=REVOCATION_DATE.isoformat() if revoked else None,
            files=files or {},
        ))

    # -- the tree --------------------------------------------------------------------------
    def build(self) -> Path:
        """Create the whole tree; returns the directory."""
        d = self.directory
        for sub in ("users", "seals", "private", "services", "crl", "certs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / "private", 0o700)

        root_key = _new_key(self.key_type)
        root_subject = _name([(NameOID.COUNTRY_NAME, "VN"), (NameOID.ORGANIZATION_NAME,
                              "eOffice (phát triển)"), (NameOID.COMMON_NAME, ROOT_NAME)])
        root = self._cert(subject=root_subject, public_key=root_key.public_key(),
                          issuer_cert=None, issuer_key=root_key, serial=_serial("root"),
                          validity=ROOT_VALIDITY, ca=True, path_len=1,
                          key_usage={"key_cert_sign": True, "crl_sign": True})
        ca_key = _new_key(self.key_type)
        ca_subject = _name([(NameOID.COUNTRY_NAME, "VN"),
                            (NameOID.ORGANIZATION_NAME, "Ban Cơ yếu Chính phủ (mô phỏng)"),
                            (NameOID.COMMON_NAME, INTERMEDIATE_NAME)])
        ca = self._cert(subject=ca_subject, public_key=ca_key.public_key(), issuer_cert=root,
                        issuer_key=root_key, serial=_serial("intermediate"),
                        validity=CA_VALIDITY, ca=True, path_len=0,
                        key_usage={"key_cert_sign": True, "crl_sign": True},
                        revocation_urls=(None, f"{self.base_url}/crl/root.crl"))
        self._record("root", "root", root, files={"cert": "root.pem"})
        self._record("intermediate", "intermediate", ca, files={"cert": "intermediate.pem"})
        pem = serialization.Encoding.PEM
        (d / "root.pem").write_bytes(root.public_bytes(pem))
        (d / "intermediate.pem").write_bytes(ca.public_bytes(pem))
        (d / "chain.pem").write_bytes(ca.public_bytes(pem) + root.public_bytes(pem))
        (d / "certs" / "root.cer").write_bytes(root.public_bytes(serialization.Encoding.DER))
        (d / "certs" / "intermediate.cer").write_bytes(ca.public_bytes(serialization.Encoding.DER))
        key_pem = serialization.PrivateFormat.PKCS8
        for name, key in (("root", root_key), ("intermediate", ca_key)):
            _write_private(d / "private" / f"{name}.key.pem", key.private_bytes(
                pem, key_pem, serialization.NoEncryption()))

        ee_urls = (f"{self.base_url}/ocsp", f"{self.base_url}/crl/intermediate.crl")
        # OCSP responder and TSA.
        for service, eku in (("ocsp", ExtendedKeyUsageOID.OCSP_SIGNING),
                             ("tsa", ExtendedKeyUsageOID.TIME_STAMPING)):
            key = _new_key(self.key_type)
            label = "Máy chủ OCSP" if service == "ocsp" else "Máy chủ cấp dấu thời gian (TSA)"
            cert = self._cert(
                subject=_name([(NameOID.COUNTRY_NAME, "VN"),
                               (NameOID.ORGANIZATION_NAME, "eOffice (phát triển)"),
                               (NameOID.COMMON_NAME, f"{label} (phát triển)")]),
                public_key=key.public_key(), issuer_cert=ca, issuer_key=ca_key,
                serial=_serial(f"service:{service}"), validity=EE_VALIDITY,
                key_usage={"digital_signature": True, "content_commitment": True}, eku=[eku],
                revocation_urls=(None, ee_urls[1]) if service == "ocsp" else ee_urls,
                ocsp_nocheck=service == "ocsp")
            (d / "services" / f"{service}.pem").write_bytes(cert.public_bytes(pem))
            _write_private(d / "private" / f"{service}.key.pem", key.private_bytes(
                pem, key_pem, serialization.NoEncryption()))
            self._record(service, service, cert, files={"cert": f"services/{service}.pem"})

        # End entities: generate keys in parallel (OpenSSL keygen releases the GIL).
        jobs: list[tuple[str, str, x509.Name, tuple[dt.datetime, dt.datetime], dict[str, bool],
                         bool]] = []
        sig_usage = {"digital_signature": True, "content_commitment": True}
        for agency in self.agencies:
            subject = _name([
                (NameOID.COUNTRY_NAME, "VN"), (NameOID.STATE_OR_PROVINCE_NAME, "Thái Bình"),
                (NameOID.ORGANIZATION_NAME, agency.name),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, agency.code),
                (ORGANIZATION_IDENTIFIER, f"VN:{agency.code}"),
                (NameOID.COMMON_NAME, agency.name)])
            jobs.append(("seal", agency.code, subject, EE_VALIDITY, sig_usage, False))
        agency_names = {a.code: a.name for a in self.agencies}
        signing_users = [u for u in self.users if u.role in ("leader", "clerk")
                         and u.agency_code in agency_names]
        for user in signing_users:
            jobs.append(("user", user.username, self._person_subject(
                user.full_name, agency_names[user.agency_code or ""], user.username, user.position),
                EE_VALIDITY, sig_usage, False))
        test_org = self.agencies[0].name
        jobs.append(("user", "test.revoked", self._person_subject(
            "Người Dùng Bị Thu Hồi", test_org, "test.revoked", "Thử nghiệm"),
            EE_VALIDITY, sig_usage, True))
        jobs.append(("user", "test.expired", self._person_subject(
            "Người Dùng Hết Hạn", test_org, "test.expired", "Thử nghiệm"),
            EXPIRED_VALIDITY, sig_usage, False))
        jobs.append(("user", "test.nokeyusage", self._person_subject(
            "Người Dùng Sai Mục Đích", test_org, "test.nokeyusage", "Thử nghiệm"),
            EE_VALIDITY, {"key_encipherment": True}, False))

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
            keys = list(pool.map(lambda _: _new_key(self.key_type), range(len(jobs))))
            results = list(pool.map(
                lambda job_key: self._issue_ee(job_key[0], job_key[1], ca, ca_key, root, ee_urls),
                zip(jobs, keys, strict=True)))
        self.issued.extend(results)

        self._write_index()
        from eoffice.signing.pki_services import PkiAuthority  # local: avoids an import cycle

        authority = PkiAuthority.load(d)
        (d / "crl" / "root.crl").write_bytes(authority.crl_der("root"))
        (d / "crl" / "intermediate.crl").write_bytes(authority.crl_der("intermediate"))
        if self.with_images:
            self._write_images(signing_users)
        return d

    @staticmethod
    def _person_subject(full_name: str, org: str, username: str, position: str) -> x509.Name:
        return _name([
            (NameOID.COUNTRY_NAME, "VN"), (NameOID.STATE_OR_PROVINCE_NAME, "Thái Bình"),
            (NameOID.ORGANIZATION_NAME, org), (NameOID.TITLE, position),
            (NameOID.USER_ID, username), (NameOID.COMMON_NAME, full_name)])

    def _issue_ee(self, job: tuple, key: object, ca: x509.Certificate, ca_key: object,
                  root: x509.Certificate, urls: tuple[str, str]) -> IssuedCert:
        kind, ident, subject, validity, usage, revoked = job
        cert = self._cert(subject=subject, public_key=key.public_key(),  # type: ignore[attr-defined]
                          issuer_cert=ca, issuer_key=ca_key, serial=_serial(f"{kind}:{ident}"),
                          validity=validity, key_usage=usage, revocation_urls=urls)
        folder = "seals" if kind == "seal" else "users"
        passphrase = secrets.token_urlsafe(18)
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(20000)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(passphrase.encode())
        )
        blob = pkcs12.serialize_key_and_certificates(
            ident.encode(), key, cert, [ca, root], encryption)  # type: ignore[arg-type]
        _write_private(self.directory / folder / f"{ident}.p12", blob)
        _write_private(self.directory / folder / f"{ident}.pass", passphrase.encode() + b"\n")
        return IssuedCert(
            kind=kind, ident=ident, serial=cert.serial_number,
            subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
            not_before=cert.not_valid_before_utc.isoformat(),
            not_after=cert.not_valid_after_utc.isoformat(),
            revoked_at=REVOCATION_DATE.isoformat() if revoked else None,
            files={"p12": f"{folder}/{ident}.p12", "pass": f"{folder}/{ident}.pass"})

    def _write_index(self) -> None:
        index = {
            "base_url": self.base_url,
            "key_type": self.key_type,
            "certificates": [vars(c) for c in sorted(self.issued, key=lambda c: (c.kind, c.ident))],
        }
        (self.directory / "index.json").write_text(
            json.dumps(index, ensure_ascii=False, indent=1), encoding="utf-8")

    def _write_images(self, users: Iterable[DemoUser]) -> None:
        from eoffice.signing.appearance import render_seal_png, render_signature_png

        sig_dir = self.directory / "images" / "signatures"
        seal_dir = self.directory / "images" / "seals"
        sig_dir.mkdir(parents=True, exist_ok=True)
        seal_dir.mkdir(parents=True, exist_ok=True)
        for user in users:
            if user.role == "leader":
                render_signature_png(user.full_name, sig_dir / f"{user.username}.png")
        for agency in self.agencies:
            render_seal_png(agency.name, seal_dir / f"{agency.code}.png")


def init_pki(directory: Path | None = None, *, base_url: str | None = None,
             key_type: str = "rsa", agencies: list[DemoAgency] | None = None,
             users: list[DemoUser] | None = None, with_images: bool = True) -> Path:
    """Create (or re-create) the development PKI in ``directory``; returns the directory."""
    builder = PkiBuilder(
        directory=Path(directory or default_pki_dir()),
        base_url=(base_url or default_base_url()).rstrip("/"),
        key_type=key_type,
        agencies=agencies if agencies is not None else demo_agencies(),
        users=users if users is not None else demo_users(),
        with_images=with_images,
    )
    return builder.build()
