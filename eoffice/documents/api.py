"""Documents: create with files, read, download, issue."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, File, Form, Header, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from sqlmodel import Session, col, select

from eoffice import idempotency
from eoffice.agencies.service import AgencyTree
from eoffice.blobs.service import get_blob_store
from eoffice.db import offload_blocking
from eoffice.deps import CurrentPrincipal, RowId, RowIdQuery, SessionDep, UnitOfWorkDep
from eoffice.documents import service
from eoffice.documents.schemas import DocumentMetadata, DocumentOut, SendRequest
from eoffice.errors import NotFound, ValidationFailed, from_pydantic
from eoffice.exchange.service import delivery_out
from eoffice.models import Attachment, Delivery, Document, DocumentRevision
from eoffice.users.service import Principal

router = APIRouter(tags=["documents"])


def _holds_nul(value: Any) -> bool:
    """True if a NUL character (U+0000) is in any key or string of decoded JSON."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def parse_metadata(raw: str) -> DocumentMetadata:
    """The `metadata` form field: JSON with edXML names; 422 names the first bad field."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(f"metadata is not valid JSON: {exc.msg}", field="metadata",
                               detail_vi="Trường metadata không phải JSON hợp lệ") from exc
    if not isinstance(data, dict):
        raise ValidationFailed("metadata must be a JSON object", field="metadata")
    if _holds_nul(data):  # no stored text can hold it (PostgreSQL refuses it)
        raise ValidationFailed("metadata contains a NUL character (U+0000)", field="metadata",
                               detail_vi="Trường metadata chứa ký tự NUL (U+0000)")
    try:
        return DocumentMetadata.model_validate(data)
    except ValidationError as exc:
        raise from_pydantic(exc, prefix="metadata") from exc


def document_out(session: Session, principal: Principal, document: Document, *,
                 revisions: Sequence[DocumentRevision | service.WrittenRevision] | None = None,
                 attachments: list[Attachment] | None = None,
                 deliveries: list[Delivery] | None = None) -> dict[str, Any]:
    """The document as its reader may see it: a receiver sees only its own delivery.

    A caller that has just written the revisions, attachments or (as the sender) all the
    deliveries passes them in, which spares the reads.
    """
    directory = AgencyTree.load(session)
    sender = directory.by_id[document.sender_id]
    if deliveries is None or principal.agency_id != document.sender_id:
        query = (select(Delivery).where(Delivery.document_id == document.id)
                 .order_by(col(Delivery.id)))
        if principal.role != "auditor" and principal.agency_id != document.sender_id:
            query = query.where(Delivery.recipient_id == principal.agency_id)
        deliveries = list(session.exec(query).all())
    delivered = [delivery_out(d, document, directory.by_id[d.recipient_id])
                 for d in deliveries]
    if revisions is None:
        revisions = list(session.exec(select(DocumentRevision)
                                      .where(DocumentRevision.document_id == document.id)
                                      .order_by(col(DocumentRevision.number))).all())
    if attachments is None:
        attachments = list(session.exec(select(Attachment)
                                        .where(Attachment.document_id == document.id)).all())
    return DocumentOut(
        id=document.id or 0, sender=sender.code, sender_name=sender.name,
        status=document.status, channel=document.channel, paper=document.also_on_paper,
        code_number=document.code_number, code_notation=document.code_notation,
        number_notation=service.number_notation(document), issued_year=document.issued_year,
        promulgation_date=document.promulgation_date, type_name=document.type_name,
        subject=document.subject, priority=document.priority,
        signer_info={"competence": document.signer_competence,
                     "position": document.signer_position,
                     "full_name": document.signer_full_name},
        due_date=document.due_date, to_places=document.to_places or [],
        response_for=document.response_for_id, response_for_ref=document.response_for_ref,
        page_amount=document.page_amount, confidentiality=document.confidentiality,
        place=document.place, replaces=document.replaces_id,
        forwarded_from=document.forwarded_from_id, file_name=document.file_name,
        file_sha256=document.file_sha256, revision=document.revision,
        revisions=[{"number": r.number, "sha256": r.blob_sha256, "reason": r.reason,
                    "created_at": r.created_at} for r in revisions],
        attachments=[{"id": a.id, "file_name": a.file_name, "size": a.size,
                      "sha256": a.blob_sha256} for a in attachments],
        deliveries=delivered, created_at=document.created_at, sent_at=document.sent_at,
    ).model_dump(mode="json")


def create_from_form(session: Session, principal: Principal, metadata: str,
                     file: UploadFile | None, attachments: list[UploadFile] | None
                     ) -> Document:
    meta = parse_metadata(metadata)
    return service.create_document(
        session, principal, meta, file.file if file else None,
        file.filename if file else None, _attachment_streams(attachments))


def _attachment_streams(attachments: list[UploadFile] | None
                        ) -> list[tuple[BinaryIO, str, str]]:
    return [(a.file, a.filename or "attachment", a.content_type or "application/octet-stream")
            for a in attachments or []]


def parse_recipients(raw: str | None) -> list[str] | None:
    """The optional `recipients` form field: a JSON list or comma-separated codes/groups."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    try:
        value = json.loads(text) if text.startswith("[") else [
            part.strip() for part in text.split(",") if part.strip()]
    except json.JSONDecodeError as exc:
        raise ValidationFailed(f"recipients is not valid JSON: {exc.msg}", field="recipients",
                               detail_vi="Danh sách nơi nhận không hợp lệ") from exc
    try:
        return SendRequest.model_validate({"recipients": value}).recipients
    except ValidationError as exc:
        raise from_pydantic(exc) from exc


