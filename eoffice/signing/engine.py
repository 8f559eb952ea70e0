"""PAdES signing engine: one function signs, every caller (CLI, workers, bench) uses it.

Performance choices (DESIGN "Known pitfalls"): the key stays loaded (``keys.LoadedKeySigner``),
the signature container size is computed from the certificates instead of by pyHanko's
throw-away sizing signature, input is read from a file object and output goes to a temporary
file next to the destination (renamed on success), so a 200 MB PDF is never held in memory.
The checked input reader is handed to the incremental writer (the file is parsed once), and
``LoadedKeySigner`` assembles the CMS from DER encoded once per key (``fast_cms``): pyHanko's
per-signature asn1crypto re-encoding of certificates and attributes was ~90% of the time.

Correctness choices: the output file only appears when signing fully succeeded; a level that
needs a TSA or revocation data raises a retryable error when they are unreachable, never a
silent downgrade; the signing time and the stamp text are Vietnam time (+07:00).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from asn1crypto import cms, pem
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields
from pyhanko.sign.general import SigningError as PyHankoSigningError
from pyhanko.sign.signers import PdfSignatureMetadata, PdfSigner
from pyhanko.sign.signers.pdf_byterange import PreparedByteRangeDigest
from pyhanko.sign.signers.pdf_cms import ExternalSigner, Signer
from pyhanko.sign.signers.pdf_signer import PdfTBSDocument, PdfTimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko.sign.timestamps.requests_client import HTTPTimeStamper
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import (
    ExpiredError,
    InsufficientRevinfoError,
    NotYetValidError,
    PathBuildingError,
    PathValidationError,
    RevokedError,
)
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend
from pyhanko_certvalidator.registry import SimpleCertificateStore

from eoffice.signing import appearance as ap
from eoffice.signing.errors import (
    BrokenPdfError,
    CertificateExpiredError,
    CertificateRevokedError,
    CertificateUntrustedError,
    EncryptedPdfError,
    ExternalSignatureError,
    InvalidStateError,
    NotAPdfError,
    OrderError,
    RevocationUnavailableError,
    SignaturesForbiddenError,
    SigningError,
    TimestampUnavailableError,
)
from eoffice.signing.keys import check_certificate_usable
from eoffice.signing.pki import default_base_url

MD = "sha256"


class Level(StrEnum):
    """PAdES baseline levels."""

    B_B = "B-B"
    B_T = "B-T"
    B_LT = "B-LT"
    B_LTA = "B-LTA"

    @property
    def needs_timestamp(self) -> bool:
        """B-T and above carry an RFC 3161 signature timestamp."""
        return self is not Level.B_B

    @property
    def needs_revocation(self) -> bool:
        """B-LT and above embed CRLs/OCSP responses in the DSS."""
        return self in (Level.B_LT, Level.B_LTA)


@dataclass(frozen=True)
class SigningOptions:
    """Per-call options (no secrets)."""

    level: Level = Level.B_B
    tsa_url: str | None = None  # default: $EOFFICE_PKI_BASE_URL/tsa
    trust_roots: tuple[Path, ...] = ()  # needed for B-LT/B-LTA path building
    reason: str | None = None
    location: str | None = None
    contact_info: str | None = None
    field_name: str | None = None
    timeout: float = 10.0

    def resolved_tsa_url(self) -> str:
        """TSA URL to use for B-T and above."""
        return self.tsa_url or f"{default_base_url()}/tsa"


@dataclass(frozen=True)
class VisibleField:
    """Where and how a signature is drawn. ``page`` is 0-based; -1 = last page."""

    box: ap.Box
    style: Any  # a pyHanko stamp style, usually appearance.DecreeStampStyle
    page: int = -1


@dataclass(frozen=True)
class SignResult:
    """Outcome of one signature."""

    output: Path
    field_name: str
    level: Level
    signing_time: dt.datetime
    signer_subject: str


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _open_reader(handle: IO[bytes], name: str) -> PdfFileReader:
    head = handle.read(1024)
    handle.seek(0)
    if b"%PDF-" not in head:
        raise NotAPdfError(name)
    try:
        reader = PdfFileReader(handle, strict=False)
        # Touch the page tree and trailer now: lazily-detected damage would otherwise surface
        # halfway through writing the output.
        _ = reader.root["/Pages"]
        _ = reader.root.get("/AcroForm")
    except Exception as exc:  # pyHanko raises many types on garbage (see DESIGN pitfalls)
        if "encrypt" in str(exc).lower():
            raise EncryptedPdfError(name) from exc
        raise BrokenPdfError(f"{name}: {type(exc).__name__}") from exc
    if reader.encrypted:
        raise EncryptedPdfError(name)
    try:
        from pyhanko.sign.validation.pdf_embedded import read_certification_data

        cert_info = read_certification_data(reader)
    except Exception as exc:
        raise BrokenPdfError(f"{name}: unreadable certification signature") from exc
    if cert_info is not None and cert_info.permission.value == 1:
        raise SignaturesForbiddenError(name)
    return reader


def _page_box(reader: PdfFileReader, page: int) -> tuple[int, float, float]:
    pages = int(reader.root["/Pages"]["/Count"])
    index = pages - 1 if page < 0 else page
    if not 0 <= index < pages:
        raise BrokenPdfError(f"page {page} out of range (1..{pages})")
    page_ref, _ = reader.find_page_for_modification(index)
    page_obj = page_ref.get_object()
    # MediaBox is inheritable: fall back to the page tree root, then A4
    box = page_obj.get("/MediaBox") or reader.root["/Pages"].get("/MediaBox") \
        or [0, 0, 595.28, 841.89]
    return index, float(box[2]) - float(box[0]), float(box[3]) - float(box[1])


# --------------------------------------------------------------------------------------------
# revocation / timestamp plumbing
# --------------------------------------------------------------------------------------------
def _load_roots(paths: Iterable[Path]) -> list[asn1_x509.Certificate]:
    roots = []
    for path in paths:
        data = Path(path).read_bytes()
        if pem.detect(data):
            for _, _, der in pem.unarmor(data, multiple=True):
                roots.append(asn1_x509.Certificate.load(der))
        else:
            roots.append(asn1_x509.Certificate.load(data))
    return roots


class _Revinfo:
    """A fetching validation context plus the HTTP backend it must close afterwards."""

    def __init__(self, signer: Signer, options: SigningOptions) -> None:
        self.backend = AIOHttpFetcherBackend(per_request_timeout=options.timeout)
        self.context = _validation_context(signer, options, self.backend)

    async def aclose(self) -> None:
        await self.context.aclose()
        await self.backend.close()


def _validation_context(signer: Signer, options: SigningOptions,
                        backend: AIOHttpFetcherBackend) -> ValidationContext:
    return ValidationContext(
        trust_roots=_load_roots(options.trust_roots),
        other_certs=list(signer.cert_registry or []),
        allow_fetching=True,
        revocation_mode="require",
        fetcher_backend=backend,
    )


async def _check_revocation(signer: Signer, vc: ValidationContext) -> None:
    cert = signer.signing_cert
    validator = CertificateValidator(cert, intermediate_certs=list(signer.cert_registry or []),
                                     validation_context=vc)
    try:
        await validator.async_validate_usage(set())
    except RevokedError as exc:
        raise CertificateRevokedError(str(exc)) from exc
    except (ExpiredError, NotYetValidError) as exc:
        raise CertificateExpiredError(str(exc)) from exc
    except InsufficientRevinfoError as exc:
        raise RevocationUnavailableError(str(exc)) from exc
    except PathBuildingError as exc:
        raise CertificateUntrustedError(str(exc)) from exc
    except PathValidationError as exc:
        message = str(exc)
        if "revocation" in message.lower() or "fetch" in message.lower():
            raise RevocationUnavailableError(message) from exc
        raise CertificateUntrustedError(message) from exc


def _reserve_size(signer: Signer, level: Level) -> int:
    # CMS overhead: certificates + signature + signed attributes, with headroom. A timestamp
    # token carries the TSA chain (~3 certificates) and its own signature.
    registry: Iterable[asn1_x509.Certificate] = signer.cert_registry or []
    certs = sum(len(c.dump()) for c in registry)
    if signer.signing_cert is not None:
        certs += len(signer.signing_cert.dump())
    size = certs + 4096
    if level.needs_timestamp:
        size += 8192
    # pyHanko counts the placeholder in hex digits (two per CMS byte).
    return 2 * size


# --------------------------------------------------------------------------------------------
# the one signing function
# --------------------------------------------------------------------------------------------
def _atomic_output(output: Path) -> tuple[IO[bytes], Path]:
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent)
    return os.fdopen(fd, "w+b"), Path(tmp)


def _map_pyhanko_error(exc: Exception) -> SigningError:
    if isinstance(exc, SigningError):
        return exc
    if isinstance(exc, TimestampRequestError):
        return TimestampUnavailableError(str(exc))
    text = str(exc)
    lowered = text.lower()
    if "timestamp" in lowered or "tsa" in lowered:
        return TimestampUnavailableError(text)
    if "revocation" in lowered or "ocsp" in lowered or "crl" in lowered:
        return RevocationUnavailableError(text)
    if "forbids" in lowered or "docmdp" in lowered or "certif" in lowered and "lock" in lowered:
        return SignaturesForbiddenError(text)
    return BrokenPdfError(f"{type(exc).__name__}: {text}")


async def async_sign_pdf_file(
    input_path: Path | str,
    output_path: Path | str,
    signer: Signer,
    *,
    options: SigningOptions | None = None,
    visible: VisibleField | None = None,
    signing_time: dt.datetime | None = None,
) -> SignResult:
    """Sign ``input_path`` into ``output_path`` (atomic; input never modified)."""
    options = options or SigningOptions()
    level = Level(options.level)
    input_path, output_path = Path(input_path), Path(output_path)
    moment = (signing_time or ap.vn_now()).astimezone(ap.VN_TZ)
    if signer.signing_cert is None:
        raise SigningError("signer without certificate")
    check_certificate_usable(signer.signing_cert, at=moment)

    revinfo = _Revinfo(signer, options) if level.needs_revocation else None
    vc = revinfo.context if revinfo is not None else None
    try:
        if vc is not None:
            await _check_revocation(signer, vc)
        timestamper = (HTTPTimeStamper(options.resolved_tsa_url(), timeout=options.timeout)
                       if level.needs_timestamp else None)
        with open(input_path, "rb") as infile:
            reader = _open_reader(infile, input_path.name)
            field_name, new_field_spec = _new_field(reader, options, visible)
            meta = PdfSignatureMetadata(
                field_name=field_name, md_algorithm=MD,
                subfilter=fields.SigSeedSubFilter.PADES,
                reason=options.reason, location=options.location,
                contact_info=options.contact_info,
                embed_validation_info=level.needs_revocation,
                use_pades_lta=level is Level.B_LTA,
                validation_context=vc,
                signer_key_usage=set(),
            )
            pdf_signer = PdfSigner(
                meta, signer=signer, timestamper=timestamper,
                stamp_style=visible.style if visible is not None else None,
                new_field_spec=new_field_spec)
            # Reuse the checked reader: a second reader would parse the xref table again.
            writer = IncrementalPdfFileWriter.from_reader(reader)
            out_handle, tmp_path = _atomic_output(output_path)
            try:
                with out_handle:
                    session = pdf_signer.init_signing_session(writer)
                    session.system_time = moment
                    validation_info = await session.perform_presign_validation(writer)
                    tbs = session.prepare_tbs_document(
                        validation_info=validation_info,
                        bytes_reserved=_reserve_size(signer, level))
                    prepared, res_output = tbs.digest_tbs_document(output=out_handle)
                    from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes

                    post = await tbs.perform_signature(
                        document_digest=prepared.document_digest,
                        pdf_cms_signed_attrs=PdfCMSSignedAttributes(signing_time=moment))
                    await post.post_signature_processing(res_output)
                os.replace(tmp_path, output_path)
            except BaseException:
                tmp_path.unlink(missing_ok=True)
                raise
    except SigningError:
        raise
    except (TimestampRequestError, PyHankoSigningError, OSError, ValueError, KeyError,
            AssertionError, TypeError) as exc:
        if isinstance(exc, FileNotFoundError) and not input_path.exists():
            raise NotAPdfError(f"{input_path.name}: file not found") from exc
        raise _map_pyhanko_error(exc) from exc
    finally:
        if revinfo is not None:
            await revinfo.aclose()
    return SignResult(output=output_path, field_name=field_name, level=level,
                      signing_time=moment,
                      signer_subject=signer.signing_cert.subject.human_friendly)


def sign_pdf_file(input_path: Path | str, output_path: Path | str, signer: Signer, *,
                  options: SigningOptions | None = None, visible: VisibleField | None = None,
                  signing_time: dt.datetime | None = None) -> SignResult:
    """Synchronous wrapper of :func:`async_sign_pdf_file` (workers and CLI)."""
    return asyncio.run(async_sign_pdf_file(input_path, output_path, signer, options=options,
                                           visible=visible, signing_time=signing_time))


def _next_field_name(existing: set[str], prefix: str) -> str:
    n = 1
    while f"{prefix}{n}" in existing:
        n += 1
    return f"{prefix}{n}"


def _new_field(reader: PdfFileReader, options: SigningOptions, visible: VisibleField | None
               ) -> tuple[str, fields.SigFieldSpec | None]:
    """The new signature field's name and, for a visible signature, its spec."""
    existing = {name for name, _, _ in fields.enumerate_sig_fields(reader)}
    field_name = options.field_name or _next_field_name(existing, "Signature")
    if visible is None:
        return field_name, None
    page_index, _, _ = _page_box(reader, visible.page)
    # pyHanko writes the box as PDF reals; its int-only annotation is too narrow, and int
    # boxes would move Decree 30 positions (given in mm) on the page.
    box = tuple(round(v, 2) for v in visible.box)
    return field_name, fields.SigFieldSpec(sig_field_name=field_name, on_page=page_index,
                                           box=box)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Decree 30 operations
