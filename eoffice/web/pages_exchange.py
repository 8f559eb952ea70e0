"""Clerk pages: inbox, outbox (live statuses), compose with the recipient picker, the document
page with its actions (accept, reject, assign, complete, recall answers, reply, forward) and
the paper register."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlmodel import Session, col, select

from eoffice.agencies.service import AgencyTree, may_send
from eoffice.deps import PageNumber, RowId, RowIdQuery, SessionDep
from eoffice.documents import api as documents_api
from eoffice.documents import service as documents_service
from eoffice.documents.schemas import DOCUMENT_TYPES, PRIORITIES, DocumentMetadata
from eoffice.errors import Forbidden, ValidationFailed
from eoffice.exchange import service as exchange_service
from eoffice.models import AuditEvent, Delivery, Document, User, VerificationReport
from eoffice.users.service import Principal
from eoffice.web.i18n import N_, gettext_for
from eoffice.web.render import render
from eoffice.web.routes import Csrf, WebPrincipal, flash, redirect
from eoffice.web.security import web_session

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
FIELD_LABELS = {
    "type_name": N_("Document type"), "subject": N_("Subject"), "priority": N_("Urgency"),
    "signer_info": N_("Signer"), "signer_info.competence": N_("Signing competence"),
    "due_date": N_("Due date"), "to_places": N_("Places"), "page_amount": N_("Pages"),
    "file": N_("PDF file"), "recipients": N_("Recipients"), "reason": N_("Reason"),
    "assignee": N_("Handler"), "response_for": N_("In reply to"),
}


def _(request: Request) -> Any:
    return gettext_for(web_session(request).lang)


def _staff(principal: Principal) -> None:
    if principal.agency_id is None or principal.role not in ("clerk", "leader", "officer"):
        raise Forbidden("only agency staff use this page",
                        detail_vi="Chỉ cán bộ của cơ quan dùng được trang này")


# --- recipient picker ----------------------------------------------------------------------

def recipient_choices(session: Session, principal: Principal, request: Request
                      ) -> dict[str, list[dict[str, Any]]]:
    """The province → district → commune tree (as indented options) and the groups."""
    gettext = _(request)
    tree = AgencyTree.load(session)
    sender = tree.by_id.get(principal.agency_id)
    options: list[dict[str, Any]] = []
    districts = []

    def walk(parent_id: int | None, depth: int) -> None:
        for agency in sorted(tree.children.get(parent_id, []), key=lambda a: a.code):
            if agency.active and sender is not None and agency.id != sender.id \
                    and may_send(tree, sender, agency):
                options.append({"value": agency.code, "name": agency.name,
                                "level": agency.level, "depth": depth})
            if agency.level == "district" and agency.active:
                districts.append(agency)
            walk(agency.id, depth + 1)

    walk(None, 0)
    groups = [
        {"value": "all-departments", "name": gettext("All departments of the province")},
        {"value": "all-districts", "name": gettext("All district-level committees")},
        {"value": "all-communes", "name": gettext("All commune-level committees")},
    ] + [{"value": f"communes-of:{d.code}",
          "name": gettext("All communes of %(name)s") % {"name": d.name}} for d in districts]
    return {"agencies": options, "groups": groups}


def _field_error(request: Request, exc: ValidationError) -> ValidationFailed:
    gettext = _(request)
    first = exc.errors(include_url=False, include_context=False)[0]
    field = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
    label = gettext(FIELD_LABELS[field]) if field in FIELD_LABELS else field
    message = f"{label}: {first['msg']}"
    return ValidationFailed(message, field=field, detail_vi=message)


def _files(files: list[UploadFile] | None) -> list[UploadFile]:
    # A file input left empty still posts a part with no name.
    return [f for f in files or [] if f.filename]


# --- inbox and outbox ----------------------------------------------------------------------

def _inbox_items(session: Session, principal: Principal, *, q: str | None, status: str | None,
                 overdue: bool, urgent: bool, unread: bool, date_from: date | None,
                 date_to: date | None, page: int) -> tuple[list[dict[str, Any]], int]:
    return exchange_service.inbox(session, principal, status=status or None,
                                  overdue=True if overdue else None, q=q or None,
                                  urgent=urgent, unread=unread, arrived_from=date_from,
                                  arrived_to=date_to, limit=PAGE_SIZE,
                                  offset=(page - 1) * PAGE_SIZE)


def _parse_date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError as exc:
        raise ValidationFailed(f"'{value}' is not a date (YYYY-MM-DD)", field="date",
                               detail_vi=f"'{value}' không phải ngày hợp lệ (YYYY-MM-DD)") \
            from exc


InboxQuery = Annotated[str | None, Query(max_length=200)]


def _inbox_context(session: Session, principal: Principal, q: str | None, status: str | None,
                   overdue: bool, urgent: bool, unread: bool, date_from: str | None,
                   date_to: str | None, page: int) -> dict[str, Any]:
    if status and status not in exchange_service.STATUS_NAMES:
        status = None
    items, total = _inbox_items(session, principal, q=q, status=status, overdue=overdue,
                                urgent=urgent, unread=unread, date_from=_parse_date(date_from),
                                date_to=_parse_date(date_to), page=page)
    return {"items": items, "total": total, "page": page,
            "pages": max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE),
            "filters": {"q": q or "", "status": status or "", "overdue": overdue,
                        "urgent": urgent, "unread": unread, "date_from": date_from or "",
                        "date_to": date_to or ""},
            "statuses": exchange_service.STATUS_NAMES}


@router.get("/inbox", response_class=HTMLResponse)
def inbox_page(request: Request, session: SessionDep, principal: WebPrincipal,
               q: InboxQuery = None, status: InboxQuery = None, overdue: bool = False,
               urgent: bool = False, unread: bool = False, date_from: InboxQuery = None,
               date_to: InboxQuery = None, page: PageNumber = 1,
               rows: bool = False) -> Response:
    """Documents that arrived, with unread / overdue / urgent markers and filters."""
    _staff(principal)
    context = _inbox_context(session, principal, q, status, overdue, urgent, unread, date_from,
                             date_to, page)
    if rows:
        return render(request, "_inbox_rows.html", context, session=session, fragment=True)
    return render(request, "inbox.html", context, session=session)


@router.get("/outbox", response_class=HTMLResponse)
def outbox_page(request: Request, session: SessionDep, principal: WebPrincipal,
                q: InboxQuery = None, page: PageNumber = 1,
                rows: bool = False) -> Response:
    """Sent documents with each receiver's status, refreshed live."""
    _staff(principal)
    items, total = exchange_service.outbox(session, principal, q=q or None, limit=PAGE_SIZE,
                                           offset=(page - 1) * PAGE_SIZE)
    context = {"items": items, "total": total, "page": page, "q": q or "",
               "pages": max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)}
    if rows:
        return render(request, "_outbox_rows.html", context, session=session, fragment=True)
    return render(request, "outbox.html", context, session=session)


