"""Leader, auditor and dashboard pages: signature queue, signing, live jobs, verification,
audit trail and chain check, exchange statistics.

Signing, stored verification reports and statistics belong to their own domains; these pages
call those services when the domain is installed and say plainly when it is not.
"""

from __future__ import annotations

import base64
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session, col, func, select
from starlette.concurrency import run_in_threadpool

from eoffice.audit.service import verify_chain
from eoffice.deps import PageNumber, RowId, SessionDep
from eoffice.documents import service as documents_service
from eoffice.errors import Forbidden, NotFound, ServiceUnavailable, ValidationFailed
from eoffice.models import AuditEvent, Document, Job
from eoffice.plugins import optional_import
from eoffice.timeutil import day_end_utc, day_start_utc
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


def _signing_api() -> Any:
    api = optional_import("eoffice.signing.api")
    if api is None:
        raise ServiceUnavailable("signing is not available on this installation",
                                 detail_vi="Chức năng ký số chưa được cài đặt trên hệ thống")
    return api


def _leader_signed(session: Session, document: Document) -> bool:
    """A revision made by the leader's signature exists."""
    module = _signing()
    if module is not None:
        return bool(module.has_leader_revision(session, document))
    return False


def signing_actions(session: Session, principal: Principal, document: Document
                    ) -> list[dict[str, Any]]:
    """Links shown on the document page for the sender's leader and clerk."""
    if _signing() is None or principal.agency_id != document.sender_id \
            or document.channel != "electronic" or not document.file_sha256 \
            or document.status != "draft":
        return []
    actions: list[dict[str, Any]] = []
    signed = _leader_signed(session, document)
    if principal.role == "leader" and not signed:
        actions.append({"href": f"/documents/{document.id}/sign", "primary": True,
                        "label": N_("Sign")})
    if principal.role == "clerk" and signed:
        actions.append({"href": f"/documents/{document.id}/sign", "primary": True,
                        "label": N_("Issue with the seal")})
    return actions


# --- leader: signature queue, signing, jobs ------------------------------------------------

@router.get("/sign", response_class=HTMLResponse)
def sign_queue(request: Request, session: SessionDep, principal: WebPrincipal) -> Response:
    """Drafts awaiting the leader's signature (leader) or signed ones awaiting the seal
    (clerk)."""
    principal.require_role("leader", "clerk")
    drafts = list(session.exec(select(Document).where(Document.sender_id == principal.agency_id)
                               .where(Document.status == "draft")
                               .where(Document.channel == "electronic")
                               .where(col(Document.file_sha256).is_not(None))
                               .order_by(col(Document.created_at).desc())).all())
    wanted = principal.role == "clerk"
    items = [{"document": d} for d in drafts if _leader_signed(session, d) == wanted]
    return render(request, "sign_queue.html", {"items": items,
                                               "available": _signing() is not None},
                  session=session)


@router.get("/documents/{document_id}/sign", response_class=HTMLResponse)
def sign_page(request: Request, document_id: RowId, session: SessionDep,
              principal: WebPrincipal) -> Response:
    """The PDF in the page and the signing forms (server-held key, or the signer's token)."""
    principal.require_role("leader", "clerk")
    document = documents_service.get_own(session, principal, document_id)
    return render(request, "sign.html", {
        "document": document, "available": _signing() is not None,
        "seal": principal.role == "clerk",
        "jobs": _recent_jobs(session, document)}, session=session)


def _recent_jobs(session: Session, document: Document) -> list[Job]:
    return list(session.exec(select(Job).where(Job.document_id == document.id)
                             .order_by(col(Job.created_at).desc()).limit(10)).all())


@router.post("/documents/{document_id}/sign")
async def sign(request: Request, document_id: RowId, session: SessionDep,
               principal: WebPrincipal, passphrase: Annotated[str, Form()] = "",
               _csrf: None = Csrf) -> Response:
    """Leader: sign with the server-held key (the passphrase lives only in this request).
    Clerk: issue with the seal. Both through the signing domain's own handlers."""
    principal.require_role("leader", "clerk")
    api = _signing_api()
    if principal.role == "clerk":
        accepted = await run_in_threadpool(api.issue_signed, document_id, session, principal,
                                           None)
        flash(request, "Issued as %(number)s; the seal is being applied.",
              number=accepted.number_notation)
        return redirect(request, f"/jobs/{accepted.job_id}")
    if not passphrase:
        raise ValidationFailed("enter the passphrase of your signing key", field="passphrase",
                               detail_vi="Hãy nhập mật khẩu khóa ký của bạn")
    from eoffice.signing.schemas import LeaderSignRequest

    body = LeaderSignRequest(passphrase=passphrase)  # type: ignore[arg-type]
    del passphrase
    accepted = await api.sign_document(document_id, body, session, principal)
    return redirect(request, f"/jobs/{accepted.job_id}")