def _upload_digest(upload: UploadFile | None) -> str:
    """SHA-256 of a spooled upload, read back to the start (for the idempotency hash)."""
    if upload is None:
        return ""
    digest = hashlib.sha256()
    while chunk := upload.file.read(1024 * 1024):
        digest.update(chunk)
    upload.file.seek(0)
    return digest.hexdigest()


def _upload_digests(file: UploadFile, attachments: list[UploadFile]) -> dict[str, Any]:
    """The uploads' part of the idempotency hash (files read in one go: one hop off the
    event loop for all of them)."""
    return {"file": _upload_digest(file),
            "attachments": [(a.filename, _upload_digest(a)) for a in attachments]}


@router.post("/documents", status_code=201, response_model=DocumentOut,
             responses={201: {"description": "the document (sent if recipients were given)"}})
async def create_document(unit: UnitOfWorkDep,
                          metadata: Annotated[str, Form(description="edXML metadata as JSON")],
                          file: Annotated[UploadFile, File(description="the main PDF")],
                          attachments: Annotated[list[UploadFile] | None, File()] = None,
                          recipients: Annotated[str | None, Form(
                              description="send at once (issue + send in this request): "
                                          "agency codes or groups, as a JSON list or "
                                          "comma-separated")] = None,
                          idempotency_key: Annotated[str | None, Header(
                              alias="Idempotency-Key")] = None) -> JSONResponse:
    """A draft with its main PDF and attachments; with `recipients`, issued and sent too.

    One request per document is what agency systems need (as DHX's sendDocument): it halves
    their round trips and the server's work per document (bench/routing.py).
    """
    targets = parse_recipients(recipients)
    result, replayed = await unit.batched(
        _create_document, metadata, file, attachments, targets, idempotency_key,
        exclusive=None if idempotency_key is None else ("create", idempotency_key))
    if replayed is not None:
        return JSONResponse(result, status_code=replayed,
                            headers={"Idempotent-Replayed": "true"})
    return JSONResponse(result, status_code=201)


