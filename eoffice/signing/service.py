"""Signing jobs: the leader's signature, the organisation seal at issuance, two-step signing.

Three kinds of :class:`~eoffice.models.Job`:

``sign.leader``  the leader signs with a PKCS#12 key file the server holds, unlocked by a
                 passphrase given with the request (see ``eoffice.signing.api.sign_document``
                 for why the passphrase never leaves that request);
``sign.remote``  two-step signing with the signer's own token: the worker prepares the field
                 and the signed attributes, the signer's device signs them, the worker embeds;
``sign.seal``    the clerk's issuance: number and date, then the agency's seal (a server-held
                 key: PKCS#12 file + passphrase file, or an HSM over PKCS#11) over the left
                 third of the leader's signature, and a text stamp on every PDF attachment.

A job goes ``queued → running → (awaiting_signature → queued → running →) succeeded|failed``.
``params["phase"]`` says which half of a two-phase job the next ``running`` is.

Idempotency: every file a job produces is saved as a new revision whose ``job_id`` is unique,
checked inside the saving transaction; a task re-run after a crash redoes the file work and
then finds (or writes) exactly one revision. A finished job is never run again.

Transactions: the worker functions take a *session factory* (``eoffice.db.task_session``) and
open a short transaction to claim the job, none while the PDF work runs, and one to save the
outcome. Holding a transaction across seconds of PDF work would block every writer on SQLite
(``BEGIN IMMEDIATE``) and hide progress from the users polling ``GET /jobs/{id}``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import functools
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asn1crypto import pem
from asn1crypto import x509 as asn1_x509
from pyhanko.sign.signers.pdf_cms import Signer
from sqlalchemy import update
from sqlmodel import Session, col, select

from eoffice.audit.service import record
from eoffice.blobs.service import copy_to, get_blob_store
from eoffice.documents.service import get_own, issue_document, number_notation
from eoffice.errors import (
    AppError,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from eoffice.models import (
    Agency,
    Attachment,
    AttachmentRevision,
    Blob,
    Document,
    DocumentRevision,
    Job,
    User,
    utcnow,
)
from eoffice.outbox import enqueue
from eoffice.rows import insert_ignore
from eoffice.settings import Settings, get_settings
from eoffice.signing import engine
from eoffice.signing.errors import OrderError, SigningError, WrongPassphraseError
from eoffice.signing.keys import check_certificate_usable, load_p12_signer, open_pkcs11_signer
from eoffice.users.service import Principal

log = logging.getLogger(__name__)

JOB_LEADER = "sign.leader"
JOB_REMOTE = "sign.remote"
JOB_SEAL = "sign.seal"
SIGN_KINDS = (JOB_LEADER, JOB_REMOTE, JOB_SEAL)
ACTIVE = ("queued", "running", "awaiting_signature")
LEVELS = tuple(level.value for level in engine.Level)
REASON_LEADER = "leader_signature"
REASON_SEAL = "seal"

SessionFactory = Callable[[], AbstractContextManager[Session]]


class TransientJobError(Exception):
    """The job met a retryable engine error (TSA/OCSP unreachable); the task retries it."""

    def __init__(self, error: SigningError) -> None:
        super().__init__(str(error))
        self.error = error


# --------------------------------------------------------------------------------------------
# configuration: where keys, images and trust anchors are
# --------------------------------------------------------------------------------------------
def _pki_dir(settings: Settings) -> Path:
    assert settings.pki_dir is not None
    return settings.pki_dir


def user_key_path(username: str, settings: Settings | None = None) -> Path:
    """The leader's server-held PKCS#12 file."""
    settings = settings or get_settings()
    return (settings.user_keys_dir or _pki_dir(settings) / "users") / f"{username}.p12"


def signature_image_path(username: str, settings: Settings | None = None) -> Path:
    """The leader's blue signature image (transparent PNG)."""
    settings = settings or get_settings()
    folder = settings.signature_images_dir or _pki_dir(settings) / "images" / "signatures"
    return folder / f"{username}.png"


def seal_image_path(agency_code: str, settings: Settings | None = None) -> Path:
    """The agency's red seal image (transparent PNG, real size)."""
    settings = settings or get_settings()
    folder = settings.seal_images_dir or _pki_dir(settings) / "images" / "seals"
    return folder / f"{agency_code}.png"


def tsa_url(settings: Settings | None = None) -> str:
    """The TSA used for B-T and above."""
    settings = settings or get_settings()
    return settings.tsa_url or f"{settings.pki_base_url.rstrip('/')}/tsa"


def trust_roots(settings: Settings | None = None) -> tuple[Path, ...]:
    """Trust anchors for the leader-signature check and B-LT path building."""
    settings = settings or get_settings()
    roots: list[Path] = []
    dev_root = _pki_dir(settings) / "root.pem"
    if dev_root.is_file():
        roots.append(dev_root)
    if settings.trust_dir.is_dir():
        roots += sorted(p for p in settings.trust_dir.iterdir()
                        if p.suffix.lower() in (".pem", ".cer", ".crt", ".der"))
    return tuple(roots)


