"""Documents: creation with files, issuance numbering, visibility."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any, BinaryIO, NamedTuple

from pydantic import ValidationError
from sqlalchemy import bindparam, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from eoffice.agencies.service import AgencyRow, AgencyTree
from eoffice.audit.service import record
from eoffice.blobs.service import StoredFile, blob_row, put_for_commit, store_upload
from eoffice.db import defer_insert
from eoffice.documents.schemas import DOCUMENT_TYPES, DocumentMetadata
from eoffice.errors import Conflict, NotFound, UnsupportedMedia, ValidationFailed, from_pydantic
from eoffice.models import (
    OUTGOING_REGISTER,
    ROW_ID_MAX,
    Attachment,
    Blob,
    Delivery,
    DeliveryEvent,
    Document,
    DocumentRevision,
    RegisterCounter,
    utcnow,
)
from eoffice.rows import Family, insert_family, insert_ignore, insert_rows
from eoffice.settings import get_settings
from eoffice.timeutil import local_now
from eoffice.users.service import Principal

PDF_MAGIC = b"%PDF-"
AUTHOR_ROLES = ("clerk", "leader", "officer")


def sniff_pdf(stream: BinaryIO) -> None:
    """Refuse anything whose first kilobyte lacks a PDF header, whatever its name says."""
    head = stream.read(1024)
    stream.seek(0)
    if PDF_MAGIC not in head:
        raise UnsupportedMedia("the main file is not a PDF (checked by content)", field="file",
                               detail_vi="Tệp chính không phải là PDF")


def _store_pdf(session: Session, file: BinaryIO) -> StoredFile:
    sniff_pdf(file)
    return put_for_commit(session, file, max_bytes=_max_bytes())


def _max_bytes() -> int:
    return get_settings().max_upload_mb * 1024 * 1024


class Draft(NamedTuple):
    """A new document's row, checked, with its file staged for commit; not written yet."""

    values: dict[str, Any]
    referenced: list[tuple[Any, list[dict[str, Any]]]]


def create_document(session: Session, principal: Principal, meta: DocumentMetadata,
                    file: BinaryIO | None, file_name: str | None,
                    attachments: list[tuple[BinaryIO, str, str]],
                    channel: str = "electronic") -> Document:
    """A draft with its files; nothing is numbered until issuance."""
    draft = draft_row(session, principal, meta, file, file_name, len(attachments), channel)
    return finish_created(session, principal, insert_draft(session, draft), attachments)


def draft_row(session: Session, principal: Principal, meta: DocumentMetadata,
              file: BinaryIO | None, file_name: str | None, attachment_count: int,
              channel: str = "electronic") -> Draft:
    """The checks and the row of a new draft; its main file is staged (stored at commit)."""
    principal.require_role(*AUTHOR_ROLES)
    assert principal.agency_id is not None
    if channel == "electronic" and file is None:
        raise ValidationFailed("the main PDF file is required", field="file",
                               detail_vi="Cần tải lên tệp PDF văn bản")
    if attachment_count > get_settings().max_attachments:
        raise ValidationFailed(f"at most {get_settings().max_attachments} attachments",
                               field="attachments")
    response_for_id, response_for_ref = _resolve_response_for(session, principal,
                                                              meta.response_for)
    signer = meta.signer_info
    values: dict[str, Any] = {
        "sender_id": principal.agency_id, "created_by_id": principal.user_id,
        "channel": channel, "also_on_paper": meta.paper, "type_name": meta.type_name,
        "subject": meta.subject, "priority": meta.priority,
        "signer_competence": signer.competence if signer else "",
        "signer_position": signer.position if signer else "",
        "signer_full_name": signer.full_name if signer else "", "due_date": meta.due_date,
        "to_places": meta.to_places, "response_for_id": response_for_id,
        "response_for_ref": response_for_ref, "page_amount": meta.page_amount,
        "place": meta.place, "file_sha256": None, "file_name": None,
        "register_name": OUTGOING_REGISTER}
    referenced: list[tuple[Any, list[dict[str, Any]]]] = []
    if file is not None:
        stored = _store_pdf(session, file)
        values["file_sha256"] = stored.sha256
        values["file_name"] = (file_name or "document.pdf")[-255:]
        referenced.append((Blob, [blob_row(stored, "application/pdf")]))
    return Draft(values, referenced)


def insert_draft(session: Session, draft: Draft) -> Document:
    # One statement for the file's row (if new) and the document, not the ORM's flush.
    document = insert_rows(session, Document, [draft.values], referenced=draft.referenced)[0]
    assert document.id is not None
    return document


