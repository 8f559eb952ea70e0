"""Paper registrations in the outgoing and incoming registers (sổ văn bản đi / đến).

A paper entry is a Document with channel "paper" and status "registered". Its sender_id is
the agency whose register holds it: for an incoming entry that is the receiving agency, and
the real sender (possibly outside the system) is kept as counterpart code / name. Numbers come
from the same yearly register counters as electronic documents, so one register numbers both.
"""

from __future__ import annotations

from datetime import date
from typing import Any, BinaryIO

from sqlmodel import Session, col, func, select

from eoffice.audit.service import record
from eoffice.documents.schemas import DocumentMetadata
from eoffice.documents.service import (
    create_document,
    format_number,
    next_number,
    notation_for,
)
from eoffice.errors import ValidationFailed
from eoffice.models import Agency, Document, utcnow
from eoffice.registers.schemas import RegisterEntry, RegisterExtra
from eoffice.stats.service import enqueue_document
from eoffice.timeutil import local_today
from eoffice.users.service import Principal

DIRECTIONS = {"outgoing": "outgoing", "incoming": "incoming"}


def _counterpart(session: Session, code: str | None, name: str | None
                 ) -> tuple[str | None, str | None]:
    """A code known to the directory fills in the name; unknown codes are kept as typed."""
    code = code.strip().upper() if code else None
    if code:
        agency = session.exec(select(Agency).where(Agency.code == code)).first()
        if agency is not None and not name:
            name = agency.name
    return code or None, name or None


def register_paper(session: Session, principal: Principal, direction: str,
                   meta: DocumentMetadata, extra: RegisterExtra,
                   scan: BinaryIO | None = None, scan_name: str | None = None) -> Document:
    """Register a document sent or received on paper; the scan (a PDF) is optional."""
    principal.require_role("clerk", "leader")
    assert principal.agency_id is not None
    if direction not in DIRECTIONS:
        raise ValidationFailed(f"unknown register '{direction}'", field="register")
    today = local_today()
    registered_on = extra.registered_on or today
    if registered_on > today:
        raise ValidationFailed("registered_on cannot be in the future", field="registered_on",
                               detail_vi="Ngày vào sổ không được ở tương lai")
    if registered_on.year < 2000:
        raise ValidationFailed("registered_on is before 2000", field="registered_on",
                               detail_vi="Ngày vào sổ trước năm 2000")
    if direction == "incoming":
        code, name = _counterpart(session, extra.sender_code, extra.sender_name)
        if not code and not name:
            raise ValidationFailed("an incoming entry needs sender_code or sender_name",
                                   field="sender_code",
                                   detail_vi="Văn bản đến cần mã hoặc tên cơ quan gửi")
    else:
        code, name = _counterpart(session, extra.recipient_code, None)
    document = create_document(session, principal, meta, scan, scan_name, [], channel="paper")
    sender = session.get(Agency, principal.agency_id)
    assert sender is not None
    number = next_number(session, sender.id or 0, direction, registered_on.year)
    document.register_name = direction
    document.status = "registered"
    document.also_on_paper = False
    document.registered_on = registered_on
    document.counterpart_code, document.counterpart_name = code, name
    document.original_ref = extra.original_ref
    document.code_number = format_number(number)
    document.code_notation = (notation_for(document.type_name, sender)
                              if direction == "outgoing" else None)
    document.issued_year = registered_on.year
    if direction == "outgoing":
        document.promulgation_date = registered_on
        document.issued_at = utcnow()
    document.updated_at = utcnow()
    session.add(document)
    session.flush()
    record(session, actor=principal.name, action=f"register.paper_{direction}",
           object_type="document", object_id=document.id, agency_id=principal.agency_id,
           data={"number": document.code_number, "registered_on": registered_on.isoformat(),
                 "counterpart": code or name})
    enqueue_document(session, document.id or 0)
    return document


def entry_out(document: Document, agency: Agency) -> dict[str, Any]:
    """A register line as the API shows it."""
    return RegisterEntry(
        id=document.id or 0, direction=document.register_name, channel=document.channel,
        agency=agency.code, number=document.code_number, notation=document.code_notation,
        registered_on=document.registered_on, counterpart_code=document.counterpart_code,
        counterpart_name=document.counterpart_name, original_ref=document.original_ref,
        type_name=document.type_name, subject=document.subject, priority=document.priority,
        due_date=document.due_date, has_scan=document.file_sha256 is not None,
        created_at=document.created_at).model_dump(mode="json")


def list_paper(session: Session, principal: Principal, direction: str, *,
               year: int | None = None, limit: int = 50, offset: int = 0
               ) -> tuple[list[dict[str, Any]], int]:
    """The caller's agency's paper entries of one register, newest first."""
    principal.require_role("clerk", "leader", "officer")
    query = (select(Document).where(Document.sender_id == principal.agency_id)
             .where(Document.channel == "paper").where(Document.register_name == direction))
    if year is not None:
        query = query.where(col(Document.registered_on) >= date(year, 1, 1)).where(
            col(Document.registered_on) <= date(year, 12, 31))
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    agency = session.get(Agency, principal.agency_id)
    assert agency is not None
    rows = session.exec(query.order_by(col(Document.registered_on).desc(),
                                       col(Document.id).desc()).offset(offset).limit(limit)).all()
    return [entry_out(d, agency) for d in rows], int(total)