def signing_options(level: str, settings: Settings | None = None) -> engine.SigningOptions:
    """Engine options for a level (no secrets)."""
    settings = settings or get_settings()
    return engine.SigningOptions(level=engine.Level(level), tsa_url=tsa_url(settings),
                                 trust_roots=trust_roots(settings))


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def app_error(error: SigningError, *, field: str | None = None,
              extra: dict[str, Any] | None = None) -> AppError:
    """The bilingual API error for an engine error (422 input, 503 unreachable service)."""
    detail = error.message_en + (f" ({error.detail})" if error.detail else "")
    body = {"code": error.code, **(extra or {})}
    if error.status_code == 503:
        return ServiceUnavailable(detail, detail_vi=error.message_vi, extra=body)
    return ValidationFailed(detail, detail_vi=error.message_vi, field=field, extra=body)


def job_error(job: Job) -> AppError:
    """The API error for a failed job (the stored engine error, or a generic one)."""
    info = (job.result or {}).get("error") or {}
    extra = {"job_id": job.id, "code": info.get("code", "job_failed")}
    detail = job.error or "the signing job failed"
    if info.get("status") == 503:
        return ServiceUnavailable(detail, detail_vi=info.get("message_vi"), extra=extra)
    return ValidationFailed(detail, detail_vi=info.get("message_vi")
                            or "Không thể ký văn bản.", extra=extra)


def _error_info(error: BaseException) -> tuple[str, dict[str, Any]]:
    if isinstance(error, SigningError):
        text = error.message_en + (f" ({error.detail})" if error.detail else "")
        return text, error.to_dict()
    if isinstance(error, AppError):
        return error.detail, {"code": error.type_slug, "status": error.status_code,
                              "message_en": error.detail, "message_vi": error.detail_vi,
                              "retryable": False, "detail": None}
    return (f"internal error ({type(error).__name__})",
            {"code": "internal", "status": 500, "retryable": False,
             "message_en": "internal error", "message_vi": "Lỗi hệ thống", "detail": None})


# --------------------------------------------------------------------------------------------
# request side (API): checks, job creation, outbox
# --------------------------------------------------------------------------------------------
def parse_level(session: Session, document: Document, requested: str | None) -> str:
    """The requested level, else the sending agency's default (B-T unless configured)."""
    if requested is None:
        agency = session.get(Agency, document.sender_id)
        requested = agency.default_signature_level if agency else "B-T"
    if requested not in LEVELS:
        raise ValidationFailed(f"level must be one of {', '.join(LEVELS)}", field="level",
                               detail_vi="Mức chữ ký phải là một trong B-B, B-T, B-LT, B-LTA")
    return requested


def _check_signable(session: Session, document: Document) -> None:
    if document.status != "draft":
        raise Conflict(f"document {document.id} is already {document.status}; the leader "
                       "signs before issuance",
                       detail_vi="Văn bản đã phát hành; người có thẩm quyền phải ký trước khi "
                                 "phát hành")
    if not document.file_sha256:
        raise Conflict("this document has no PDF to sign", detail_vi="Văn bản không có tệp PDF")
    _check_no_active_job(session, document)


def _check_no_active_job(session: Session, document: Document) -> None:
    active = session.exec(select(Job).where(Job.document_id == document.id)
                          .where(col(Job.kind).in_(SIGN_KINDS))
                          .where(col(Job.status).in_(ACTIVE))).first()
    if active is not None:
        raise Conflict(f"signing job {active.id} of this document is still {active.status}",
                       detail_vi="Văn bản đang có một yêu cầu ký chưa hoàn tất",
                       extra={"job_id": active.id})


def _require_image(path: Path, what: str, what_vi: str) -> None:
    if not path.is_file():
        raise Conflict(f"no {what} registered ({path.name})",
                       detail_vi=f"Chưa đăng ký {what_vi}")


def _engine_page(page: int | None) -> int:
    # The API speaks 1-based pages (what people see); the engine 0-based with -1 = last.
    return page - 1 if page else -1


def _new_job(session: Session, principal: Principal, document: Document, kind: str,
             params: dict[str, Any], status: str = "queued") -> Job:
    job = Job(kind=kind, status=status, document_id=document.id,
              created_by_id=principal.user_id, params=params, result={})
    session.add(job)
    session.flush()
    return job


def _cert_b64(cert: asn1_x509.Certificate) -> str:
    return base64.b64encode(cert.dump()).decode()


