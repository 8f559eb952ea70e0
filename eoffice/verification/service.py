"""Verification in the service: on demand, on arrival, re-verification; stored reports.

The engine (engine.verify_file) runs in a sandboxed worker process and never raises. Checks
that come from the database are split in plan (read rows) -> run (no database: may take
seconds) -> store, so no transaction is held while a file is analysed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from asn1crypto import x509
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from eoffice.audit.service import record
from eoffice.documents.service import can_view
from eoffice.errors import (
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationFailed,
)
from eoffice.models import (
    Agency,
    Delivery,
    Document,
    DocumentRevision,
    User,
    VerificationReport,
    utcnow,
)
from eoffice.rows import insert_rows, update_rows
from eoffice.settings import get_settings
from eoffice.trust import service as trust
from eoffice.users.service import Principal

from .engine import verify_file
from .options import VerifyOptions
from .report import TOTAL_FAILED, TOTAL_PASSED

CHUNK = 1024 * 1024
REVOCATION_MODES = ("require", "soft", "off")
# A check of the same file under the same trust state this recent is reused, not redone
# (a document sent to twenty agencies is verified once, not twenty times).
REUSE_WINDOW = timedelta(hours=1)


# --- running the engine --------------------------------------------------------------------

def make_options(roots: list[x509.Certificate], revocation: str, decree30: bool
                 ) -> VerifyOptions:
    """Engine options for the service's checks."""
    if revocation not in REVOCATION_MODES:
        raise ValidationFailed("revocation must be require, soft or off", field="revocation",
                               detail_vi="Chế độ kiểm tra thu hồi phải là require, soft "
                                         "hoặc off")
    return VerifyOptions(trust_roots=roots, revocation=revocation,  # type: ignore[arg-type]
                         decree30=decree30)


def run_engine(path: Path | str, options: VerifyOptions, display_name: str) -> dict[str, Any]:
    """Verify one file; the report names the file as the user knows it, not a temp path."""
    report = verify_file(path, options)
    report["file"] = display_name
    # Worker pid and RSS are operational data, not part of the verdict.
    report.pop("worker", None)
    return report


@contextmanager
def spooled_upload(stream: BinaryIO, max_bytes: int) -> Iterator[tuple[Path, str, int]]:
    """Stream an upload to a private temp file (size-limited); yields (path, sha256, size)."""
    settings = get_settings()
    tmp_dir = settings.data_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="verify-", suffix=".pdf")
    path = Path(name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"file larger than {max_bytes} bytes",
                                          detail_vi="Tệp vượt quá dung lượng cho phép")
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise ValidationFailed("the file is empty", field="file",
                                   detail_vi="Tệp tải lên rỗng")
        yield path, digest.hexdigest(), size
    finally:
        path.unlink(missing_ok=True)


def store_report(session: Session, *, report: dict[str, Any], blob_sha256: str,
                 trust_state: str, actor: str, created_by_id: int | None = None,
                 purpose: str = "upload", agency_id: int | None = None) -> VerificationReport:
    """Store a new report (never overwrites) and record it in the audit trail."""
    row = _new_report(report, blob_sha256=blob_sha256, trust_state=trust_state,
                      created_by_id=created_by_id, purpose=purpose)
    session.add(row)
    session.flush()
    _record_report(session, row, actor=actor, agency_id=agency_id)
    return row


def _new_report(report: dict[str, Any], *, blob_sha256: str, trust_state: str, purpose: str,
                created_by_id: int | None = None, document_id: int | None = None,
                revision_id: int | None = None, delivery_id: int | None = None
                ) -> VerificationReport:
    return VerificationReport(**_report_values(
        report, blob_sha256=blob_sha256, trust_state=trust_state, purpose=purpose,
        created_by_id=created_by_id, document_id=document_id, revision_id=revision_id,
        delivery_id=delivery_id))