# --------------------------------------------------------------------------------------------
LEADER_FIELD_PREFIX = "LeaderSignature"
SEAL_FIELD_PREFIX = "OrganisationSeal"


def _field_names(path: Path) -> set[str]:
    with open(path, "rb") as handle:
        reader = _open_reader(handle, path.name)
        return {name for name, _, _ in fields.enumerate_sig_fields(reader)}


def sign_as_leader(input_path: Path | str, output_path: Path | str, signer: Signer, *,
                   position: str, full_name: str, signature_image: Path,
                   competence: str | None = None, page: int = -1, box: ap.Box | None = None,
                   options: SigningOptions | None = None) -> SignResult:
    """Leader's visible signature (blue image between position and name), bottom-right of the
    last page unless ``page``/``box`` are given."""
    options = options or SigningOptions()
    name, visible = leader_field(input_path, position=position, full_name=full_name,
                                 signature_image=signature_image, competence=competence,
                                 page=page, box=box)
    opts = _with(options, field_name=options.field_name or name,
                 reason=options.reason or f"{position} {full_name} ký văn bản")
    return sign_pdf_file(input_path, output_path, signer, options=opts, visible=visible)


def leader_field(input_path: Path | str, *, position: str, full_name: str,
                 signature_image: Path, competence: str | None = None, page: int = -1,
                 box: ap.Box | None = None) -> tuple[str, VisibleField]:
    """The next free leader field name and its Decree 30 appearance (also for two-step)."""
    input_path = Path(input_path)
    with open(input_path, "rb") as handle:
        reader = _open_reader(handle, input_path.name)
        _, width, height = _page_box(reader, page)
        existing = {name for name, _, _ in fields.enumerate_sig_fields(reader)}
    field_box = box or ap.default_leader_box(width, height)
    style = ap.leader_style(position, full_name, signature_image, field_box, competence)
    return (_next_field_name(existing, LEADER_FIELD_PREFIX),
            VisibleField(field_box, style, page))