def start_leader_signing(session: Session, principal: Principal, document_id: int, *,
                         passphrase: str, level: str | None, page: int | None,
                         box: list[float] | None) -> tuple[Job, Signer]:
    """Check the request, unlock the leader's key, create the job and enqueue its preparation.

    Returns the job and the unlocked signer; the caller keeps the signer in memory only (it
    signs the prepared digest later in the same request). A wrong passphrase leaves a failed
    job behind (the caller commits it) and raises a 422 naming ``passphrase``.
    """
    principal.require_role("leader")
    document = get_own(session, principal, document_id)
    _check_signable(session, document)
    level = parse_level(session, document, level)
    page_index = _engine_page(page)
    assert principal.user_id is not None  # a signed-in leader, never an API key
    key_path = user_key_path(principal.name)
    if not key_path.is_file():
        raise Conflict("no server-held signing key is registered for you; use two-step "
                       "signing with your own token", field="passphrase",
                       detail_vi="Chưa có khóa ký lưu trên máy chủ cho tài khoản này; hãy ký "
                                 "hai bước bằng thiết bị ký của bạn")
    _require_image(signature_image_path(principal.name), "signature image",
                   "hình ảnh chữ ký")
    params: dict[str, Any] = {"phase": "prepare", "level": level, "page": page_index,
                              "box": box, "base_revision": document.revision,
                              "base_sha256": document.file_sha256,
                              "signer": principal.name}
    try:
        signer = load_p12_signer(key_path, passphrase)
    except SigningError as exc:
        job = _new_job(session, principal, document, JOB_LEADER, params, status="failed")
        text, info = _error_info(exc)
        job.error, job.result = text, {"error": info}
        record(session, actor=principal.name, action="signing.failed", object_type="job",
               object_id=job.id, agency_id=document.sender_id,
               data={"document_id": document.id, "kind": JOB_LEADER, "code": exc.code})
        raise app_error(exc, field="passphrase" if isinstance(exc, WrongPassphraseError)
                        else None, extra={"job_id": job.id}) from None
    assert signer.signing_cert is not None
    params["cert"] = _cert_b64(signer.signing_cert)
    params["chain"] = [_cert_b64(c) for c in (signer.cert_registry or [])
                       if c.dump() != signer.signing_cert.dump()]
    job = _new_job(session, principal, document, JOB_LEADER, params)
    enqueue(session, "signing.prepare", job.id, queue="crypto")
    record(session, actor=principal.name, action="signing.requested", object_type="job",
           object_id=job.id, agency_id=document.sender_id,
           data={"document_id": document.id, "kind": JOB_LEADER, "level": level})
    return job, signer


def parse_certificates(value: str, field_name: str) -> list[asn1_x509.Certificate]:
    """Certificates given as PEM (one or more) or base64 DER; 422 naming the field if not."""
    data = value.strip().encode()
    try:
        if pem.detect(data):
            certs = [asn1_x509.Certificate.load(der)
                     for _, _, der in pem.unarmor(data, multiple=True)]
        else:
            certs = [asn1_x509.Certificate.load(base64.b64decode(data, validate=True))]
        for cert in certs:
            _ = cert.subject.human_friendly, cert.public_key.algorithm  # parse now, not later
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValidationFailed(f"{field_name}: not a certificate (PEM or base64 DER)",
                               field=field_name,
                               detail_vi="Chứng thư số không hợp lệ (PEM hoặc DER base64)"
                               ) from exc
    if not certs:
        raise ValidationFailed(f"{field_name}: no certificate found", field=field_name,
                               detail_vi="Không tìm thấy chứng thư số")
    return certs


def start_remote_signing(session: Session, principal: Principal, document_id: int, *,
                         certificate: str, chain: list[str], level: str | None,
                         page: int | None, box: list[float] | None) -> Job:
    """Two-step, step 1: record the signer's certificate and enqueue the preparation."""
    principal.require_role("leader")
    document = get_own(session, principal, document_id)
    _check_signable(session, document)
    level = parse_level(session, document, level)
    page_index = _engine_page(page)
    cert = parse_certificates(certificate, "certificate")[0]
    extra_certs = [c for i, item in enumerate(chain)
                   for c in parse_certificates(item, f"chain.{i}")]
    try:
        check_certificate_usable(cert)
    except SigningError as exc:
        raise app_error(exc, field="certificate") from None
    assert principal.user_id is not None  # a signed-in leader, never an API key
    _require_image(signature_image_path(principal.name), "signature image",
                   "hình ảnh chữ ký")
    params = {"phase": "prepare", "level": level, "page": page_index, "box": box,
              "base_revision": document.revision, "base_sha256": document.file_sha256,
              "signer": principal.name, "cert": _cert_b64(cert),
              "chain": [_cert_b64(c) for c in extra_certs]}
    job = _new_job(session, principal, document, JOB_REMOTE, params)
    enqueue(session, "signing.prepare", job.id, queue="crypto")
    record(session, actor=principal.name, action="signing.requested", object_type="job",
           object_id=job.id, agency_id=document.sender_id,
           data={"document_id": document.id, "kind": JOB_REMOTE, "level": level,
                 "certificate": cert.subject.human_friendly})
    return job


def get_job(session: Session, principal: Principal, job_id: str) -> Job:
    """A job the caller's agency created (404 for anyone else)."""
    job = session.get(Job, job_id)
    creator = session.get(User, job.created_by_id) if job and job.created_by_id else None
    if (job is None or creator is None or principal.agency_id is None
            or creator.agency_id != principal.agency_id):
        raise NotFound(f"job {job_id} not found", detail_vi="Không tìm thấy yêu cầu")
    return job