def _create_document(session: Session, principal: Principal, metadata: str, file: UploadFile,
                     attachments: list[UploadFile] | None, targets: list[str] | None,
                     idempotency_key: str | None) -> tuple[Any, int | None]:
    # From the start of the uploads each time: a batch rolled back runs this again.
    for upload in [file, *(attachments or [])]:
        upload.file.seek(0)
    if idempotency_key is not None:
        body_hash = idempotency.request_hash({
            "metadata": metadata, "recipients": targets,
            **offload_blocking(_upload_digests, file, attachments or [])})
        stored = idempotency.claim(session, principal.key, "create", idempotency_key,
                                   body_hash)
        if stored is not None:
            return stored.response, stored.status_code or 201
    # A new draft has no deliveries until this request sends it.
    deliveries: list[Delivery] = []
    if targets is None:
        document = create_from_form(session, principal, metadata, file, attachments)
    else:
        from eoffice.exchange.service import create_and_send

        document, deliveries = create_and_send(
            session, principal, parse_metadata(metadata), file.file, file.filename,
            _attachment_streams(attachments), targets)
    result = document_out(session, principal, document, deliveries=deliveries,
                          **service.written_parts(session, document))
    if idempotency_key is not None:
        idempotency.store(session, principal.key, "create", idempotency_key, 201, result)
    return result, None


@router.get("/documents/{document_id}")
def get_document(document_id: RowId, session: SessionDep,
                 principal: CurrentPrincipal) -> dict[str, Any]:
    document = service.get_visible(session, principal, document_id)
    if principal.agency_id is not None:
        for delivery in session.exec(select(Delivery).where(
                Delivery.document_id == document.id).where(
                Delivery.recipient_id == principal.agency_id)):
            from eoffice.exchange.service import mark_read

            mark_read(session, principal, delivery)
    return document_out(session, principal, document)


def _stream(sha256: str) -> Iterator[bytes]:
    with get_blob_store().open(sha256) as reader:
        while chunk := reader.read(256 * 1024):
            yield chunk


@router.get("/documents/{document_id}/file")
def download_file(document_id: RowId, session: SessionDep, principal: CurrentPrincipal,
                  revision: RowIdQuery = None) -> StreamingResponse:
    """The main PDF (latest revision unless one is asked for)."""
    document = service.get_visible(session, principal, document_id)
    sha = document.file_sha256
    if revision is not None:
        row = session.exec(select(DocumentRevision)
                           .where(DocumentRevision.document_id == document.id)
                           .where(DocumentRevision.number == revision)).first()
        if row is None:
            raise NotFound(f"revision {revision} not found", field="revision")
        sha = row.blob_sha256
    if not sha:
        raise NotFound("this document has no file", detail_vi="Văn bản không có tệp")
    name = (document.file_name or f"document-{document.id}.pdf").encode("ascii", "ignore")
    return StreamingResponse(_stream(sha), media_type="application/pdf", headers={
        "Content-Disposition": f'inline; filename="{name.decode() or "document.pdf"}"',
        "ETag": f'"{sha}"'})


@router.get("/documents/{document_id}/attachments/{attachment_id}")
def download_attachment(document_id: RowId, attachment_id: RowId, session: SessionDep,
                        principal: CurrentPrincipal) -> StreamingResponse:
    document = service.get_visible(session, principal, document_id)
    attachment = session.get(Attachment, attachment_id)
    if attachment is None or attachment.document_id != document.id:
        raise NotFound(f"attachment {attachment_id} not found")
    name = attachment.file_name.encode("ascii", "ignore").decode() or "attachment"
    return StreamingResponse(_stream(attachment.blob_sha256), media_type=attachment.content_type,
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.post("/documents/{document_id}/issue")
def issue(document_id: RowId, session: SessionDep, principal: CurrentPrincipal) -> dict[str, Any]:
    """Assign number, notation and date (the outgoing register)."""
    document = service.get_own(session, principal, document_id)
    service.issue_document(session, principal, document)
    return document_out(session, principal, document)


# Other domains import the converter under this name.
validation_failed = from_pydantic