# --- compose -------------------------------------------------------------------------------

@router.get("/compose", response_class=HTMLResponse)
def compose_page(request: Request, session: SessionDep, principal: WebPrincipal,
                 reply_to: RowIdQuery = None) -> Response:
    """The compose form: Decree 30 fields, files, recipients."""
    _staff(principal)
    context: dict[str, Any] = {"types": list(DOCUMENT_TYPES), "priorities": PRIORITIES,
                               "choices": recipient_choices(session, principal, request),
                               "reply": None, "selected": []}
    if reply_to is not None:
        original = documents_service.get_visible(session, principal, reply_to)
        sender = documents_api.document_out(session, principal, original)
        context["reply"] = sender
        context["selected"] = [sender["sender"]]
    return render(request, "compose.html", context, session=session)


def _metadata(request: Request, *, type_name: str, subject: str, priority: str,
              competence: str, position: str, full_name: str, due_date: str, to_places: str,
              page_amount: str, response_for: str) -> DocumentMetadata:
    gettext = _(request)
    if not subject.strip():
        raise ValidationFailed("Subject: required", field="subject",
                               detail_vi=f"{gettext('Subject')}: bắt buộc")
    raw: dict[str, Any] = {
        "type_name": type_name, "subject": subject, "priority": priority or 0,
        "to_places": [p.strip() for p in to_places.splitlines() if p.strip()],
        "due_date": due_date or None, "page_amount": page_amount or None,
        "response_for": response_for or None,
    }
    if competence or position or full_name:
        raw["signer_info"] = {"competence": competence, "position": position,
                              "full_name": full_name}
    try:
        return DocumentMetadata.model_validate(raw)
    except ValidationError as exc:
        raise _field_error(request, exc) from exc


TextField = Annotated[str, Form()]