def _report_values(report: dict[str, Any], *, blob_sha256: str, trust_state: str,
                   purpose: str, created_by_id: int | None = None,
                   document_id: int | None = None, revision_id: int | None = None,
                   delivery_id: int | None = None) -> dict[str, Any]:
    return {"document_id": document_id, "revision_id": revision_id,
            "blob_sha256": blob_sha256, "indication": str(report.get("indication"))[:32],
            "sub_indication": (str(report["sub_indication"])[:64]
                               if report.get("sub_indication") else None),
            "trust_state": trust_state, "report": report, "created_by_id": created_by_id,
            "delivery_id": delivery_id, "purpose": purpose}


def _record_report(session: Session, row: VerificationReport, *, actor: str,
                   agency_id: int | None) -> None:
    record(session, actor=actor, action="verification.report_created",
           object_type="verification_report", object_id=row.id, agency_id=agency_id,
           data={"indication": row.indication, "sub_indication": row.sub_indication,
                 "blob_sha256": row.blob_sha256, "trust_state": row.trust_state,
                 "purpose": row.purpose, "document_id": row.document_id,
                 "delivery_id": row.delivery_id})


# --- on demand -----------------------------------------------------------------------------

def verify_upload(session: Session, principal: Principal, stream: BinaryIO, file_name: str,
                  *, revocation: str | None = None, decree30: bool = False
                  ) -> VerificationReport:
    """Check an uploaded PDF against the trust store; the stored report is returned."""
    settings = get_settings()
    user_id, actor, agency_id = principal.user_id, principal.name, principal.agency_id
    options_revocation = revocation or settings.verify_revocation
    roots, state = trust.trust_roots(session)
    options = make_options(roots, options_revocation, decree30)
    changed = bool(session.new or session.dirty or session.deleted) or \
        session.info.get("trust_synced") is not None
    if not changed and session.get_bind().dialect.name == "sqlite":
        # SQLite transactions start with BEGIN IMMEDIATE (the write lock): end this read-only
        # one so other writers are not blocked while the file is analysed.
        session.rollback()
    display = Path(file_name or "upload.pdf").name[-255:]
    with spooled_upload(stream, settings.max_upload_mb * 1024 * 1024) as (path, sha, _):
        report = run_engine(path, options, display)
    return store_report(session, report=report, blob_sha256=sha, trust_state=state,
                        actor=actor, created_by_id=user_id, purpose="upload",
                        agency_id=agency_id)


# --- stored documents: plan, run, store ----------------------------------------------------

@dataclass
class CheckPlan:
    """Everything needed to check one stored file, with no database access."""

    blob_sha256: str
    file_name: str
    trust_state: str
    roots_der: list[bytes]
    revocation: str
    decree30: bool
    purpose: str
    document_id: int | None = None
    revision_id: int | None = None
    delivery_ids: list[int] = field(default_factory=list)

    def options(self) -> VerifyOptions:
        """Engine options (roots rebuilt from DER)."""
        return make_options([x509.Certificate.load(d) for d in self.roots_der],
                            self.revocation, self.decree30)


def _revision_ids(session: Session, documents: list[Document]) -> dict[int, int]:
    """Each document's newest revision holding its current file, in one query."""
    if not documents:
        return {}
    current = {d.id: d.file_sha256 for d in documents}
    found: dict[int, int] = {}
    for revision_id, document_id, sha in session.exec(
            select(DocumentRevision.id, DocumentRevision.document_id,
                   DocumentRevision.blob_sha256)
            .where(col(DocumentRevision.document_id).in_(sorted(current)))
            .order_by(col(DocumentRevision.number).desc())).all():
        if revision_id is not None and sha == current[document_id]:
            found.setdefault(document_id, revision_id)
    return found


