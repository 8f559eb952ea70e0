"""Test fixtures for the verification engine: a fixed-time PKI, tiny PDFs and a signer.

Used by tests/verification and bench/verification.py; never by production code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime

from asn1crypto import crl as asn1_crl
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

# Fixed validity so results do not drift with the calendar (until 2045).
NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2045, 1, 1, tzinfo=UTC)

# The digests CertificateBuilder.sign accepts (cryptography keeps its own alias private).
CertificateDigest = (hashes.SHA224 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512
                     | hashes.SHA3_224 | hashes.SHA3_256 | hashes.SHA3_384 | hashes.SHA3_512)


@dataclass
class Identity:
    """A certificate with its private key (cryptography and asn1crypto forms)."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey

    @property
    def asn1(self) -> asn1_x509.Certificate:
        """asn1crypto view of the certificate."""
        return asn1_x509.Certificate.load(self.cert.public_bytes(serialization.Encoding.DER))

    @property
    def asn1_key(self) -> asn1_keys.PrivateKeyInfo:
        """asn1crypto view of the private key."""
        der = self.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return asn1_keys.PrivateKeyInfo.load(der)


@dataclass
class SigningPKI:
    """Root CA plus end-entity identities; ``revoked`` serials appear in the root's CRL."""

    root: Identity
    leaves: dict[str, Identity] = field(default_factory=dict)
    revoked: set[int] = field(default_factory=set)

    def crl(self) -> asn1_crl.CertificateList:
        """The root's CRL (fixed dates) listing ``revoked``."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.root.cert.subject)
            .last_update(datetime(2025, 1, 1, tzinfo=UTC))
            .next_update(NOT_AFTER)
        )
        for serial in sorted(self.revoked):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(datetime(2025, 1, 1, tzinfo=UTC))
                .build()
            )
        signed = builder.sign(self.root.key, hashes.SHA256())
        return asn1_crl.CertificateList.load(signed.public_bytes(serialization.Encoding.DER))


def _name(common: str, org: str | None = None, given: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "VN")]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    if given:
        attrs.append(x509.NameAttribute(NameOID.GIVEN_NAME, given))
        attrs.append(x509.NameAttribute(NameOID.SURNAME, common.split()[0]))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common))
    return x509.Name(attrs)


def make_root(name: str = "eoffice Test Root CA", bits: int = 2048) -> Identity:
    """A self-signed CA certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    subject = _name(name, "eoffice test")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return Identity(cert, key)


def issue(
    root: Identity,
    common: str,
    *,
    org: str | None = None,
    given: str | None = None,
    bits: int = 2048,
    digest: CertificateDigest | None = None,
    ca: bool = False,
) -> Identity:
    """An end-entity (or CA) certificate issued by ``root``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common, org, given))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, ca, ca, False, False), critical=True
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()), False
        )
    )
    cert = builder.sign(root.key, digest or hashes.SHA256())
    return Identity(cert, key)


def make_pki() -> SigningPKI:
    """Root + a leader's personal certificate + an organisation seal certificate."""
    root = make_root()
    pki = SigningPKI(root=root)
    pki.leaves["leader"] = issue(root, "Nguyen Van An", org="UBND tinh Thu Nghiem", given="An")
    pki.leaves["seal"] = issue(root, "UBND tinh Thu Nghiem", org="UBND tinh Thu Nghiem")
    return pki


def _pdf_bytes(objects: list[bytes]) -> bytes:
    """Serialise numbered objects (1..n, object 1 = catalog) with a classic xref table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref))
    return out.getvalue()


def _stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def make_pdf(pages: int = 1, text_field: bool = False, padding: int = 0) -> bytes:
    """A small uncompressed PDF; optionally a filled text field and a large padding stream.

    The padding is an incompressible XObject (not drawn) used to build very large files.
    """
    objects: list[bytes] = []
    # 1 catalog, 2 pages, 3 font, then per page: page, contents
    objects.append(b"")  # catalog placeholder
    objects.append(b"")  # pages placeholder
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    page_refs = []
    extra_refs = b""
    pad_ref = None
    if padding:
        import os

        objects.append(_stream(os.urandom(padding), b"/Type /XObject /Subtype /Image "
                               b"/Width 1 /Height 1 /ColorSpace /DeviceGray "
                               b"/BitsPerComponent 8 "))
        pad_ref = len(objects)
        extra_refs = b"/XObject << /Pad %d 0 R >> " % pad_ref
    field_ref = ap_ref = None
    for i in range(pages):
        content = b"BT /F1 24 Tf 72 720 Td (Hello signed page %d) Tj ET" % (i + 1)
        objects.append(_stream(content))
        contents_ref = len(objects)
        page_refs.append(len(objects) + 1)
        annots = b""
        if text_field and i == 0:
            field_ref = len(objects) + 2
            ap_ref = len(objects) + 3
            annots = b"/Annots [%d 0 R] " % field_ref
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> %s>> %s>>" % (contents_ref, extra_refs, annots)
        )
        if text_field and i == 0:
            assert ap_ref is not None  # numbered above for the first page's field
            objects.append(
                b"<< /Type /Annot /Subtype /Widget /FT /Tx /T (Amount) /V (100 VND) "
                b"/Rect [72 600 272 630] /F 4 /P %d 0 R /AP << /N %d 0 R >> "
                b"/DA (/Helv 12 Tf 0 g) >>" % (page_refs[-1], ap_ref)
            )
            objects.append(
                _stream(b"BT /F1 12 Tf 2 8 Td (100 VND) Tj ET",
                        b"/Type /XObject /Subtype /Form /BBox [0 0 200 30] "
                        b"/Resources << /Font << /F1 3 0 R >> >> ")
            )
    kids = b" ".join(b"%d 0 R" % r for r in page_refs)
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages)
    acroform = b""
    if field_ref:
        acroform = b"/AcroForm << /Fields [%d 0 R] /DA (/Helv 0 Tf 0 g) >> " % field_ref
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R %s>>" % acroform
    return _pdf_bytes(objects)


def sign(
    pdf: bytes,
    signer_id: Identity,
    root: Identity,
    field_name: str = "Signature1",
    md_algorithm: str = "sha256",
) -> bytes:
    """Sign ``pdf`` (incrementally) with pyHanko and return the new bytes."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    signer = signers.SimpleSigner(
        signing_cert=signer_id.asn1,
        signing_key=signer_id.asn1_key,
        cert_registry=SimpleCertificateStore.from_certs([root.asn1]),
    )
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    meta = signers.PdfSignatureMetadata(field_name=field_name, md_algorithm=md_algorithm)
    out = signers.PdfSigner(meta, signer=signer).sign_pdf(writer, bytes_reserved=8192)
    return out.getvalue()


def add_dss(pdf: bytes, certs: list[asn1_x509.Certificate], crls: list[asn1_crl.CertificateList]
            ) -> bytes:
    """Append a DSS with the given certificates and CRLs (an LTV update)."""
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.fields import enumerate_sig_fields
    from pyhanko.sign.validation.dss import DocumentSecurityStore
    from pyhanko.sign.validation.pdf_embedded import extract_contents

    buf = io.BytesIO(pdf)
    reader = PdfFileReader(buf, strict=False)
    contents = [
        extract_contents(sig_obj.get_object())
        for _, sig_obj, _ in enumerate_sig_fields(reader, filled_status=True)
    ]
    for content in contents:
        DocumentSecurityStore.add_dss(buf, content, certs=certs, crls=crls, force_write=True)
        buf.seek(0)
    return buf.getvalue()
