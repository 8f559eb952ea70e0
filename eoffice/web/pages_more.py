"""Leader, auditor and dashboard pages: signature queue, signing, live jobs, verification,
audit trail and chain check, exchange statistics.

Signing, stored verification reports and statistics belong to their own domains; these pages
call those services when the domain is installed and say plainly when it is not.
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session, col, func, select

from eoffice.audit.service import verify_chain
from eoffice.deps import SessionDep
from eoffice.documents import service as documents_service
from eoffice.errors import Forbidden, NotFound, ServiceUnavailable, ValidationFailed
from eoffice.models import AuditEvent, Document, DocumentRevision, Job
from eoffice.plugins import optional_import
from eoffice.timeutil import VIETNAM
from eoffice.users.service import Principal
from eoffice.web.i18n import N_, gettext_for
from eoffice.web.render import render
from eoffice.web.routes import Csrf, WebPrincipal, flash, redirect
from eoffice.web.security import web_session

router = APIRouter(include_in_schema=False)
AUDIT_PAGE = 50


def _(request: Request) -> Any:
    return gettext_for(web_session(request).lang)


def _signing() -> Any:
    return optional_import("eoffice.signing.service")


def _leader_signed(session: Session, document: Document) -> bool:
    """A revision made by the leader's signature exists."""
    return session.exec(select(DocumentRevision.id)
                        .where(DocumentRevision.document_id == document.id)
                        .where(col(DocumentRevision.reason).contains("sign"))
                        .limit(1)).first() is not None


def signing_actions(session: Session, principal: Principal, document: Document
                    ) -> list[dict[str, Any]]:
    """Links shown on the document page for the sender's leader and clerk."""
    if _signing() is None or principal.agency_id != document.sender_id \
            or document.channel != "electronic" or not document.file_sha256 \
            or document.status != "draft":
        return []
    actions: list[dict[str, Any]] = []
    if principal.role == "leader":
        actions.append({"href": f"/documents/{document.id}/sign", "primary": True,
                        "label": N_("Sign")})
    if principal.role == "clerk" and _leader_signed(session, document):
        actions.append({"href": f"/documents/{document.id}/sign", "primary": True,
                        "label": N_("Issue with the seal")})
    return actions


# --- leader: signature queue, signing, jobs ------------------------------------------------

@router.get("/sign", response_class=HTMLResponse)
def sign_queue(request: Request, session: SessionDep, principal: WebPrincipal) -> Response:
    """Drafts of the agency awaiting the leader's signature (or the clerk's seal)."""
    principal.require_role("leader", "clerk")
    drafts = list(session.exec(select(Document).where(Document.sender_id == principal.agency_id)
                               .where(Document.status == "draft")
                               .where(Document.channel == "electronic")
                               .where(col(Document.file_sha256).is_not(None))
                               .order_by(col(Document.created_at).desc())).all())
    items = [{"document": d, "signed": _leader_signed(session, d)} for d in drafts]
    if principal.role == "leader":
        items = [i for i in items if not i["signed"]]
    else:
        items = [i for i in items if i["signed"]]
    return render(request, "sign_queue.html", {"items": items,
                                               "available": _signing() is not None},
                  session=session)


@router.get("/documents/{document_id}/sign", response_class=HTMLResponse)
def sign_page(request: Request, document_id: int, session: SessionDep,
              principal: WebPrincipal) -> Response:
    """The PDF and the signing forms (server-held key, or the signer's own token)."""
    principal.require_role("leader", "clerk")
    document = documents_service.get_own(session, principal, document_id)
    return render(request, "sign.html", {
        "document": document, "available": _signing() is not None,
        "seal": principal.role == "clerk",
        "jobs": _recent_jobs(session, document)}, session=session)


def _recent_jobs(session: Session, document: Document) -> list[Job]:
    return list(session.exec(select(Job).where(Job.document_id == document.id)
                             .order_by(col(Job.created_at).desc()).limit(10)).all())


def _call_signing(name: str, *args: Any, **kwargs: Any) -> Any:
    module = _signing()
    function = getattr(module, name, None) if module is not None else None
    if function is None:
        raise ServiceUnavailable(f"signing is not available on this installation ({name})",
                                 detail_vi="Chức năng ký số chưa được cài đặt trên hệ thống")
    return function(*args, **kwargs)


@router.post("/documents/{document_id}/sign")
def sign(request: Request, document_id: int, session: SessionDep, principal: WebPrincipal,
         passphrase: Annotated[str, Form()] = "", _csrf: None = Csrf) -> Response:
    """Sign with the server-held key (leader) or issue with the seal (clerk); a job runs it."""
    principal.require_role("leader", "clerk")
    document = documents_service.get_own(session, principal, document_id)
    if principal.role == "leader" and not passphrase:
        raise ValidationFailed("enter the passphrase of your signing key", field="passphrase",
                               detail_vi="Hãy nhập mật khẩu khóa ký của bạn")
    if principal.role == "leader":
        job = _call_signing("request_signature", session, principal, document,
                            passphrase=passphrase)
    else:
        job = _call_signing("request_issuance", session, principal, document)
    return redirect(request, f"/jobs/{job.id}")