def _with(options: SigningOptions, **changes: Any) -> SigningOptions:
    from dataclasses import replace

    return replace(options, **changes)


@dataclass(frozen=True)
class LeaderSignatureInfo:
    """The leader signature found by :func:`check_leader_signature_present`."""

    field_name: str
    page: int
    box: ap.Box
    signer: str


def check_leader_signature_present(pdf_path: Path | str,
                                   trust_roots: Iterable[Path]) -> LeaderSignatureInfo:
    """Raise :class:`OrderError` unless a leader signature is present, intact, valid and trusted.

    Returns where the leader's field is, so the seal can be placed over its image.
    """
    from pyhanko.sign.validation import validate_pdf_signature

    pdf_path = Path(pdf_path)
    roots = _load_roots(trust_roots)
    with open(pdf_path, "rb") as handle:
        reader = _open_reader(handle, pdf_path.name)
        found: list[LeaderSignatureInfo] = []
        for sig in reader.embedded_signatures:
            if not sig.field_name.startswith(LEADER_FIELD_PREFIX):
                continue
            vc = ValidationContext(trust_roots=roots, allow_fetching=False,
                                   revocation_mode="soft-fail")
            try:
                status = validate_pdf_signature(sig, signer_validation_context=vc)
            except Exception as exc:
                raise OrderError(f"{sig.field_name}: {type(exc).__name__}") from exc
            if not (status.intact and status.valid and status.trusted):
                raise OrderError(f"{sig.field_name}: intact={status.intact} "
                                 f"valid={status.valid} trusted={status.trusted}")
            annot = sig.sig_field
            rect = [float(v) for v in annot["/Rect"]]
            page_ref = annot.get("/P")
            page_index = -1
            if page_ref is not None:
                for i in range(int(reader.root["/Pages"]["/Count"])):
                    if reader.find_page_for_modification(i)[0].idnum == page_ref.idnum:
                        page_index = i
                        break
            found.append(LeaderSignatureInfo(sig.field_name, page_index,
                                             (rect[0], rect[1], rect[2], rect[3]),
                                             status.signing_cert.subject.human_friendly))
    if not found:
        raise OrderError("no leader signature field")
    return found[-1]