def finish_created(session: Session, principal: Principal, document: Document,
                   attachments: list[tuple[BinaryIO, str, str]]) -> Document:
    """What follows a new document's row: its first revision, its attachments, the audit
    entry."""
    revisions: list[WrittenRevision] = []
    if document.file_sha256:
        first = WrittenRevision(1, document.file_sha256, "upload", utcnow())
        # Nothing reads the first revision back before commit: it is written then, with the
        # transaction's other append-only rows (defer_insert).
        defer_insert(session, DocumentRevision, {
            "document_id": document.id, "number": first.number,
            "blob_sha256": first.blob_sha256, "reason": first.reason,
            "created_by_id": principal.user_id, "job_id": None,
            "created_at": first.created_at})
        revisions.append(first)
    written: list[Attachment] = []
    for stream, name, content_type in attachments:
        stored = store_upload(session, stream, content_type=content_type or
                              "application/octet-stream", max_bytes=_max_bytes())
        written.append(Attachment(document_id=document.id or 0, blob_sha256=stored.sha256,
                                  file_name=(name or "attachment")[-255:],
                                  content_type=content_type or "application/octet-stream",
                                  size=stored.size))
    if written:
        session.add_all(written)
        session.flush()  # their ids are in the response
    # Held here (the identity map holds clean objects weakly) for the response to reuse.
    session.info.setdefault(_WRITTEN, {})[document.id] = (revisions, written)
    record(session, actor=principal.name, action="document.created", object_type="document",
           object_id=document.id, agency_id=principal.agency_id,
           data={"type_name": document.type_name, "file": document.file_sha256})
    return document


_WRITTEN = "eoffice_written_parts"


class WrittenRevision(NamedTuple):
    """What a response shows of a revision this transaction wrote."""

    number: int
    blob_sha256: str
    reason: str
    created_at: datetime


def written_parts(session: Session, document: Document) -> dict[str, Any]:
    """The revisions and attachments `create_document` wrote in this session, so the
    response needs no query for them (empty: the caller reads them)."""
    revisions, attachments = session.info.get(_WRITTEN, {}).pop(document.id, (None, None))
    if revisions is None:
        return {}
    return {"revisions": revisions, "attachments": attachments}


def _resolve_response_for(session: Session, principal: Principal,
                          value: int | str | None) -> tuple[int | None, str | None]:
    """ResponseFor may be a document id or a free-text reference ("15/QĐ-UBND")."""
    if value is None or value == "":
        return None, None
    if isinstance(value, int) or (isinstance(value, str) and value.isascii() and value.isdigit()):
        number = int(value)
        target = session.get(Document, number) if 1 <= number <= ROW_ID_MAX else None
        if target is None or not can_view(session, principal, target):
            raise ValidationFailed(f"response_for: document {value} not found",
                                   field="response_for",
                                   detail_vi="Văn bản được trả lời không tồn tại")
        return target.id, number_notation(target)
    return None, str(value)[:200]


def number_notation(document: Document) -> str | None:
    """The printed form "15/QĐ-UBND"."""
    if not document.code_number:
        return None
    return f"{document.code_number}/{document.code_notation}"


def notation_for(type_name: str, sender: AgencyRow) -> str:
    """Type abbreviation + agency abbreviation; a công văn carries agency + unit instead."""
    abbreviation = DOCUMENT_TYPES.get(type_name, "")
    if abbreviation:
        return f"{abbreviation}-{sender.abbreviation}"[:30]
    return f"{sender.abbreviation}-VP"[:30]


def next_number(session: Session, agency_id: int, register: str, year: int) -> int:
    """Atomically take the next number of a register; concurrent callers queue on the row.

    The row lock lasts until commit, so callers take the number as late in their
    transaction as they can. The UPDATE comes first: an INSERT ... ON CONFLICT against a row
    another transaction has updated waits for that transaction too, and the row exists for
    all but the first number of a year.
    """
    key = {"counter_agency": agency_id, "counter_register": register, "counter_year": year}
    taken = session.execute(_TAKE_NUMBER, key).scalar_one_or_none()
    if taken is None:
        _create_counter(session, key)
        taken = session.execute(_TAKE_NUMBER, key).scalar_one()
    return int(taken)


def _create_counter(session: Session, key: dict[str, Any]) -> None:
    insert_ignore(session, RegisterCounter, {
        "agency_id": key["counter_agency"], "register_name": key["counter_register"],
        "year": key["counter_year"], "last_number": 0})


_counters = RegisterCounter.__table__  # type: ignore[attr-defined]
# Built once, on the table: an ORM-enabled UPDATE would also look for counters to refresh
# in the session (synchronize_session), on every number taken.
_TAKE_NUMBER = (update(_counters)
                .where(_counters.c.agency_id == bindparam("counter_agency"))
                .where(_counters.c.register_name == bindparam("counter_register"))
                .where(_counters.c.year == bindparam("counter_year"))
                .values(last_number=_counters.c.last_number + 1)
                .returning(_counters.c.last_number))