@router.post("/compose")
def compose(request: Request, session: SessionDep, principal: WebPrincipal,
            type_name: TextField = "Công văn", subject: TextField = "", priority: TextField = "0",
            competence: TextField = "", position: TextField = "", full_name: TextField = "",
            due_date: TextField = "", to_places: TextField = "", page_amount: TextField = "",
            response_for: TextField = "", action: TextField = "send",
            recipients: Annotated[list[str] | None, Form()] = None,
            file: Annotated[UploadFile | None, File()] = None,
            attachments: Annotated[list[UploadFile] | None, File()] = None,
            _csrf: None = Csrf) -> Response:
    """Create the document and (unless saved as a draft for signature) send it."""
    _staff(principal)
    meta = _metadata(request, type_name=type_name, subject=subject, priority=priority,
                     competence=competence, position=position, full_name=full_name,
                     due_date=due_date, to_places=to_places, page_amount=page_amount,
                     response_for=response_for)
    chosen = [r for r in recipients or [] if r.strip()]
    if action == "send" and not chosen:
        raise ValidationFailed("choose at least one recipient", field="recipients",
                               detail_vi="Cần chọn ít nhất một nơi nhận")
    main = _files([file] if file is not None else [])
    document = documents_service.create_document(
        session, principal, meta, main[0].file if main else None,
        main[0].filename if main else None,
        [(a.file, a.filename or "attachment", a.content_type or "application/octet-stream")
         for a in _files(attachments)])
    if action == "send":
        exchange_service.send_document(session, principal, document, chosen)
        flash(request, "Sent as %(number)s.", number=documents_service.number_notation(document))
        return redirect(request, "/outbox")
    flash(request, "Saved as a draft.")
    return redirect(request, f"/documents/{document.id}")


# --- paper register ------------------------------------------------------------------------

@router.get("/register-paper", response_class=HTMLResponse)
def paper_page(request: Request, session: SessionDep, principal: WebPrincipal) -> Response:
    """Register a document sent or received on paper (it counts in the statistics)."""
    _staff(principal)
    from eoffice.registers import service as registers

    entries = {d: registers.list_paper(session, principal, d, limit=20)[0]
               for d in ("incoming", "outgoing")}
    return render(request, "register_paper.html",
                  {"types": list(DOCUMENT_TYPES), "priorities": PRIORITIES,
                   "entries": entries}, session=session)


@router.post("/register-paper")
def register_paper(request: Request, session: SessionDep, principal: WebPrincipal,
                   direction: TextField = "incoming", type_name: TextField = "Công văn",
                   subject: TextField = "", priority: TextField = "0",
                   registered_on: TextField = "", counterpart_code: TextField = "",
                   counterpart_name: TextField = "", original_ref: TextField = "",
                   due_date: TextField = "",
                   file: Annotated[UploadFile | None, File()] = None,
                   _csrf: None = Csrf) -> Response:
    """An entry of the incoming or outgoing register for a paper document."""
    from eoffice.registers import service as registers
    from eoffice.registers.schemas import RegisterExtra

    principal.require_role("clerk", "leader")
    meta = _metadata(request, type_name=type_name, subject=subject, priority=priority,
                     competence="", position="", full_name="", due_date=due_date,
                     to_places="", page_amount="", response_for="")
    incoming = direction == "incoming"
    try:
        extra = RegisterExtra.model_validate({
            "registered_on": registered_on or None, "original_ref": original_ref or None,
            "sender_code" if incoming else "recipient_code": counterpart_code or None,
            **({"sender_name": counterpart_name or None} if incoming else {})})
    except ValidationError as exc:
        raise _field_error(request, exc) from exc
    main = _files([file] if file is not None else [])
    if main:
        documents_service.sniff_pdf(main[0].file)
    document = registers.register_paper(session, principal, direction, meta, extra,
                                        main[0].file if main else None,
                                        main[0].filename if main else None)
    flash(request, "Registered as number %(number)s.", number=document.code_number)
    return redirect(request, "/register-paper")


# --- the document page ---------------------------------------------------------------------

def _own_delivery(session: Session, principal: Principal, document: Document
                  ) -> Delivery | None:
    if principal.agency_id is None:
        return None
    return session.exec(select(Delivery).where(Delivery.document_id == document.id)
                        .where(Delivery.recipient_id == principal.agency_id)
                        .where(col(Delivery.recalled).is_(False))).first()


def _document_events(session: Session, document: Document) -> list[AuditEvent]:
    return list(session.exec(select(AuditEvent).where(AuditEvent.object_type == "document")
                             .where(AuditEvent.object_id == str(document.id))
                             .order_by(col(AuditEvent.id))).all())