def issue_with_seal(input_path: Path | str, output_path: Path | str, signer: Signer, *,
                    seal_image: Path, number_notation: str, issued_on: dt.date,
                    trust_roots: Iterable[Path],
                    options: SigningOptions | None = None) -> SignResult:
    """Clerk's issuance: red seal over the left third of the leader's signature image.

    Refused (:class:`OrderError`) unless a valid leader signature is present. The number,
    notation and date are assigned by the caller and recorded in the signature's /Reason.
    """
    options = options or SigningOptions()
    leader = check_leader_signature_present(input_path, trust_roots)
    box = ap.seal_box_over(leader.box)
    existing = _field_names(Path(input_path))
    reason = f"Phát hành văn bản số {number_notation} ngày {issued_on.strftime('%d/%m/%Y')}"
    opts = _with(options, field_name=options.field_name
                 or _next_field_name(existing, SEAL_FIELD_PREFIX),
                 reason=options.reason or reason)
    return sign_pdf_file(input_path, output_path, signer, options=opts,
                         visible=VisibleField(box, ap.seal_style(seal_image), leader.page))


def stamp_attachment(input_path: Path | str, output_path: Path | str, signer: Signer, *,
                     number_notation: str, options: SigningOptions | None = None,
                     signing_time: dt.datetime | None = None) -> SignResult:
    """Organisation signature on a separate attachment file: text stamp top-right of page 1."""
    options = options or SigningOptions()
    moment = (signing_time or ap.vn_now()).astimezone(ap.VN_TZ)
    input_path = Path(input_path)
    with open(input_path, "rb") as handle:
        reader = _open_reader(handle, input_path.name)
        _, width, height = _page_box(reader, 0)
        existing = {name for name, _, _ in fields.enumerate_sig_fields(reader)}
    box = ap.top_right_box(width, height, 2, width=150)
    opts = _with(options, field_name=options.field_name
                 or _next_field_name(existing, "AttachmentSeal"),
                 reason=options.reason or f"Phụ lục kèm theo văn bản số {number_notation}")
    return sign_pdf_file(input_path, output_path, signer, options=opts, signing_time=moment,
                         visible=VisibleField(box, ap.attachment_style(number_notation, moment), 0))