def _apply_verdicts(session: Session, verdicts: list[tuple[Delivery, VerificationReport]],
                    actor: str = "system") -> None:
    """Give each delivery its report's verdict: one UPDATE for all of them (the ORM's flush
    sent one per delivery), the loaded objects updated in place, and an audit entry for
    each verdict that changed."""
    if not verdicts:
        return
    now = utcnow()
    rows = []
    for delivery, row in verdicts:
        previous = delivery.verification_indication
        for name, value in (("verification_indication", row.indication),
                            ("verification_report_id", row.id), ("updated_at", now)):
            set_committed_value(delivery, name, value)
        rows.append({"id": delivery.id, "verification_indication": row.indication,
                     "verification_report_id": row.id, "updated_at": now})
        if previous != row.indication:
            record(session, actor=actor, action="verification.delivery_verdict",
                   object_type="delivery", object_id=delivery.id,
                   agency_id=delivery.recipient_id,
                   data={"document_id": delivery.document_id, "report_id": row.id,
                         "indication": row.indication, "previous": previous})
    update_rows(session, Delivery, rows)


def _reusable(session: Session, documents: list[Document], state: str
              ) -> dict[int, VerificationReport]:
    """Each document's newest arrival check of its current file under this trust state
    within REUSE_WINDOW, in one query."""
    if not documents:
        return {}
    current = {d.id: d.file_sha256 for d in documents}
    found: dict[int, VerificationReport] = {}
    for row in session.exec(select(VerificationReport)
                            .where(col(VerificationReport.document_id).in_(sorted(current)))
                            .where(VerificationReport.trust_state == state)
                            .where(col(VerificationReport.purpose).in_(["arrival", "reverify"]))
                            .where(VerificationReport.created_at >= utcnow() - REUSE_WINDOW)
                            .order_by(col(VerificationReport.id).desc())).all():
        if row.document_id is not None and row.blob_sha256 == current[row.document_id]:
            found.setdefault(row.document_id, row)
    return found