@router.post("/documents/{document_id}/sign/prepare")
def sign_prepare(request: Request, document_id: int, session: SessionDep,
                 principal: WebPrincipal, certificate: Annotated[UploadFile | None, File()] = None,
                 _csrf: None = Csrf) -> Response:
    """Two-step signing, step 1: the digest the signer's token signs."""
    principal.require_role("leader")
    document = documents_service.get_own(session, principal, document_id)
    if certificate is None or not certificate.filename:
        raise ValidationFailed("choose your certificate file (PEM or DER)", field="certificate",
                               detail_vi="Hãy chọn tệp chứng thư số của bạn (PEM hoặc DER)")
    prepared = _call_signing("prepare_external_signature", session, principal, document,
                             certificate.file.read(64 * 1024))
    return render(request, "sign_prepared.html", {"document": document, "prepared": prepared},
                  session=session)


@router.post("/documents/{document_id}/sign/complete")
def sign_complete(request: Request, document_id: int, session: SessionDep,
                  principal: WebPrincipal, prepared_id: Annotated[str, Form()] = "",
                  signature: Annotated[str, Form()] = "", _csrf: None = Csrf) -> Response:
    """Two-step signing, step 2: embed the signature the token produced."""
    principal.require_role("leader")
    document = documents_service.get_own(session, principal, document_id)
    if not signature.strip():
        raise ValidationFailed("paste the signature produced by your token", field="signature",
                               detail_vi="Hãy dán chữ ký do thiết bị ký của bạn tạo ra")
    job = _call_signing("complete_external_signature", session, principal, document,
                        prepared_id, signature.strip())
    return redirect(request, f"/jobs/{job.id}")


def _visible_job(session: Session, principal: Principal, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found", detail_vi="Không tìm thấy tác vụ")
    if job.created_by_id != principal.user_id:
        if job.document_id is None:
            raise NotFound(f"job {job_id} not found", detail_vi="Không tìm thấy tác vụ")
        documents_service.get_visible(session, principal, job.document_id)
    return job


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, session: SessionDep, principal: WebPrincipal,
             rows: bool = False) -> Response:
    """A job's progress, read from the jobs table (so it survives a reload)."""
    job = _visible_job(session, principal, job_id)
    context = {"job": job, "finished": job.status in ("succeeded", "failed", "cancelled")}
    if rows:
        return render(request, "_job.html", context, session=session, fragment=True)
    return render(request, "job.html", context, session=session)


# --- verification --------------------------------------------------------------------------

VERDICT_WORDS = {
    "TOTAL_PASSED": N_("Valid"), "TOTAL_FAILED": N_("Invalid"),
    "INDETERMINATE": N_("Cannot be determined"), "NO_SIGNATURE_FOUND": N_("No signature found"),
}


@router.get("/verify", response_class=HTMLResponse)
def verify_page(request: Request, session: SessionDep, principal: WebPrincipal) -> Response:
    """Upload any PDF and get the verification report."""
    return render(request, "verify.html", {"report": None, "verdicts": VERDICT_WORDS},
                  session=session)


def _verify_upload(session: Session, principal: Principal, upload: UploadFile) -> dict[str, Any]:
    """The verification service when installed; the engine directly otherwise."""
    module = optional_import("eoffice.verification.service")
    function = getattr(module, "verify_upload", None) if module is not None else None
    if function is not None:
        return dict(function(session, principal, upload.file, upload.filename or "upload.pdf"))
    from eoffice.verification.certs import configured_trust_store
    from eoffice.verification.engine import VerifyOptions, verify_file

    with tempfile.TemporaryDirectory(prefix="eoffice-verify-") as folder:
        path = pathlib.Path(folder) / "upload.pdf"
        with path.open("wb") as out:
            shutil.copyfileobj(upload.file, out, 1024 * 1024)
        report = verify_file(path, VerifyOptions(trust_roots=configured_trust_store(),
                                                 revocation="soft"))
    report["file"] = upload.filename or "upload.pdf"
    return report


@router.post("/verify", response_class=HTMLResponse)
def verify(request: Request, session: SessionDep, principal: WebPrincipal,
           file: Annotated[UploadFile | None, File()] = None, _csrf: None = Csrf) -> Response:
    """Verify the uploaded PDF and show the report in the page."""
    if file is None or not file.filename:
        raise ValidationFailed("choose a PDF file", field="file",
                               detail_vi="Hãy chọn một tệp PDF")
    report = _verify_upload(session, principal, file)
    return render(request, "verify.html", {"report": report, "verdicts": VERDICT_WORDS},
                  session=session)


# --- audit trail ---------------------------------------------------------------------------