def stamp_copy(input_path: Path | str, output_path: Path | str, signer: Signer, *,
               copy_type: str, agency_name: str, number_notation: str | None = None,
               options: SigningOptions | None = None,
               signing_time: dt.datetime | None = None) -> SignResult:
    """Electronic copy (SAO Y / SAO LỤC / TRÍCH SAO): text stamp top-right of page 1."""
    if copy_type.upper() not in ap.COPY_TYPES:
        raise ValueError(f"copy_type must be one of {sorted(ap.COPY_TYPES)}")
    options = options or SigningOptions()
    moment = (signing_time or ap.vn_now()).astimezone(ap.VN_TZ)
    input_path = Path(input_path)
    with open(input_path, "rb") as handle:
        reader = _open_reader(handle, input_path.name)
        _, width, height = _page_box(reader, 0)
        existing = {name for name, _, _ in fields.enumerate_sig_fields(reader)}
    lines = 4 if number_notation else 3
    box = ap.top_right_box(width, height, lines, width=220)
    opts = _with(options, field_name=options.field_name or _next_field_name(existing, "CopySeal"),
                 reason=options.reason or f"{copy_type.upper()} - {agency_name}")
    style = ap.copy_style(copy_type, agency_name, moment, number_notation)
    return sign_pdf_file(input_path, output_path, signer, options=opts, signing_time=moment,
                         visible=VisibleField(box, style, 0))