def submit_signature(session: Session, job: Job, signature: bytes, *, kind: str,
                     actor: str) -> Job:
    """Store the device's signature (raw value or CMS) and enqueue the embedding."""
    if job.status != "awaiting_signature" or (job.params or {}).get("phase") != "prepare":
        raise Conflict(f"job {job.id} is {job.status}, not awaiting a signature",
                       detail_vi="Yêu cầu ký không ở trạng thái chờ chữ ký",
                       extra={"job_id": job.id})
    if not signature:
        raise ValidationFailed("the signature is empty", field=kind,
                               detail_vi="Chữ ký rỗng")
    params = dict(job.params or {})
    params.update(phase="complete", signature=base64.b64encode(signature).decode(),
                  signature_kind=kind)
    # A conditional update: two concurrent completions cannot both move the job on.
    moved = session.exec(update(Job).where(col(Job.id) == job.id)  # type: ignore[call-overload]
                         .where(col(Job.status) == "awaiting_signature")
                         .values(status="queued", progress=50, params=params,
                                 updated_at=utcnow()))
    if not moved.rowcount:
        raise Conflict(f"job {job.id} is no longer awaiting a signature",
                       detail_vi="Yêu cầu ký không còn ở trạng thái chờ chữ ký")
    session.refresh(job)
    enqueue(session, "signing.complete", job.id, queue="crypto")
    record(session, actor=actor, action="signing.signature_submitted", object_type="job",
           object_id=job.id, data={"kind": kind, "document_id": job.document_id})
    return job


def complete_remote(session: Session, principal: Principal, job_id: str, *,
                    signature: bytes, kind: str) -> Job:
    """Two-step, step 2: only the leader who prepared may hand in the signature."""
    job = get_job(session, principal, job_id)
    if job.kind != JOB_REMOTE:
        raise Conflict("only two-step jobs are completed this way",
                       detail_vi="Chỉ yêu cầu ký hai bước mới được hoàn tất theo cách này")
    if job.created_by_id != principal.user_id:
        raise Forbidden("only the signer who prepared this job may complete it",
                        detail_vi="Chỉ người đã chuẩn bị yêu cầu ký mới được hoàn tất")
    return submit_signature(session, job, signature, kind=kind, actor=principal.name)


def expire_if_unprepared(session: Session, job_id: str, reason: str) -> bool:
    """Fail a job still waiting for the worker; False when the worker got there first."""
    job = session.exec(select(Job).where(Job.id == job_id).with_for_update()).one()
    if job.status not in ("queued", "running") or (job.params or {}).get("phase") != "prepare":
        return False
    _mark_failed(session, job, ServiceUnavailable(reason, detail_vi="Máy chủ ký chưa sẵn sàng; "
                                                  "vui lòng thử lại sau"))
    return True


def has_leader_revision(session: Session, document: Document) -> bool:
    """Whether a leader-signature job produced a revision of this document."""
    return session.exec(select(DocumentRevision.id)
                        .where(DocumentRevision.document_id == document.id)
                        .where(DocumentRevision.reason == REASON_LEADER)).first() is not None


def check_leader_signature(document: Document) -> None:
    """Refuse (409, bilingual) unless the current file holds a valid, trusted leader signature."""
    assert document.file_sha256
    with _workdir(f"check-{document.id}") as work:
        path = work / "current.pdf"
        with open(path, "wb") as out:
            copy_to(document.file_sha256, out)
        try:
            engine.check_leader_signature_present(path, trust_roots())
        except OrderError as exc:
            raise Conflict(exc.message_en + (f" ({exc.detail})" if exc.detail else ""),
                           detail_vi=exc.message_vi, extra={"code": exc.code}) from None
        except SigningError as exc:
            raise app_error(exc) from None


def start_seal(session: Session, principal: Principal, document_id: int, *,
               level: str | None) -> Job:
    """The clerk's issuance: number and date now, the seal and attachment stamps by a job.

    A document already issued but not sealed (an earlier seal job failed) is sealed again
    without a new number.
    """
    principal.require_role("clerk")
    document = get_own(session, principal, document_id)
    if not document.file_sha256:
        raise Conflict("this document has no PDF to seal", detail_vi="Văn bản không có tệp PDF")
    _check_no_active_job(session, document)
    level = parse_level(session, document, level)
    agency = session.get(Agency, document.sender_id)
    assert agency is not None
    _require_image(seal_image_path(agency.code), "seal image", "hình ảnh con dấu")
    seal_source_check(agency.code)
    if document.status == "draft":
        check_leader_signature(document)
        issue_document(session, principal, document)
    elif document.status == "issued":
        sealed = session.exec(select(DocumentRevision.id)
                              .where(DocumentRevision.document_id == document.id)
                              .where(DocumentRevision.reason == REASON_SEAL)).first()
        if sealed is not None:
            raise Conflict("this document is already issued and sealed",
                           detail_vi="Văn bản đã được phát hành và đóng dấu")
        check_leader_signature(document)
    else:
        raise Conflict(f"document {document.id} is already {document.status}",
                       detail_vi="Văn bản đã được gửi hoặc thu hồi")
    assert document.promulgation_date is not None
    params = {"phase": "seal", "level": level, "base_revision": document.revision,
              "base_sha256": document.file_sha256, "agency_code": agency.code,
              "number_notation": number_notation(document),
              "issued_on": document.promulgation_date.isoformat()}
    job = _new_job(session, principal, document, JOB_SEAL, params)
    enqueue(session, "signing.seal", job.id, queue="crypto")
    record(session, actor=principal.name, action="signing.requested", object_type="job",
           object_id=job.id, agency_id=document.sender_id,
           data={"document_id": document.id, "kind": JOB_SEAL, "level": level,
                 "number": params["number_notation"]})
    return job