def _auditor(principal: Principal) -> None:
    if principal.role not in ("auditor", "admin"):
        raise Forbidden("only auditors read the audit trail",
                        detail_vi="Chỉ kiểm toán viên được xem nhật ký kiểm toán")


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError as exc:
        raise ValidationFailed(f"'{value}' is not a date (YYYY-MM-DD)", field="date",
                               detail_vi=f"'{value}' không phải ngày hợp lệ") from exc


AuditText = Annotated[str | None, Query(max_length=100)]


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, session: SessionDep, principal: WebPrincipal,
               action: AuditText = None, actor: AuditText = None, object_type: AuditText = None,
               object_id: AuditText = None, date_from: AuditText = None,
               date_to: AuditText = None, page: Annotated[int, Query(ge=1)] = 1) -> Response:
    """The hash-chained audit trail with filters (auditors see their subtree's agencies)."""
    _auditor(principal)
    query = select(AuditEvent)
    scope = documents_service.visible_agency_ids(session, principal)
    if principal.role == "auditor":
        query = query.where(col(AuditEvent.agency_id).in_(scope or {-1}))
    if action:
        query = query.where(col(AuditEvent.action).startswith(action.strip()))
    if actor:
        query = query.where(AuditEvent.actor == actor.strip())
    if object_type:
        query = query.where(AuditEvent.object_type == object_type.strip())
    if object_id:
        query = query.where(AuditEvent.object_id == object_id.strip())
    start, end = _day(date_from), _day(date_to)
    if start:
        query = query.where(AuditEvent.at >= datetime.combine(start, time(), VIETNAM))
    if end:
        query = query.where(AuditEvent.at < datetime.combine(end + timedelta(days=1), time(),
                                                             VIETNAM))
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    events = list(session.exec(query.order_by(col(AuditEvent.id).desc())
                               .offset((page - 1) * AUDIT_PAGE).limit(AUDIT_PAGE)).all())
    filters = {"action": action or "", "actor": actor or "", "object_type": object_type or "",
               "object_id": object_id or "", "date_from": date_from or "",
               "date_to": date_to or ""}
    return render(request, "audit.html", {
        "events": events, "total": total, "page": page, "filters": filters,
        "pages": max(1, (int(total) + AUDIT_PAGE - 1) // AUDIT_PAGE),
        "check": web_session(request).pop("chain_check")}, session=session)


@router.post("/audit/check")
def audit_check(request: Request, session: SessionDep, principal: WebPrincipal,
                _csrf: None = Csrf) -> Response:
    """Recompute the whole chain and show the first broken link, if any."""
    _auditor(principal)
    result = verify_chain(session)
    web_session(request).set("chain_check", {"ok": result.ok, "checked": result.checked,
                                             "broken_id": result.broken_id,
                                             "reason": result.reason})
    if result.ok:
        flash(request, "Audit chain intact: %(n)s entries checked.", n=result.checked)
    else:
        flash(request, "Audit chain BROKEN at entry %(id)s (%(reason)s).", "error",
              id=result.broken_id, reason=result.reason)
    return redirect(request, "/audit")


# --- dashboard -----------------------------------------------------------------------------

@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(request: Request, session: SessionDep, principal: WebPrincipal,
              date_from: AuditText = None, date_to: AuditText = None) -> Response:
    """The electronic-exchange rate with its charts and exports."""
    today = date.today()
    start = _day(date_from) or today.replace(month=1, day=1)
    end = _day(date_to) or today
    module = optional_import("eoffice.stats.service")
    function = getattr(module, "exchange_stats", None) if module is not None else None
    stats = function(session, principal, start=start, end=end) if function is not None \
        else None
    return render(request, "dashboard.html", {
        "stats": stats, "available": function is not None, "date_from": start.isoformat(),
        "date_to": end.isoformat(), "query": f"from={start.isoformat()}&to={end.isoformat()}"},
        session=session)


StatsFile = Annotated[str, Path(
    pattern=r"^(exchange\.csv|exchange\.xlsx|trend\.svg|ranking\.svg)$")]


@router.get("/dashboard/{name}")
def dashboard_file(request: Request, name: StatsFile, session: SessionDep,
                   principal: WebPrincipal, date_from: Annotated[date | None,
                                                                 Query(alias="from")] = None,
                   date_to: Annotated[date | None, Query(alias="to")] = None) -> Response:
    """Charts and exports of the dashboard, through the statistics domain's own handlers."""
    api = optional_import("eoffice.stats.api")
    if api is None:
        raise ServiceUnavailable("statistics are not installed",
                                 detail_vi="Chức năng thống kê chưa được cài đặt")
    lang = web_session(request).lang
    common = {"session": session, "principal": principal, "start": date_from,
              "end": date_to, "period": None, "agency": None}
    if name == "trend.svg":
        return api.trend_chart(**common, lang=lang)
    if name == "ranking.svg":
        return api.ranking_chart(**common, level=None, lang=lang)
    handler = api.exchange_csv if name == "exchange.csv" else api.exchange_xlsx
    return handler(**common, level=None, group_by="agency")