@router.post("/documents/{document_id}/sign/prepare")
def sign_prepare(request: Request, document_id: RowId, session: SessionDep,
                 principal: WebPrincipal, certificate: Annotated[UploadFile | None, File()] = None,
                 _csrf: None = Csrf) -> Response:
    """Two-step signing, step 1: the worker prepares the digest the signer's token signs."""
    principal.require_role("leader")
    if certificate is None or not certificate.filename:
        raise ValidationFailed("choose your certificate file (PEM or DER)", field="certificate",
                               detail_vi="Hãy chọn tệp chứng thư số của bạn (PEM hoặc DER)")
    raw = certificate.file.read(65536)
    text = raw.decode("ascii", "replace") if b"-----BEGIN" in raw \
        else base64.b64encode(raw).decode()
    from eoffice.signing.schemas import PrepareRequest

    accepted = _signing_api().prepare_two_step(document_id, PrepareRequest(certificate=text),
                                               session, principal)
    return redirect(request, f"/jobs/{accepted.job_id}")


@router.post("/jobs/{job_id}/complete")
def sign_complete(request: Request, job_id: str, session: SessionDep,
                  principal: WebPrincipal, signature: Annotated[str, Form()] = "",
                  _csrf: None = Csrf) -> Response:
    """Two-step signing, step 2: embed the signature the token produced."""
    if not signature.strip():
        raise ValidationFailed("paste the signature produced by your token", field="signature",
                               detail_vi="Hãy dán chữ ký do thiết bị ký của bạn tạo ra")
    from eoffice.signing.schemas import CompleteRequest

    accepted = _signing_api().complete_two_step(
        job_id, CompleteRequest(signature=signature.strip()), session, principal)
    return redirect(request, f"/jobs/{accepted.job_id}")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, session: SessionDep, principal: WebPrincipal,
             rows: bool = False) -> Response:
    """A job's progress, read from the jobs table (so it survives a reload)."""
    module = _signing()
    if module is None:
        raise NotFound(f"job {job_id} not found", detail_vi="Không tìm thấy tác vụ")
    job = module.job_view(module.get_job(session, principal, job_id))
    context = {"job": job, "finished": job["status"] in ("succeeded", "failed", "cancelled")}
    if rows:
        return render(request, "_job.html", context, session=session, fragment=True)
    return render(request, "job.html", context, session=session)


# --- verification --------------------------------------------------------------------------

@router.get("/verify", response_class=HTMLResponse)
def verify_page(request: Request, session: SessionDep, principal: WebPrincipal) -> Response:
    """Upload any PDF and get the verification report."""
    return render(request, "verify.html", {"report": None}, session=session)


@router.post("/verify", response_class=HTMLResponse)
def verify(request: Request, session: SessionDep, principal: WebPrincipal,
           file: Annotated[UploadFile | None, File()] = None, _csrf: None = Csrf) -> Response:
    """Verify the uploaded PDF (the report is stored) and show it in the page."""
    if file is None or not file.filename:
        raise ValidationFailed("choose a PDF file", field="file",
                               detail_vi="Hãy chọn một tệp PDF")
    from eoffice.verification import service as verification
    from eoffice.verification.presentation import present

    verification.require_reader(principal)
    row = verification.verify_upload(session, principal, file.file, file.filename)
    return render(request, "verify.html", {"report": present(row)}, session=session)


@router.get("/verify/reports/{report_id}.pdf")
def report_pdf(report_id: RowId, session: SessionDep, principal: WebPrincipal,
               background: BackgroundTasks) -> Response:
    """The stored report as a PDF sealed by the service."""
    from eoffice.verification import api as verification_api

    return verification_api.get_report(f"{report_id}.pdf", session, principal, background,
                                        None)


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
               date_to: AuditText = None, page: PageNumber = 1) -> Response:
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
        query = query.where(AuditEvent.at >= day_start_utc(start))
    if end:
        query = query.where(AuditEvent.at < day_end_utc(end))
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