# --------------------------------------------------------------------------------------------
# organisation seal keys (server configuration, never the broker)
# --------------------------------------------------------------------------------------------
def seal_source_check(agency_code: str) -> None:
    """409 unless a seal key for the agency is configured (HSM or key file + passphrase)."""
    settings = get_settings()
    if settings.pkcs11_module:
        if not settings.pkcs11_pin_file or not settings.pkcs11_pin_file.is_file():
            raise Conflict("EOFFICE_PKCS11_PIN_FILE is not readable",
                           detail_vi="Chưa cấu hình mã PIN của thiết bị HSM")
        return
    key, passfile = _seal_files(agency_code, settings)
    if not key.is_file() or not passfile.is_file():
        raise Conflict(f"no seal key is configured for agency {agency_code}",
                       detail_vi="Chưa cấu hình khóa con dấu số của cơ quan")


def _seal_files(agency_code: str, settings: Settings) -> tuple[Path, Path]:
    keys = settings.seal_keys_dir or _pki_dir(settings) / "seals"
    passes = settings.seal_passphrase_dir or keys
    return keys / f"{agency_code}.p12", passes / f"{agency_code}.pass"


@functools.lru_cache(maxsize=64)
def _cached_seal_signer(key: str, mtime: float, passfile: str, pass_mtime: float) -> Signer:
    # Parsing a PKCS#12 costs tens of ms; a worker keeps each agency's seal key loaded
    # (DESIGN pitfalls), and reloads it when either file changes.
    secret = Path(passfile).read_text(encoding="utf-8").rstrip("\r\n")
    return load_p12_signer(key, secret)


def _pem_chain(data: bytes) -> list[asn1_x509.Certificate]:
    return [asn1_x509.Certificate.load(der) for _, _, der in pem.unarmor(data, multiple=True)]


@contextlib.contextmanager
def open_seal_signer(agency_code: str) -> Iterator[Signer]:
    """The agency's seal signer: PKCS#11 when configured, else its PKCS#12 file."""
    settings = get_settings()
    if settings.pkcs11_module:
        assert settings.pkcs11_pin_file is not None
        pin = settings.pkcs11_pin_file.read_text(encoding="utf-8").strip()
        label = settings.pkcs11_key_label.format(agency_code=agency_code)
        chain = (_pem_chain(settings.pkcs11_chain_file.read_bytes())
                 if settings.pkcs11_chain_file else [])
        with open_pkcs11_signer(settings.pkcs11_module, token_label=settings.pkcs11_token,
                                pin=pin, key_label=label, chain=chain) as signer:
            yield signer
        return
    key, passfile = _seal_files(agency_code, settings)
    yield _cached_seal_signer(str(key), key.stat().st_mtime, str(passfile),
                              passfile.stat().st_mtime)


# --------------------------------------------------------------------------------------------
# worker side
# --------------------------------------------------------------------------------------------
@dataclass
class _Work:
    """What a claimed job needs for its file work (plain data, no ORM objects)."""

    job_id: str
    kind: str
    phase: str
    document_id: int
    params: dict[str, Any]
    file_sha256: str
    actor: str
    agency_id: int
    position: str = ""
    full_name: str = ""
    competence: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def _workdir(name: str) -> Iterator[Path]:
    root = get_settings().data_dir / "work"
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _lock_job(session: Session, job_id: str) -> Job | None:
    return session.exec(select(Job).where(Job.id == job_id).with_for_update()).first()


def _revision_for_job(session: Session, job_id: str) -> DocumentRevision | None:
    return session.exec(select(DocumentRevision)
                        .where(DocumentRevision.job_id == job_id)).first()


def _competence_line(document: Document, agency: Agency) -> str | None:
    competence = document.signer_competence
    if not competence:
        return None
    if competence == "TM.":
        # "TM. ỦY BAN NHÂN DÂN": the collective body, without the place name.
        name = agency.name
        match = re.match(r"(Ủy ban nhân dân|Hội đồng nhân dân)\b", name, flags=re.I)
        return f"TM. {match.group(1) if match else name}"
    head = "Giám đốc" if agency.level == "department" else "Chủ tịch"
    return f"{competence} {head}"