def plan_delivery_check(session: Session, delivery_id: int) -> CheckPlan | None:
    """What to verify for an arrived delivery; None when done already (idempotent)."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.transport_status != "delivered":
        return None
    document = session.get(Document, delivery.document_id)
    if document is None or not document.file_sha256:
        return None
    if delivery.verification_report_id is not None:
        current = session.get(VerificationReport, delivery.verification_report_id)
        if current is not None and current.blob_sha256 == document.file_sha256:
            return None  # this delivery+file was checked already (outbox may publish twice)
    plans = _arrival_plans(session, [(document, [delivery])])
    return plans[0] if plans else None


def _session_trust_roots(session: Session) -> tuple[list[x509.Certificate], str]:
    """The trust roots, read once per transaction (a batch plans many checks in one)."""
    cached = session.info.get("eoffice_trust_roots")
    if cached is None:
        cached = session.info["eoffice_trust_roots"] = trust.trust_roots(session)
    return cached  # type: ignore[no-any-return]


def plan_arrivals_checks(session: Session, document_ids: list[int]) -> list[CheckPlan]:
    """One check per document's file for all its arrived, not yet checked deliveries.

    Set-based: a batch of documents costs a handful of queries, not a handful each.
    Documents whose arrivals were all checked get no plan (the outbox may publish twice).
    """
    documents = {d.id: d for d in session.exec(
        select(Document).where(col(Document.id).in_(sorted(set(document_ids))))).all()
        if d.file_sha256}
    if not documents:
        return []
    pending: dict[int, list[Delivery]] = {}
    for delivery, report in session.exec(
            select(Delivery, VerificationReport)
            .join(VerificationReport,
                  col(VerificationReport.id) == Delivery.verification_report_id, isouter=True)
            .where(col(Delivery.document_id).in_(sorted(documents)))
            .where(Delivery.transport_status == "delivered")
            .order_by(col(Delivery.id))).all():
        if report is None or report.blob_sha256 != documents[delivery.document_id].file_sha256:
            pending.setdefault(delivery.document_id, []).append(delivery)
    return _arrival_plans(session, [(documents[i], pending[i]) for i in sorted(pending)])


def _arrival_plans(session: Session, work: list[tuple[Document, list[Delivery]]]
                   ) -> list[CheckPlan]:
    """The checks of these documents' files for these deliveries; a document with a recent
    report under the same trust state gets its verdict applied here instead."""
    if not work:
        return []
    roots, state = _session_trust_roots(session)
    reusable = _reusable(session, [document for document, _ in work], state)
    fresh = [(document, pending) for document, pending in work
             if document.id not in reusable]
    revisions = _revision_ids(session, [document for document, _ in fresh])
    _apply_verdicts(session, [(delivery, reusable[document.id]) for document, pending in work
                              if document.id in reusable for delivery in pending])
    roots_der = [c.dump() for c in roots]
    return [CheckPlan(blob_sha256=document.file_sha256 or "",
                      file_name=document.file_name or "document.pdf", trust_state=state,
                      roots_der=roots_der, revocation=get_settings().verify_revocation,
                      decree30=True, purpose="arrival", document_id=document.id,
                      revision_id=revisions.get(document.id or 0),
                      delivery_ids=[d.id for d in pending if d.id is not None])
            for document, pending in fresh]


def run_check(plan: CheckPlan) -> dict[str, Any]:
    """Verify the planned file (no database access)."""
    from eoffice.blobs.service import get_blob_store

    store = get_blob_store()
    if not store.exists(plan.blob_sha256):
        from .report import INDETERMINATE, failure_report

        return failure_report(plan.file_name, INDETERMINATE, None,
                              "stored file missing from the blob store")
    with store.local_path(plan.blob_sha256) as path:
        return run_engine(path, plan.options(), plan.file_name)


def store_check(session: Session, plan: CheckPlan, report: dict[str, Any]) -> int | None:
    """Store the report of a planned check and set the verdict of its deliveries."""
    return store_checks(session, [(plan, report)])[0]


def store_checks(session: Session, checks: list[tuple[CheckPlan, dict[str, Any]]]
                 ) -> list[int | None]:
    """Store the reports of planned checks and set their deliveries' verdicts: the
    documents and deliveries are read in one query each, the reports written in one."""
    from eoffice.stats.service import enqueue_document, signature_conformant

    document_ids = sorted({p.document_id for p, _ in checks if p.document_id})
    documents = {d.id: d for d in session.exec(
        select(Document).where(col(Document.id).in_(document_ids))).all()} \
        if document_ids else {}
    delivery_ids = sorted({i for p, _ in checks for i in p.delivery_ids})
    deliveries = {d.id: d for d in session.exec(
        select(Delivery).where(col(Delivery.id).in_(delivery_ids))).all()} \
        if delivery_ids else {}
    # One INSERT ... RETURNING for the batch (the ORM's flush rendered a new multi-row
    # statement for every batch size).
    rows = insert_rows(session, VerificationReport, [
        _report_values(report, blob_sha256=plan.blob_sha256, trust_state=plan.trust_state,
                       purpose=plan.purpose, document_id=plan.document_id,
                       revision_id=plan.revision_id,
                       delivery_id=plan.delivery_ids[0] if len(plan.delivery_ids) == 1
                       else None)
        for plan, report in checks])
    verdicts: list[tuple[Delivery, VerificationReport]] = []
    for (plan, _), row in zip(checks, rows, strict=True):
        document = documents.get(plan.document_id) if plan.document_id else None
        _record_report(session, row, actor="system",
                       agency_id=document.sender_id if document else None)
        # A newer file may have replaced the checked one meanwhile: its own check decides.
        if document is None or document.file_sha256 != plan.blob_sha256:
            continue
        verdicts += [(delivery, row) for delivery_id in plan.delivery_ids
                     if (delivery := deliveries.get(delivery_id)) is not None]
        # The exchange-rate figures count documents whose signature conforms: a verdict
        # that says so updates them now rather than at the next reconciliation.
        if signature_conformant(row.indication, row.report):
            enqueue_document(session, document.id or 0)
    _apply_verdicts(session, verdicts)
    return [row.id for row in rows]


def plan_reverification(session: Session, limit: int | None = None) -> list[CheckPlan]:
    """Stored documents whose verdict used another trust state or is too old, one plan each."""
    settings = get_settings()
    roots, state = trust.trust_roots(session)
    cutoff = utcnow() - timedelta(hours=settings.reverify_after_hours)
    rows = session.exec(
        select(Delivery, VerificationReport, Document)
        .join(VerificationReport, col(VerificationReport.id) == Delivery.verification_report_id)
        .join(Document, col(Document.id) == Delivery.document_id)
        .where(Delivery.transport_status == "delivered")
        .where(col(Delivery.recalled).is_(False))
        .where((VerificationReport.trust_state != state)
               | (VerificationReport.created_at < cutoff)
               | (VerificationReport.blob_sha256 != Document.file_sha256))
        .order_by(col(VerificationReport.created_at), col(Delivery.id))
        .limit((limit or settings.reverify_batch) * 20)).all()
    plans: dict[tuple[int, str], CheckPlan] = {}
    checked: dict[tuple[int, str], Document] = {}
    roots_der = [c.dump() for c in roots]
    for delivery, _report, document in rows:
        if not document.file_sha256 or document.id is None or delivery.id is None:
            continue
        key = (document.id, document.file_sha256)
        if key not in plans:
            if len(plans) >= (limit or settings.reverify_batch):
                continue
            plans[key] = CheckPlan(blob_sha256=document.file_sha256,
                                   file_name=document.file_name or "document.pdf",
                                   trust_state=state, roots_der=roots_der,
                                   revocation=settings.verify_revocation, decree30=True,
                                   purpose="reverify", document_id=document.id)
            checked[key] = document
        plans[key].delivery_ids.append(delivery.id)
    revisions = _revision_ids(session, list(checked.values()))
    for key, plan in plans.items():
        plan.revision_id = revisions.get(key[0])
    return list(plans.values())


# --- reading -------------------------------------------------------------------------------

def get_report(session: Session, principal: Principal, report_id: int) -> VerificationReport:
    """A stored report the caller may read (404 otherwise, like every invisible object)."""
    row = session.get(VerificationReport, report_id)
    missing = NotFound(f"verification report {report_id} not found",
                       detail_vi="Không tìm thấy báo cáo kiểm tra")
    if row is None:
        raise missing
    if principal.role == "admin":
        return row
    if row.document_id is not None:
        document = session.get(Document, row.document_id)
        if document is not None and can_view(session, principal, document):
            return row
        raise missing
    if row.created_by_id is not None and row.created_by_id == principal.user_id:
        return row
    if principal.role == "auditor" and row.created_by_id is not None:
        from eoffice.documents.service import visible_agency_ids

        creator = session.get(User, row.created_by_id)
        scope = visible_agency_ids(session, principal) or set()
        if creator is not None and creator.agency_id in scope:
            return row
    raise missing


def report_links(report_id: int | None) -> dict[str, str]:
    """Where the stored report can be read."""
    base = f"/api/v1/verification-reports/{report_id}"
    return {"report_url": base, "html_url": f"{base}.html", "pdf_url": f"{base}.pdf"}


def report_out(row: VerificationReport) -> dict[str, Any]:
    """The CLI report object plus where it is stored."""
    return {**(row.report or {}), "report_id": row.id, "trust_state": row.trust_state,
            "checked_at": row.created_at, "blob_sha256": row.blob_sha256,
            "purpose": row.purpose, "document_id": row.document_id, **report_links(row.id)}


def suggested_rejection_reason(indication: str | None) -> str | None:
    """A pre-filled reason for returning (02) a document whose signature check failed."""
    if indication in (None, TOTAL_PASSED):
        return None
    if indication == TOTAL_FAILED:
        return ("Chữ ký số trên văn bản không hợp lệ (kiểm tra tự động khi nhận); đề nghị "
                "gửi lại văn bản đã ký đúng. / The document's digital signature is invalid "
                "(checked on arrival); please send a correctly signed document.")
    if indication == "NO_SIGNATURE_FOUND":
        return ("Văn bản điện tử không có chữ ký số theo Nghị định 30/2020/NĐ-CP; đề nghị ký "
                "số và gửi lại. / The electronic document carries no digital signature "
                "(Decree 30/2020); please sign and send it again.")
    return ("Chưa xác thực được chữ ký số trên văn bản (thiếu chuỗi tin cậy hoặc thông tin "
            "thu hồi); đề nghị kiểm tra lại. / The digital signature could not be confirmed "
            "(no trusted chain or revocation data); please check and resend.")


def delivery_verification(delivery: Delivery) -> dict[str, Any] | None:
    """The verification summary shown with a delivery (inbox, delivery view)."""
    if delivery.verification_indication is None:
        return None
    return {"indication": delivery.verification_indication,
            "report_id": delivery.verification_report_id,
            **(report_links(delivery.verification_report_id)
               if delivery.verification_report_id else {})}


# --- the signed PDF ------------------------------------------------------------------------

def _seal_files(session: Session) -> tuple[Path, Path]:
    settings = get_settings()
    if settings.service_seal_p12 is not None:
        if settings.service_seal_pass_file is None:
            raise ServiceUnavailable("EOFFICE_SERVICE_SEAL_PASS_FILE is not set",
                                     detail_vi="Chưa cấu hình mật khẩu con dấu hệ thống")
        return settings.service_seal_p12, settings.service_seal_pass_file
    province = session.exec(select(Agency).where(Agency.level == "province")
                            .order_by(col(Agency.id))).first()
    if settings.environment != "production" and settings.pki_dir is not None \
            and province is not None:
        p12 = settings.pki_dir / "seals" / f"{province.code}.p12"
        if p12.is_file():
            return p12, p12.with_suffix(".pass")
    raise ServiceUnavailable("no service seal configured (EOFFICE_SERVICE_SEAL_P12)",
                             detail_vi="Chưa cấu hình con dấu số của hệ thống")


def signed_pdf(session: Session, row: VerificationReport, out_dir: Path) -> Path:
    """Render the report to PDF and seal it with the service's key; returns the file."""
    from eoffice.signing.engine import Level, SigningOptions, sign_pdf_file
    from eoffice.signing.keys import load_p12_signer

    from .pdf_report import FontMissing, render_pdf
    from .presentation import present

    p12, pass_file = _seal_files(session)
    plain = out_dir / f"report-{row.id}.pdf"
    signed = out_dir / f"report-{row.id}-signed.pdf"
    try:
        render_pdf(present(row), plain)
    except FontMissing as exc:
        raise ServiceUnavailable(str(exc), detail_vi="Thiếu phông chữ để tạo báo cáo PDF"
                                 ) from exc
    signer = load_p12_signer(p12, pass_file.read_text().strip())
    tsa = get_settings().tsa_url
    options = SigningOptions(level=Level.B_T if tsa else Level.B_B, tsa_url=tsa or None,
                             reason=f"Báo cáo kiểm tra chữ ký số #{row.id} / "
                                    f"Verification report #{row.id}",
                             location="eoffice")
    sign_pdf_file(plain, signed, signer, options=options)
    plain.unlink(missing_ok=True)
    return signed


def check_format(fmt: str | None) -> str:
    """json (default) or html."""
    value = (fmt or "json").lower()
    if value not in ("json", "html", "pdf"):
        raise ValidationFailed("format must be json, html or pdf", field="format",
                               detail_vi="Định dạng phải là json, html hoặc pdf")
    return value


def require_reader(principal: Principal) -> None:
    """Any signed-in user may verify; only people and agency systems, never anonymous."""
    if principal.role not in ("clerk", "leader", "officer", "auditor", "admin"):
        raise Forbidden("your role cannot verify files",
                        detail_vi="Vai trò của bạn không được kiểm tra chữ ký")