# --------------------------------------------------------------------------------------------
# two-step (remote) signing
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PreparedSignature:
    """Result of :func:`prepare_external`.

    ``data_to_sign`` is the DER of the CMS signed attributes; a device that hashes itself
    signs it as-is (e.g. CKM_SHA256_RSA_PKCS); one that takes a digest signs ``digest``.
    ``state`` is opaque JSON (no secrets) to persist until :func:`complete_external`.
    """

    digest: bytes
    data_to_sign: bytes
    state: bytes
    prepared_path: Path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


async def async_prepare_external(
    input_path: Path | str, prepared_path: Path | str, signing_cert: asn1_x509.Certificate,
    chain: list[asn1_x509.Certificate] | None = None, *,
    options: SigningOptions | None = None, visible: VisibleField | None = None,
) -> PreparedSignature:
    """Reserve the signature field and placeholder; return what the device must sign."""
    options = options or SigningOptions()
    level = Level(options.level)
    input_path, prepared_path = Path(input_path), Path(prepared_path)
    moment = ap.vn_now()
    check_certificate_usable(signing_cert, at=moment)
    ext = ExternalSigner(signing_cert, SimpleCertificateStore.from_certs(chain or []),
                         signature_value=bytes(signing_cert.public_key.byte_size))
    if level.needs_revocation:
        revinfo = _Revinfo(ext, options)
        try:
            await _check_revocation(ext, revinfo.context)
        finally:
            await revinfo.aclose()
    with open(input_path, "rb") as infile:
        reader = _open_reader(infile, input_path.name)
        field_name, spec = _new_field(reader, options, visible)
        meta = PdfSignatureMetadata(field_name=field_name, md_algorithm=MD,
                                    subfilter=fields.SigSeedSubFilter.PADES,
                                    reason=options.reason, location=options.location)
        pdf_signer = PdfSigner(meta, signer=ext, new_field_spec=spec,
                               stamp_style=visible.style if visible else None)
        writer = IncrementalPdfFileWriter.from_reader(reader)
        out_handle, tmp_path = _atomic_output(prepared_path)
        try:
            with out_handle:
                session = pdf_signer.init_signing_session(writer)
                session.system_time = moment
                tbs = session.prepare_tbs_document(None, bytes_reserved=_reserve_size(ext, level))
                prepared, _ = tbs.digest_tbs_document(output=out_handle)
            os.replace(tmp_path, prepared_path)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
    from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes

    signed_attrs = await ext.signed_attrs(
        prepared.document_digest, MD, attr_settings=PdfCMSSignedAttributes(signing_time=moment),
        use_pades=True)
    data_to_sign = signed_attrs.dump()
    state = {
        "v": 1, "field": field_name, "level": level.value, "md": MD,
        "document_digest": prepared.document_digest.hex(),
        "start": prepared.reserved_region_start, "end": prepared.reserved_region_end,
        "signed_attrs": _b64(data_to_sign), "cert": _b64(signing_cert.dump()),
        "chain": [_b64(c.dump()) for c in chain or []],
        "prepared_sha256": _sha256_file(prepared_path),
        "tsa_url": options.resolved_tsa_url() if level.needs_timestamp else None,
    }
    return PreparedSignature(digest=hashlib.sha256(data_to_sign).digest(),
                             data_to_sign=data_to_sign,
                             state=json.dumps(state).encode(), prepared_path=prepared_path)