def _claim(session: Session, job_id: str, phase: str) -> _Work | None:
    """Mark the job running for this phase; None when there is nothing (left) to do."""
    job = _lock_job(session, job_id)
    if job is None:
        log.warning("signing job %s does not exist", job_id)
        return None
    params = dict(job.params or {})
    if job.status not in ("queued", "running") or params.get("phase") != phase:
        return None
    document = session.get(Document, job.document_id)
    assert document is not None
    if phase in ("complete", "seal") and _revision_for_job(session, job_id) is not None:
        # Crashed after saving, before the job row said so: finish the bookkeeping only.
        _mark_succeeded(session, job, {})
        return None
    job.status, job.progress, job.attempts = "running", 10, job.attempts + 1
    job.updated_at = utcnow()
    session.add(job)
    creator = session.get(User, job.created_by_id) if job.created_by_id else None
    agency = session.get(Agency, document.sender_id)
    assert agency is not None
    work = _Work(job_id=job.id, kind=job.kind, phase=phase, document_id=document.id or 0,
                 params=params, file_sha256=document.file_sha256 or "",
                 actor=creator.username if creator else "system", agency_id=agency.id or 0,
                 position=creator.position if creator else "",
                 full_name=creator.full_name if creator else "",
                 competence=_competence_line(document, agency))
    if phase == "seal":
        work.attachments = [{"id": a.id, "sha256": a.blob_sha256, "name": a.file_name,
                             "content_type": a.content_type}
                            for a in session.exec(select(Attachment)
                                                  .where(Attachment.document_id == document.id)
                                                  .order_by(col(Attachment.id)))]
    session.flush()
    return work


def _mark_failed(session: Session, job: Job, error: BaseException) -> None:
    text, info = _error_info(error)
    job.status, job.error = "failed", text
    job.result = {**(job.result or {}), "error": info}
    job.updated_at = utcnow()
    session.add(job)
    document = session.get(Document, job.document_id) if job.document_id else None
    record(session, actor="worker", action="signing.failed", object_type="job",
           object_id=job.id, agency_id=document.sender_id if document else None,
           data={"document_id": job.document_id, "kind": job.kind, "code": info.get("code")})


def _mark_succeeded(session: Session, job: Job, result: dict[str, Any]) -> None:
    job.status, job.progress, job.error = "succeeded", 100, None
    job.result = {**(job.result or {}), **result}
    job.updated_at = utcnow()
    session.add(job)


def _set_progress(sessions: SessionFactory, job_id: str, progress: int) -> None:
    with sessions() as session:
        session.exec(update(Job).where(col(Job.id) == job_id)  # type: ignore[call-overload]
                     .where(col(Job.status) == "running")
                     .values(progress=progress, updated_at=utcnow()))


def fail_job(job_id: str, error: BaseException, sessions: SessionFactory) -> None:
    """Record a final failure (retries exhausted or an unexpected error)."""
    with sessions() as session:
        job = _lock_job(session, job_id)
        if job is not None and job.status in ACTIVE:
            _mark_failed(session, job, error)


def note_retry(job_id: str, error: SigningError, attempt: int, countdown: float,
               sessions: SessionFactory) -> None:
    """Show the user that the job waits for a retry, and why."""
    with sessions() as session:
        job = _lock_job(session, job_id)
        if job is None or job.status not in ("queued", "running"):
            return
        job.status = "queued"
        job.error = (f"retry {attempt} in {int(countdown)} s: {error.message_en}"
                     + (f" ({error.detail})" if error.detail else ""))
        job.updated_at = utcnow()
        session.add(job)


def _store_file(path: Path) -> tuple[str, int]:
    with open(path, "rb") as handle:
        stored = get_blob_store().put_file(handle)
    return stored.sha256, stored.size


def _register_blob(session: Session, sha256: str, size: int, content_type: str) -> None:
    insert_ignore(session, Blob, {"sha256": sha256, "size": size,
                                  "content_type": content_type, "created_at": utcnow()})


def _run_guarded(sessions: SessionFactory, job_id: str, body: Callable[[], str]) -> str:
    """Run the file work; engine errors end the job (or ask for a retry when transient)."""
    try:
        return body()
    except SigningError as exc:
        if exc.retryable:
            raise TransientJobError(exc) from exc
        fail_job(job_id, exc, sessions)
        return "failed"
    except AppError as exc:
        fail_job(job_id, exc, sessions)
        return "failed"


def run_prepare(job_id: str, sessions: SessionFactory) -> str:
    """Worker: reserve the leader's visible field and compute the attributes to sign."""
    with sessions() as session:
        work = _claim(session, job_id, "prepare")
    if work is None:
        return "skipped"
    return _run_guarded(sessions, job_id, lambda: _prepare(work, sessions))