def issue_document(session: Session, principal: Principal, document: Document) -> Document:
    """Assign number, notation and date (Vietnam calendar; numbers restart each 1 January)."""
    sender = _check_issuable(session, principal, document)
    now = local_now()
    number = next_number(session, sender.id or 0, document.register_name, now.year)
    for name, value in _issued_values(document.type_name, sender, now, utcnow()).items():
        setattr(document, name, value)
    document.code_number = format_number(number)
    session.add(document)
    record_issued(session, principal, document)
    return document


def issue_and_mark_sent(session: Session, principal: Principal, document: Document) -> None:
    """Issue a draft and mark it sent; on PostgreSQL in one statement with the number.

    The caller does this last before commit: the counter's row stays locked until then and
    the agency's other clerks queue on it, so the lock is taken in the round trip that
    writes the number. The document's row gets the new values without the ORM tracking
    them as changes.
    """
    sender = _check_issuable(session, principal, document)
    now, at = local_now(), utcnow()
    values = {**_issued_values(document.type_name, sender, now, at), "status": "sent",
              "sent_at": at}
    key: dict[str, Any] = {"counter_agency": sender.id or 0,
                           "counter_register": document.register_name,
                           "counter_year": now.year}
    if session.get_bind().dialect.name == "postgresql":
        statement = _number_and_update(tuple(values))
        params = {**key, "document_id": document.id,
                  **{f"new_{name}": value for name, value in values.items()}}
        printed = session.execute(statement, params).scalar_one()
        if printed is None:  # the register's first number this year: create its counter
            _create_counter(session, key)
            printed = session.execute(statement, params).scalar_one()
        values["code_number"] = printed
    else:
        values["code_number"] = format_number(next_number(
            session, key["counter_agency"], key["counter_register"], key["counter_year"]))
        session.execute(update(_documents).where(_documents.c.id == document.id)
                        .values(**values))
    for name, value in values.items():
        set_committed_value(document, name, value)
    record_issued(session, principal, document)


def insert_issued_and_sent(session: Session, principal: Principal, draft: Draft,
                           deliveries: list[dict[str, Any]], events: list[dict[str, Any]]
                           ) -> Family | None:
    """A new document issued and sent, in ONE statement on PostgreSQL: its file's row (if
    new), its register number, its row, its deliveries and their events (rows.insert_family;
    `events` name their delivery by position). None elsewhere: the caller writes them one
    after the other (insert_draft, then the send).

    The counter is taken in the statement that writes the document, as issue_and_mark_sent
    takes it in the last statement of a send: its row lock lasts until commit. The counter
    is created if the register has no number yet this year (an upsert: no second try).
    The caller records the issuance (record_issued) where the audit trail expects it.
    """
    sender = AgencyTree.load(session).by_id[principal.agency_id or 0]
    now, at = local_now(), utcnow()
    values = {**draft.values, **_issued_values(str(draft.values["type_name"]), sender, now, at),
              "status": "sent", "sent_at": at}
    return insert_family(
        session, Document, values, "document_id", Delivery, deliveries, "delivery_id",
        DeliveryEvent, events, referenced=draft.referenced, prelude=_NUMBER_TAKEN,
        computed=(("code_number", _NUMBER_PRINTED),),
        parameters={"counter_agency": sender.id, "counter_year": now.year,
                    "counter_register": draft.values["register_name"]})


# The next number of a register as a CTE (`taken`), for insert_issued_and_sent, and the
# printed number as format_number writes it.
_NUMBER_TAKEN = (
    "taken AS (INSERT INTO register_counters (agency_id, register_name, year, last_number) "
    "VALUES (CAST(:counter_agency AS INTEGER), CAST(:counter_register AS VARCHAR), "
    "CAST(:counter_year AS INTEGER), 1) ON CONFLICT (agency_id, register_name, year) "
    "DO UPDATE SET last_number = register_counters.last_number + 1 "
    "RETURNING last_number), ")
_NUMBER_PRINTED = ("SELECT CASE WHEN last_number < 10 THEN '0' || last_number::text "
                   "ELSE last_number::text END FROM taken")


def _check_issuable(session: Session, principal: Principal, document: Document) -> AgencyRow:
    """The sender of a draft the caller may issue."""
    if document.status != "draft":
        raise Conflict(f"document {document.id} is already issued",
                       detail_vi="Văn bản đã được ban hành")
    if principal.agency_id != document.sender_id:
        raise NotFound(f"document {document.id} not found")
    principal.require_role("clerk", "leader")
    return AgencyTree.load(session).by_id[document.sender_id]