def prepare_external(input_path: Path | str, prepared_path: Path | str,
                     signing_cert: asn1_x509.Certificate,
                     chain: list[asn1_x509.Certificate] | None = None, *,
                     options: SigningOptions | None = None,
                     visible: VisibleField | None = None) -> PreparedSignature:
    """Synchronous :func:`async_prepare_external`."""
    return asyncio.run(async_prepare_external(input_path, prepared_path, signing_cert, chain,
                                              options=options, visible=visible))


def _verify_raw(cert: asn1_x509.Certificate, data: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    public = load_der_public_key(cert.public_key.dump())
    try:
        if isinstance(public, rsa.RSAPublicKey):
            try:
                public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                public.verify(signature, data, padding.PSS(padding.MGF1(hashes.SHA256()), 32),
                              hashes.SHA256())
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except InvalidSignature:
        return False
    return True


async def async_complete_external(prepared_path: Path | str, state: bytes,
                                  signature: bytes, output_path: Path | str, *,
                                  options: SigningOptions | None = None) -> SignResult:
    """Embed the device's signature (raw value or full CMS), check it, write ``output_path``."""
    prepared_path, output_path = Path(prepared_path), Path(output_path)
    try:
        st = json.loads(state)
        cert = asn1_x509.Certificate.load(base64.b64decode(st["cert"]))
        chain = [asn1_x509.Certificate.load(base64.b64decode(c)) for c in st["chain"]]
        signed_attrs_der = base64.b64decode(st["signed_attrs"])
        level = Level(st["level"])
        prepared = PreparedByteRangeDigest(bytes.fromhex(st["document_digest"]),
                                           int(st["start"]), int(st["end"]))
    except Exception as exc:
        raise InvalidStateError(type(exc).__name__) from exc
    if _sha256_file(prepared_path) != st["prepared_sha256"]:
        raise InvalidStateError("prepared file changed since prepare()")
    options = options or SigningOptions(level=level, tsa_url=st.get("tsa_url"))

    cms_obj = _parse_cms(signature)
    if cms_obj is not None:
        signer_info = cms_obj["content"]["signer_infos"][0]
        sid = signer_info["sid"]
        if sid.name != "issuer_and_serial_number" or \
                sid.chosen["serial_number"].native != cert.serial_number:
            raise ExternalSignatureError("CMS made by another certificate")
        if signer_info["signed_attrs"].dump(force=True)[1:] != signed_attrs_der[1:]:
            raise ExternalSignatureError("CMS signed attributes differ from prepare()")
        raw = signer_info["signature"].native
    else:
        raw = signature
    if not _verify_raw(cert, signed_attrs_der, raw):
        raise ExternalSignatureError("signature does not verify with the expected certificate")
    ext = ExternalSigner(cert, SimpleCertificateStore.from_certs(chain), signature_value=raw)
    timestamper = (HTTPTimeStamper(options.resolved_tsa_url(), timeout=options.timeout)
                   if level.needs_timestamp else None)
    try:
        final_cms = await ext.async_sign_prescribed_attributes(
            MD, signed_attrs=cms.CMSAttributes.load(signed_attrs_der), timestamper=timestamper)
    except TimestampRequestError as exc:
        raise TimestampUnavailableError(str(exc)) from exc
    out_handle, tmp_path = _atomic_output(output_path)
    try:
        with out_handle, open(prepared_path, "rb") as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out_handle.write(chunk)
            out_handle.flush()
            await PdfTBSDocument.async_finish_signing(out_handle, prepared, final_cms)
        if level.needs_revocation:
            await _add_ltv(tmp_path, cert, chain, options, st["field"],
                           lta=level is Level.B_LTA)
        await _check_embedded(tmp_path, st["field"], cert)
        os.replace(tmp_path, output_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return SignResult(output=output_path, field_name=st["field"], level=level,
                      signing_time=ap.vn_now(), signer_subject=cert.subject.human_friendly)


def complete_external(prepared_path: Path | str, state: bytes, signature: bytes,
                      output_path: Path | str, *,
                      options: SigningOptions | None = None) -> SignResult:
    """Synchronous :func:`async_complete_external`."""
    return asyncio.run(async_complete_external(prepared_path, state, signature, output_path,
                                               options=options))


def _parse_cms(data: bytes) -> cms.ContentInfo | None:
    if not data or data[0] != 0x30:
        return None
    try:
        info = cms.ContentInfo.load(data)
        if info["content_type"].native != "signed_data":
            return None
        _ = info["content"]["signer_infos"][0]["signature"].native
        return info
    except Exception:
        return None


async def _add_ltv(path: Path, cert: asn1_x509.Certificate, chain: list[asn1_x509.Certificate],
                   options: SigningOptions, field_name: str, lta: bool) -> None:
    """Append DSS (and for LTA a document timestamp) to an already signed file."""
    from pyhanko.sign.validation import async_add_validation_info

    ext = ExternalSigner(cert, SimpleCertificateStore.from_certs(chain))
    revinfo = _Revinfo(ext, options)
    vc = revinfo.context
    try:
        await _check_revocation(ext, vc)
        with open(path, "r+b") as handle:
            reader = PdfFileReader(handle, strict=False)
            sig = next(s for s in reader.embedded_signatures if s.field_name == field_name)
            await async_add_validation_info(sig, vc, in_place=True)
        if lta:
            timestamper = HTTPTimeStamper(options.resolved_tsa_url(), timeout=options.timeout)
            with open(path, "r+b") as handle:
                writer = IncrementalPdfFileWriter(handle, strict=False)
                await PdfTimeStamper(timestamper).async_timestamp_pdf(
                    writer, MD, validation_context=vc, in_place=True)
    except TimestampRequestError as exc:
        raise TimestampUnavailableError(str(exc)) from exc
    finally:
        await revinfo.aclose()


async def _check_embedded(path: Path, field_name: str, cert: asn1_x509.Certificate) -> None:
    from pyhanko.sign.validation import async_validate_pdf_signature

    with open(path, "rb") as handle:
        reader = PdfFileReader(handle, strict=False)
        sig = next((s for s in reader.embedded_signatures if s.field_name == field_name), None)
        if sig is None:
            raise ExternalSignatureError("signature field missing after embedding")
        if sig.signer_cert.dump() != cert.dump():
            raise ExternalSignatureError("embedded signature made by another certificate")
        context = ValidationContext(trust_roots=[cert], allow_fetching=False,
                                    revocation_mode="soft-fail")
        status = await async_validate_pdf_signature(sig, signer_validation_context=context)
        if not (status.intact and status.valid):
            raise ExternalSignatureError(f"intact={status.intact} valid={status.valid}")


__all__ = [
    "Level", "SigningOptions", "VisibleField", "SignResult", "PreparedSignature",
    "LeaderSignatureInfo", "sign_pdf_file", "async_sign_pdf_file", "sign_as_leader",
    "leader_field",
    "issue_with_seal", "stamp_attachment", "stamp_copy", "check_leader_signature_present",
    "prepare_external", "async_prepare_external", "complete_external",
    "async_complete_external",
]