def _prepare(work: _Work, sessions: SessionFactory) -> str:
    params = work.params
    if work.file_sha256 != params["base_sha256"]:
        raise Conflict("the document changed after the signature was requested",
                       detail_vi="Văn bản đã thay đổi sau khi yêu cầu ký")
    cert = asn1_x509.Certificate.load(base64.b64decode(params["cert"]))
    chain = [asn1_x509.Certificate.load(base64.b64decode(c)) for c in params.get("chain", [])]
    box = tuple(params["box"]) if params.get("box") else None
    with _workdir(f"prepare-{work.job_id}") as folder:
        source, prepared_path = folder / "input.pdf", folder / "prepared.pdf"
        with open(source, "wb") as out:
            copy_to(work.file_sha256, out)
        name, visible = engine.leader_field(
            source, position=work.position, full_name=work.full_name,
            signature_image=signature_image_path(params["signer"]), competence=work.competence,
            page=int(params.get("page", -1)), box=box)  # type: ignore[arg-type]
        options = signing_options(params["level"])
        from dataclasses import replace

        options = replace(options, field_name=name,
                          reason=f"{work.position} {work.full_name} ký văn bản")
        _set_progress(sessions, work.job_id, 30)
        prepared = engine.prepare_external(source, prepared_path, cert, chain,
                                           options=options, visible=visible)
        sha, size = _store_file(prepared_path)
    with sessions() as session:
        job = _lock_job(session, work.job_id)
        if job is None or job.status != "running" or (job.params or {}).get("phase") != "prepare":
            return "superseded"  # a duplicate run finished first, or the request gave up
        _register_blob(session, sha, size, "application/pdf")
        job.params = {**(job.params or {}), "prepared_sha256": sha,
                      "state": prepared.state.decode(), "field": name}
        job.result = {**(job.result or {}),
                      "digest": base64.b64encode(prepared.digest).decode(),
                      "digest_hex": prepared.digest.hex(), "digest_algorithm": "sha256",
                      "data_to_sign": base64.b64encode(prepared.data_to_sign).decode(),
                      "field": name}
        job.status, job.progress, job.error = "awaiting_signature", 40, None
        job.updated_at = utcnow()
        session.add(job)
    return "awaiting_signature"


def run_complete(job_id: str, sessions: SessionFactory) -> str:
    """Worker: embed the signature, check it, save the signed file as a new revision."""
    with sessions() as session:
        work = _claim(session, job_id, "complete")
    if work is None:
        return "skipped"
    return _run_guarded(sessions, job_id, lambda: _complete(work, sessions))


def _complete(work: _Work, sessions: SessionFactory) -> str:
    params = work.params
    signature = base64.b64decode(params["signature"])
    with _workdir(f"complete-{work.job_id}") as folder:
        prepared_path, output = folder / "prepared.pdf", folder / "signed.pdf"
        with open(prepared_path, "wb") as out:
            copy_to(params["prepared_sha256"], out)
        _set_progress(sessions, work.job_id, 60)
        result = engine.complete_external(prepared_path, params["state"].encode(), signature,
                                          output, options=signing_options(params["level"]))
        sha, size = _store_file(output)
    _set_progress(sessions, work.job_id, 90)
    with sessions() as session:
        return _save_revision(session, work, sha, size, REASON_LEADER, {
            "field": result.field_name, "level": result.level.value,
            "signer": result.signer_subject})


def _save_revision(session: Session, work: _Work, sha: str, size: int, reason: str,
                   extra: dict[str, Any],
                   attachments: list[tuple[dict[str, Any], str, int]] | None = None,
                   skipped: list[dict[str, Any]] | None = None) -> str:
    """Save the job's file as the document's next revision, once (job_id is unique)."""
    job = _lock_job(session, work.job_id)
    if job is None or job.status != "running":
        return "skipped"
    existing = _revision_for_job(session, work.job_id)
    if existing is not None:
        _mark_succeeded(session, job, {"revision": existing.number,
                                       "sha256": existing.blob_sha256})
        return "succeeded"
    document = session.exec(select(Document).where(Document.id == work.document_id)
                            .with_for_update()).one()
    if document.file_sha256 != work.params["base_sha256"]:
        _mark_failed(session, job, Conflict(
            "the document changed while it was being signed; request the signature again",
            detail_vi="Văn bản đã thay đổi trong khi ký; vui lòng yêu cầu ký lại"))
        return "failed"
    _register_blob(session, sha, size, "application/pdf")
    number = document.revision + 1
    session.add(DocumentRevision(document_id=document.id or 0, number=number,
                                 blob_sha256=sha, reason=reason,
                                 created_by_id=job.created_by_id, job_id=job.id))
    document.file_sha256, document.revision, document.updated_at = sha, number, utcnow()
    session.add(document)
    stamped = []
    for attachment, att_sha, att_size in attachments or []:
        stamped.append(_save_attachment_version(session, job.id, attachment, att_sha, att_size))
    session.flush()
    result = {"revision": number, "sha256": sha, **extra}
    if attachments is not None:
        result["attachments"] = stamped + (skipped or [])
    _mark_succeeded(session, job, result)
    action = "document.signed" if reason == REASON_LEADER else "document.sealed"
    record(session, actor=work.actor, action=action, object_type="document",
           object_id=document.id, agency_id=document.sender_id,
           data={"job_id": job.id, "revision": number, "sha256": sha, **extra})
    return "succeeded"


def _save_attachment_version(session: Session, job_id: str, attachment: dict[str, Any],
                             sha: str, size: int) -> dict[str, Any]:
    row = session.get(Attachment, attachment["id"])
    assert row is not None
    versions = session.exec(select(AttachmentRevision)
                            .where(AttachmentRevision.attachment_id == row.id)
                            .order_by(col(AttachmentRevision.number))).all()
    if not versions:
        # The upload becomes version 1 so its bytes stay reachable from the history.
        session.add(AttachmentRevision(attachment_id=row.id or 0, number=1,
                                       blob_sha256=row.blob_sha256, size=row.size,
                                       reason="upload"))
    number = (versions[-1].number if versions else 1) + 1
    _register_blob(session, sha, size, row.content_type or "application/pdf")
    session.add(AttachmentRevision(attachment_id=row.id or 0, number=number, blob_sha256=sha,
                                   size=size, reason=REASON_SEAL, job_id=job_id))
    row.blob_sha256, row.size = sha, size
    session.add(row)
    return {"id": row.id, "file_name": row.file_name, "stamped": True, "version": number,
            "sha256": sha}


