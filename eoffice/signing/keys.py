"""Key sources behind one pyHanko ``Signer`` abstraction: PKCS#12 files and PKCS#11 tokens.

Remote (two-step) signing, where the key never reaches the server, is in ``engine.py``
(``prepare_external`` / ``complete_external``); it only needs the signer's certificate.

Why not ``SimpleSigner``: it keeps the key as ASN.1 and re-parses it with full RSA validation on
every signature (~45 ms). :class:`LoadedKeySigner` parses the PKCS#12 once and keeps the
`cryptography` key object, so a worker pays the cost once per key, not once per document.
It also builds the fixed CMS parts (certificates, signer id, ESS signing-certificate-v2,
algorithm identifiers) once and splices them as DER (``fast_cms``), instead of letting
asn1crypto rebuild and re-encode them for every signature.
Passphrases and PINs are only ever parameters: never stored on objects, never logged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from pyhanko.sign.signers.pdf_cms import Signer
from pyhanko_certvalidator.registry import SimpleCertificateStore
from pyhanko_certvalidator.util import get_pyca_cryptography_hash, process_pss_params

from eoffice.signing.errors import (
    CertificateExpiredError,
    CertificateUsageError,
    KeyMismatchError,
    SignerKeyError,
    TokenError,
    WrongPassphraseError,
)
from eoffice.signing.fast_cms import PrecomputedCMSMixin


def _to_asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


class LoadedKeySigner(PrecomputedCMSMixin, Signer):
    """A pyHanko signer holding an already-parsed `cryptography` private key.

    The certificate and chain are fixed for the signer's life, so the CMS parts built from
    them are encoded once (:class:`~eoffice.signing.fast_cms.PrecomputedCMSMixin`).
    """

    def __init__(self, private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
                 signing_cert: asn1_x509.Certificate,
                 chain: list[asn1_x509.Certificate] | None = None,
                 prefer_pss: bool = False, embed_roots: bool = True) -> None:
        self._private_key = private_key
        super().__init__(
            prefer_pss=prefer_pss, embed_roots=embed_roots, signing_cert=signing_cert,
            cert_registry=SimpleCertificateStore.from_certs([signing_cert, *(chain or [])]),
        )

    async def async_sign_raw(self, data: bytes, digest_algorithm: str,
                             dry_run: bool = False) -> bytes:
        """Sign ``data`` with the loaded key (dry runs are answered without the key)."""
        if dry_run and isinstance(self._private_key, rsa.RSAPrivateKey):
            # pyHanko only needs the length when sizing the signature container.
            return bytes(self._private_key.key_size // 8)
        return self.sign_raw(data, digest_algorithm)

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        """Synchronous raw signature over ``data``."""
        key = self._private_key
        if isinstance(key, rsa.RSAPrivateKey):
            pad, hash_algo = self._rsa_params(digest_algorithm)
            return key.sign(data, pad, hash_algo)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(get_pyca_cryptography_hash(digest_algorithm)))
        raise SignerKeyError(f"unsupported key type {type(key).__name__}")

    def _rsa_params(self, digest_algorithm: str) -> tuple[padding.AsymmetricPadding,
                                                          hashes.HashAlgorithm]:
        # Resolving the mechanism builds asn1crypto objects each time: do it once per digest.
        cache = self.__dict__.setdefault("_rsa_param_cache", {})
        params = cache.get(digest_algorithm)
        if params is None:
            mechanism = self.get_signature_mechanism_for_digest(digest_algorithm)
            if mechanism["algorithm"].native == "rsassa_pss":
                params = process_pss_params(mechanism["parameters"])
            else:
                params = (padding.PKCS1v15(), get_pyca_cryptography_hash(digest_algorithm))
            cache[digest_algorithm] = params
        return params


def _public_bytes(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_key_matches(private_key: object, cert: x509.Certificate) -> None:
    """Raise :class:`KeyMismatchError` unless ``private_key`` belongs to ``cert``."""
    if _public_bytes(private_key.public_key()) != _public_bytes(  # type: ignore[attr-defined]
            cert.public_key()):
        raise KeyMismatchError(f"certificate subject: {cert.subject.rfc4514_string()}")


def check_certificate_usable(cert: asn1_x509.Certificate, at: dt.datetime | None = None) -> None:
    """Key usage allows signatures and ``at`` (default now) is inside the validity period."""
    at = at or dt.datetime.now(dt.UTC)
    usage = cert.key_usage_value
    if usage is not None and not ({"digital_signature", "non_repudiation"} & set(usage.native)):
        raise CertificateUsageError(f"key usage: {', '.join(sorted(usage.native))}")
    validity = cert["tbs_certificate"]["validity"]
    not_before = validity["not_before"].native
    not_after = validity["not_after"].native
    if not (not_before <= at <= not_after):
        raise CertificateExpiredError(
            f"valid {not_before.isoformat()} .. {not_after.isoformat()}, now {at.isoformat()}")


def load_p12_signer(path: Path | str, passphrase: bytes | str, *, prefer_pss: bool = False,
                    check: bool = True) -> LoadedKeySigner:
    """Load a PKCS#12 key file once; the returned signer can sign many documents quickly.

    ``check`` verifies key usage and validity now; the engine checks again at signing time
    (a long-lived worker may hold a key past its expiry).
    """
    name = Path(path).name
    data = Path(path).read_bytes()
    secret = passphrase.encode() if isinstance(passphrase, str) else passphrase
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, secret)
    except ValueError as exc:
        # Wrong passphrase and "not a PKCS#12 file" are indistinguishable by design of the MAC.
        raise WrongPassphraseError(f"file: {name}") from exc
    if key is None or cert is None:
        raise SignerKeyError(f"{name} holds no key and certificate pair")
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise SignerKeyError(f"unsupported key type {type(key).__name__}")
    check_key_matches(key, cert)
    signer = LoadedKeySigner(key, _to_asn1(cert), [_to_asn1(c) for c in extra],
                             prefer_pss=prefer_pss)
    if check:
        check_certificate_usable(signer.signing_cert)  # type: ignore[arg-type]
    return signer


def signer_from_key_and_cert(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
                             cert: x509.Certificate,
                             chain: list[x509.Certificate] | None = None) -> LoadedKeySigner:
    """Build a signer from in-memory objects (checks that the key matches the certificate)."""
    check_key_matches(private_key, cert)
    return LoadedKeySigner(private_key, _to_asn1(cert), [_to_asn1(c) for c in chain or []])


@contextlib.contextmanager
def open_pkcs11_signer(lib_path: str, *, token_label: str, pin: str, key_label: str,
                       cert_label: str | None = None,
                       chain: list[asn1_x509.Certificate] | None = None) -> Iterator[Signer]:
    """Open a PKCS#11 session and yield a pyHanko ``PKCS11Signer`` bound to it.

    Keep the context open while signing a batch: opening a session and logging in is the
    expensive part on a real token.
    """
    from pkcs11 import exceptions as p11_exc
    from pyhanko.config.pkcs11 import TokenCriteria
    from pyhanko.sign.pkcs11 import PKCS11Signer, open_pkcs11_session

    try:
        session = open_pkcs11_session(lib_path, token_criteria=TokenCriteria(label=token_label),
                                      user_pin=pin)
    except (p11_exc.PKCS11Error, OSError, RuntimeError) as exc:
        raise TokenError(f"{type(exc).__name__} opening token '{token_label}'") from exc
    except Exception as exc:  # pyHanko wraps some token errors in its own types
        raise TokenError(f"{type(exc).__name__} opening token '{token_label}'") from exc
    try:
        try:
            signer = PKCS11Signer(session, key_label=key_label,
                                  cert_label=cert_label or key_label, ca_chain=chain or [])
            cert = signer.signing_cert  # forces the certificate lookup now, not mid-signature
        except Exception as exc:
            raise TokenError(f"key/certificate '{key_label}' not usable: {exc}") from exc
        if cert is None:
            raise TokenError(f"no certificate labelled '{cert_label or key_label}'")
        yield signer
    finally:
        session.close()


def sha256_fingerprint(cert: asn1_x509.Certificate) -> str:
    """Colon-separated SHA-256 fingerprint of a certificate."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(cert.dump())
    return ":".join(f"{b:02X}" for b in digest.finalize())
