"""Sending, receiving and status: thin handlers over exchange.service."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Query, UploadFile
from fastapi.responses import JSONResponse
from sqlmodel import Session, col, select

from eoffice import idempotency
from eoffice.deps import CurrentPrincipal, PageOffset, RowId, SessionDep, UnitOfWorkDep
from eoffice.documents.api import create_from_form, document_out
from eoffice.documents.schemas import (
    ForwardRequest,
    Page,
    RecallRequest,
    SendRequest,
    StatusChange,
    UpdateRequest,
)
from eoffice.documents.service import get_own, get_visible
from eoffice.errors import NotFound, ValidationFailed
from eoffice.exchange import service
from eoffice.models import Agency, Delivery, Document
from eoffice.users.service import Principal

router = APIRouter(tags=["exchange"])

PageLimit = Annotated[int, Query(ge=1, le=200)]
StatusFilter = Annotated[str | None, Query(pattern=r"^\d{2}$")]


def _deliveries(session: Session, document: Document) -> list[dict[str, Any]]:
    rows = session.exec(select(Delivery, Agency).join(Agency, col(Agency.id) ==
                                                      Delivery.recipient_id)
                        .where(Delivery.document_id == document.id)
                        .order_by(col(Delivery.id))).all()
    return [service.delivery_out(d, document, a) for d, a in rows]


@router.post("/documents/{document_id}/send", status_code=202)
async def send(document_id: RowId, body: SendRequest, unit: UnitOfWorkDep,
               idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None
               ) -> JSONResponse:
    """Send to agencies and/or groups: one delivery per receiver, placed in the inboxes by
    this request for a few receivers (`inline_delivery_max`), by a worker for more."""
    result, replayed = await unit.batched(
        _send, document_id, body, idempotency_key,
        exclusive=None if idempotency_key is None else ("send", document_id, idempotency_key))
    if replayed is not None:
        return JSONResponse(result, status_code=replayed,
                            headers={"Idempotent-Replayed": "true"})
    return JSONResponse(result, status_code=202)


def _send(session: Session, principal: Principal, document_id: int, body: SendRequest,
          idempotency_key: str | None) -> tuple[Any, int | None]:
    endpoint = f"send:{document_id}"
    if idempotency_key is not None:
        stored = idempotency.claim(session, principal.key, endpoint, idempotency_key,
                                   idempotency.request_hash(body.model_dump()))
        if stored is not None:
            return stored.response, stored.status_code or 202
    document = get_own(session, principal, document_id)
    service.send_document(session, principal, document, body.recipients)
    result = _jsonable({"document_id": document.id, "code_number": document.code_number,
                        "code_notation": document.code_notation,
                        "deliveries": _deliveries(session, document)})
    if idempotency_key is not None:
        idempotency.store(session, principal.key, endpoint, idempotency_key, 202, result)
    return result, None


def _jsonable(value: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(value)


@router.get("/inbox", response_model=Page)
async def inbox(unit: UnitOfWorkDep, status: StatusFilter = None,
                overdue: bool | None = None,
                q: Annotated[str | None, Query(max_length=200)] = None,
                limit: PageLimit = 50, offset: PageOffset = 0, urgent: bool = False,
                unread: bool = False, arrived_from: date | None = None,
                arrived_to: date | None = None,
                sender: Annotated[str | None, Query(max_length=35)] = None) -> Page:
    """What arrived: filter by status, overdue, urgency, unread, arrival dates, sender, text."""
    if arrived_from and arrived_to and arrived_from > arrived_to:
        raise ValidationFailed("arrived_from is after arrived_to", field="arrived_from",
                               detail_vi="Khoảng ngày không hợp lệ")

    def page(session: Session, principal: Principal) -> Page:
        items, total = service.inbox(session, principal, status=status, overdue=overdue, q=q,
                                     limit=limit, offset=offset, urgent=urgent,
                                     unread=unread, arrived_from=arrived_from,
                                     arrived_to=arrived_to, sender=sender)
        return Page(items=_jsonable(items), total=total)

    return await unit(page)


@router.get("/outbox", response_model=Page)
def outbox(session: SessionDep, principal: CurrentPrincipal, status: StatusFilter = None,
           overdue: bool | None = None, q: Annotated[str | None, Query(max_length=200)] = None,
           limit: PageLimit = 50, offset: PageOffset = 0) -> Page:
    items, total = service.outbox(session, principal, status=status, overdue=overdue, q=q,
                                  limit=limit, offset=offset)
    return Page(items=_jsonable(items), total=total)


@router.get("/deliveries/{delivery_id}")
def get_delivery(delivery_id: RowId, session: SessionDep,
                 principal: CurrentPrincipal) -> dict[str, Any]:
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise NotFound(f"delivery {delivery_id} not found")
    document = get_visible(session, principal, delivery.document_id)
    if principal.role != "auditor" and principal.agency_id not in (delivery.recipient_id,
                                                                   document.sender_id):
        raise NotFound(f"delivery {delivery_id} not found")
    agency = session.get(Agency, delivery.recipient_id)
    assert agency is not None
    return _jsonable({**service.delivery_out(delivery, document, agency),
                      "document_id": document.id,
                      "pending_request_data": delivery.pending_request_data})


@router.post("/deliveries/{delivery_id}/status")
async def change_status(delivery_id: RowId, body: StatusChange,
                        unit: UnitOfWorkDep) -> dict[str, Any]:
    """edXML business status: 02/03/04/05/06 and 15/16 by the receiver, 13 by the sender."""
    return await unit.batched(_change_status, delivery_id, body)


def _change_status(session: Session, principal: Principal, delivery_id: int,
                   body: StatusChange) -> dict[str, Any]:
    delivery = service.change_status(session, principal, delivery_id, body.code, body.reason,
                                     body.assignee)
    document = session.get(Document, delivery.document_id)
    agency = session.get(Agency, delivery.recipient_id)
    assert document is not None and agency is not None
    return _jsonable(service.delivery_out(delivery, document, agency))  # type: ignore[no-any-return]


@router.post("/deliveries/{delivery_id}/forward", status_code=202)
def forward(delivery_id: RowId, body: ForwardRequest, session: SessionDep,
            principal: CurrentPrincipal) -> dict[str, Any]:
    copy = service.forward_delivery(session, principal, delivery_id, body.recipients, body.note)
    return document_out(session, principal, copy)


@router.post("/documents/{document_id}/recall")
def recall(document_id: RowId, body: RecallRequest, session: SessionDep,
           principal: CurrentPrincipal) -> dict[str, Any]:
    """Ask every receiver to give the document back (13); they answer 15 or 16."""
    service.recall_document(session, principal, document_id, body.reason)
    return document_out(session, principal, get_own(session, principal, document_id))


@router.post("/documents/{document_id}/update")
def update(document_id: RowId, body: UpdateRequest, session: SessionDep,
           principal: CurrentPrincipal) -> dict[str, Any]:
    """Correct the metadata of a sent document (edXML update); receivers answer 15 or 16."""
    document = service.update_document(session, principal, document_id, body.changes,
                                       body.reason)
    return document_out(session, principal, document)


@router.post("/documents/{document_id}/replace", status_code=202)
def replace(document_id: RowId, session: SessionDep, principal: CurrentPrincipal,
            metadata: Annotated[str, Form()], reason: Annotated[str, Form(min_length=1)],
            file: Annotated[UploadFile, File()],
            attachments: Annotated[list[UploadFile] | None, File()] = None) -> dict[str, Any]:
    """Send a new document in place of a sent one (edXML replace)."""
    old = get_own(session, principal, document_id)
    if not reason.strip():
        raise ValidationFailed("a reason is required", field="reason")
    new = create_from_form(session, principal, metadata, file, attachments)
    service.replace_document(session, principal, old, new, reason)
    return document_out(session, principal, new)


@router.get("/documents/{document_id}/history")
def history(document_id: RowId, session: SessionDep,
            principal: CurrentPrincipal) -> list[dict[str, Any]]:
    return _jsonable(service.history(session, principal, document_id))