def _issued_values(type_name: str, sender: AgencyRow, now: datetime,
                   at: datetime) -> dict[str, Any]:
    """An issued document's fields but its number (local date `now`, UTC instant `at`)."""
    return {"code_notation": notation_for(type_name, sender),
            "issued_year": now.year, "promulgation_date": now.date(), "issued_at": at,
            "updated_at": at, "status": "issued"}


def format_number(number: int) -> str:
    """The printed register number: at least two digits ("05", "123")."""
    return f"{number:02d}"


_documents = Document.__table__  # type: ignore[attr-defined]


@lru_cache(maxsize=8)
def _number_and_update(columns: tuple[str, ...]) -> Any:
    """PostgreSQL: _TAKE_NUMBER as a CTE, and an UPDATE of the document that writes the
    number (formatted as format_number does) with `columns`; returns the printed number,
    None when the counter does not exist yet. Values bind with the columns' types
    (UTCDateTime stores naive UTC whatever the server's time zone)."""
    from sqlalchemy import String, case, cast, literal, select

    taken = _TAKE_NUMBER.cte("taken")
    number = cast(taken.c.last_number, String)
    printed = select(case((taken.c.last_number < 10, literal("0") + number), else_=number)
                     ).scalar_subquery()
    return (update(_documents)
            .where(_documents.c.id == bindparam("document_id"))
            .values({**{name: bindparam(f"new_{name}") for name in columns},
                     "code_number": printed})
            .returning(_documents.c.code_number))


def record_issued(session: Session, principal: Principal, document: Document) -> None:
    record(session, actor=principal.name, action="document.issued", object_type="document",
           object_id=document.id, agency_id=document.sender_id,
           data={"number": number_notation(document)})


def visible_agency_ids(session: Session, principal: Principal) -> set[int] | None:
    """Agencies whose documents the caller reads; an empty set means none."""
    if principal.role == "admin":
        return set()
    if principal.role == "auditor":
        root = principal.scope_agency_id
        return AgencyTree.load(session).subtree_ids(root) if root else set()
    return {principal.agency_id} if principal.agency_id else set()


def can_view(session: Session, principal: Principal, document: Document) -> bool:
    agencies = visible_agency_ids(session, principal) or set()
    if not agencies:
        return False
    if document.sender_id in agencies:
        return True
    query = (select(Delivery.id).where(Delivery.document_id == document.id)
             .where(col(Delivery.recipient_id).in_(agencies)))
    if principal.role != "auditor":
        # After agreeing to a recall the receiver deletes its copy (edXML status 15).
        query = query.where(col(Delivery.recalled).is_(False))
    return session.exec(query.limit(1)).first() is not None


def get_visible(session: Session, principal: Principal, document_id: int) -> Document:
    """The document, or 404 when it does not exist or the caller may not see it."""
    document = session.get(Document, document_id)
    if document is None or not can_view(session, principal, document):
        raise NotFound(f"document {document_id} not found",
                       detail_vi="Không tìm thấy văn bản")
    return document


def get_own(session: Session, principal: Principal, document_id: int) -> Document:
    """A document the caller's agency sent (for sender-side actions)."""
    document = session.get(Document, document_id)
    if document is None or principal.agency_id is None:
        raise NotFound(f"document {document_id} not found", detail_vi="Không tìm thấy văn bản")
    if document.sender_id != principal.agency_id:
        if can_view(session, principal, document):
            raise Conflict("only the sending agency can do this",
                           detail_vi="Chỉ cơ quan gửi được thực hiện thao tác này")
        raise NotFound(f"document {document_id} not found", detail_vi="Không tìm thấy văn bản")
    return document


def apply_metadata_changes(document: Document, changes: dict[str, Any]) -> dict[str, Any]:
    """Validate a partial metadata update against the same rules as creation."""
    allowed = {"subject", "priority", "due_date", "to_places", "signer_info", "page_amount",
               "place", "type_name"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValidationFailed(f"cannot update {', '.join(sorted(unknown))}",
                               field=sorted(unknown)[0])
    current = {
        "type_name": document.type_name, "subject": document.subject,
        "priority": document.priority, "due_date": document.due_date,
        "to_places": document.to_places, "page_amount": document.page_amount,
        "place": document.place,
        "signer_info": {"competence": document.signer_competence,
                        "position": document.signer_position,
                        "full_name": document.signer_full_name},
    }
    try:
        merged = DocumentMetadata.model_validate({**current, **changes})
    except ValidationError as exc:
        raise from_pydantic(exc) from exc
    return merged.model_dump(include=set(changes), mode="json")