def _is_pdf(sha256: str) -> bool:
    with get_blob_store().open(sha256) as reader:
        head = reader.read(1024)
    return b"%PDF-" in head


def run_seal(job_id: str, sessions: SessionFactory) -> str:
    """Worker: the organisation seal on the main file and a stamp on each PDF attachment."""
    with sessions() as session:
        work = _claim(session, job_id, "seal")
    if work is None:
        return "skipped"
    return _run_guarded(sessions, job_id, lambda: _seal(work, sessions))


def _seal(work: _Work, sessions: SessionFactory) -> str:
    params = work.params
    if work.file_sha256 != params["base_sha256"]:
        raise Conflict("the document changed after issuance was requested",
                       detail_vi="Văn bản đã thay đổi sau khi yêu cầu phát hành")
    options = signing_options(params["level"])
    issued_on = dt.date.fromisoformat(params["issued_on"])
    stamped: list[tuple[dict[str, Any], str, int]] = []
    skipped: list[dict[str, Any]] = []
    with _workdir(f"seal-{work.job_id}") as folder, \
            open_seal_signer(params["agency_code"]) as signer:
        source, output = folder / "input.pdf", folder / "sealed.pdf"
        with open(source, "wb") as out:
            copy_to(work.file_sha256, out)
        result = engine.issue_with_seal(source, output, signer,
                                        seal_image=seal_image_path(params["agency_code"]),
                                        number_notation=params["number_notation"],
                                        issued_on=issued_on, trust_roots=options.trust_roots,
                                        options=options)
        sha, size = _store_file(output)
        _set_progress(sessions, work.job_id, 50)
        for index, attachment in enumerate(work.attachments):
            if not _is_pdf(attachment["sha256"]):
                # PAdES needs a PDF; other formats travel unsigned and are reported so.
                skipped.append({"id": attachment["id"], "file_name": attachment["name"],
                                "stamped": False, "reason": "not a PDF"})
                continue
            att_in, att_out = folder / f"att-{index}.pdf", folder / f"att-{index}-signed.pdf"
            with open(att_in, "wb") as out:
                copy_to(attachment["sha256"], out)
            engine.stamp_attachment(att_in, att_out, signer,
                                    number_notation=params["number_notation"], options=options)
            stamped.append((attachment, *_store_file(att_out)))
    _set_progress(sessions, work.job_id, 90)
    with sessions() as session:
        return _save_revision(session, work, sha, size, REASON_SEAL, {
            "field": result.field_name, "level": result.level.value,
            "signer": result.signer_subject, "number": params["number_notation"]},
            attachments=stamped, skipped=skipped)


def expire_stale(sessions: SessionFactory) -> int:
    """Fail two-step jobs nobody completed, and leader jobs whose request went away."""
    settings = get_settings()
    now = utcnow()
    remote_cutoff = now - dt.timedelta(minutes=settings.sign_remote_ttl_minutes)
    # A leader job waits for its own request, which gives up after sign_prepare_wait_seconds.
    leader_cutoff = now - dt.timedelta(seconds=max(300.0, 4 * settings.sign_prepare_wait_seconds))
    expired = 0
    with sessions() as session:
        rows = session.exec(select(Job).where(Job.status == "awaiting_signature")
                            .where(col(Job.kind).in_((JOB_LEADER, JOB_REMOTE)))).all()
        for job in rows:
            cutoff = remote_cutoff if job.kind == JOB_REMOTE else leader_cutoff
            if job.updated_at <= cutoff:
                _mark_failed(session, job, Conflict(
                    "the signature was not handed in in time; prepare again",
                    detail_vi="Quá thời hạn nộp chữ ký; vui lòng chuẩn bị ký lại"))
                expired += 1
    return expired


def decode_data_to_sign(job: Job) -> bytes:
    """The DER signed attributes a prepared job waits to have signed."""
    return base64.b64decode((job.result or {})["data_to_sign"])


def job_view(job: Job) -> dict[str, Any]:
    """The public view of a job (never the signing state or the signature bytes)."""
    result = dict(job.result or {})
    error = result.pop("error", None)
    view: dict[str, Any] = {
        "id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress,
        "document_id": job.document_id, "error": job.error,
        "error_vi": (error or {}).get("message_vi") if job.status == "failed" else None,
        "error_code": (error or {}).get("code") if job.status == "failed" else None,
        "attempts": job.attempts, "created_at": job.created_at, "updated_at": job.updated_at,
        "result": result,
    }
    params = job.params or {}
    if job.kind in (JOB_LEADER, JOB_REMOTE, JOB_SEAL):
        view["level"] = params.get("level")
    if job.status == "awaiting_signature":
        for key in ("digest", "digest_hex", "digest_algorithm", "data_to_sign", "field"):
            view[key] = result.get(key)
    return view