@router.get("/documents/{document_id}", response_class=HTMLResponse)
def document_page(request: Request, document_id: RowId, session: SessionDep,
                  principal: WebPrincipal, rows: bool = False) -> Response:
    """Metadata, the PDF, revisions, signatures, receivers, actions and the full history."""
    document = documents_service.get_visible(session, principal, document_id)
    own = _own_delivery(session, principal, document)
    if own is not None:
        exchange_service.mark_read(session, principal, own)
    data = documents_api.document_out(session, principal, document)
    is_sender = principal.agency_id == document.sender_id
    context: dict[str, Any] = {
        "doc": data, "document": document, "own": own, "is_sender": is_sender,
        "history": exchange_service.history(session, principal, document_id),
        "events": _document_events(session, document),
        "reports": list(session.exec(select(VerificationReport)
                                     .where(VerificationReport.document_id == document.id)
                                     .order_by(col(VerificationReport.id).desc())).all()),
    }
    if rows:
        return render(request, "_deliveries.html", context, session=session, fragment=True)
    if own is not None:
        context["assignees"] = list(session.exec(
            select(User).where(User.agency_id == principal.agency_id)
            .where(col(User.is_active).is_(True)).order_by(col(User.username))).all())
    needs_picker = (is_sender and document.status == "draft") or (
        own is not None and own.status_code in ("03", "04", "05", "06"))
    if needs_picker and principal.role in ("clerk", "leader"):
        context["choices"] = recipient_choices(session, principal, request)
    from eoffice.web import pages_more

    context["signing"] = pages_more.signing_actions(session, principal, document)
    return render(request, "document.html", context, session=session)


@router.get("/documents/{document_id}/file")
def document_file(document_id: RowId, session: SessionDep, principal: WebPrincipal,
                  revision: RowIdQuery = None) -> Response:
    """The main PDF for the in-page viewer."""
    return documents_api.download_file(document_id, session, principal, revision)


@router.get("/documents/{document_id}/attachments/{attachment_id}")
def document_attachment(document_id: RowId, attachment_id: RowId, session: SessionDep,
                        principal: WebPrincipal) -> Response:
    return documents_api.download_attachment(document_id, attachment_id, session, principal)


@router.post("/documents/{document_id}/send")
def send(request: Request, document_id: RowId, session: SessionDep, principal: WebPrincipal,
         recipients: Annotated[list[str] | None, Form()] = None,
         _csrf: None = Csrf) -> Response:
    """Send a draft or issued document to the chosen receivers."""
    document = documents_service.get_own(session, principal, document_id)
    chosen = [r for r in recipients or [] if r.strip()]
    if not chosen:
        raise ValidationFailed("choose at least one recipient", field="recipients",
                               detail_vi="Cần chọn ít nhất một nơi nhận")
    exchange_service.send_document(session, principal, document, chosen)
    flash(request, "Sent as %(number)s.", number=documents_service.number_notation(document))
    return redirect(request, f"/documents/{document_id}")


@router.post("/documents/{document_id}/recall")
def recall(request: Request, document_id: RowId, session: SessionDep, principal: WebPrincipal,
           reason: TextField = "", _csrf: None = Csrf) -> Response:
    """Ask every receiver to give the document back (13)."""
    if not reason.strip():
        raise ValidationFailed("a reason is required to recall", field="reason",
                               detail_vi="Cần nêu lý do thu hồi")
    exchange_service.recall_document(session, principal, document_id, reason.strip())
    flash(request, "Recall requested from the receivers.")
    return redirect(request, f"/documents/{document_id}")


STATUS_DONE = {
    "02": N_("Rejected and returned to the sender."),
    "03": N_("Accepted; arrival number %(number)s."),
    "04": N_("Assigned."), "05": N_("Marked as being processed."), "06": N_("Completed."),
    "15": N_("You agreed to the request."), "16": N_("You refused the request."),
}


@router.post("/deliveries/{delivery_id}/status")
def change_status(request: Request, delivery_id: RowId, session: SessionDep,
                  principal: WebPrincipal, code: TextField = "", reason: TextField = "",
                  assignee: TextField = "", _csrf: None = Csrf) -> Response:
    """A receiver's answer: 02/03/04/05/06, or 15/16 to a recall or update."""
    delivery = exchange_service.change_status(session, principal, delivery_id, code,
                                              reason.strip() or None, assignee or None)
    if code in STATUS_DONE:
        flash(request, STATUS_DONE[code], number=delivery.arrival_number)
    if delivery.recalled:
        return redirect(request, "/inbox")  # our copy is gone
    return redirect(request, f"/documents/{delivery.document_id}")


@router.post("/deliveries/{delivery_id}/forward")
def forward(request: Request, delivery_id: RowId, session: SessionDep, principal: WebPrincipal,
            recipients: Annotated[list[str] | None, Form()] = None, note: TextField = "",
            _csrf: None = Csrf) -> Response:
    """Send a received document on to other agencies."""
    chosen = [r for r in recipients or [] if r.strip()]
    copy = exchange_service.forward_delivery(session, principal, delivery_id, chosen,
                                             note.strip() or None)
    flash(request, "Forwarded.")
    return redirect(request, f"/documents/{copy.id}")
