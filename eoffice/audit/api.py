"""Audit trail for auditors and admins: read, export, verify. Never edit (no such routes)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import StreamingResponse

from eoffice.audit import service
from eoffice.audit.schemas import AuditEventOut, AuditPage, ChainCheckOut
from eoffice.deps import CurrentPrincipal, PageOffset, RowId, SessionDep
from eoffice.errors import ValidationFailed

router = APIRouter(prefix="/audit", tags=["audit"])

FromDate = Annotated[date | None, Query(alias="from", description="first day (UTC), inclusive")]
ToDate = Annotated[date | None, Query(alias="to", description="last day (UTC), inclusive")]
Action = Annotated[str | None, Query(max_length=64)]
ObjectType = Annotated[str | None, Query(max_length=32)]


def _filters(session: SessionDep, principal: CurrentPrincipal, from_: date | None,
             to: date | None, action: str | None, object_type: str | None
             ) -> service.EventFilter:
    if from_ and to and from_ > to:
        raise ValidationFailed("'from' is after 'to'", field="from",
                               detail_vi="Ngày bắt đầu sau ngày kết thúc")
    return service.EventFilter(agencies=service.readable_agencies(session, principal),
                               from_day=from_, to_day=to, action=action,
                               object_type=object_type)


@router.get("/events", response_model=AuditPage)
def list_events(session: SessionDep, principal: CurrentPrincipal, from_: FromDate = None,
                to: ToDate = None, action: Action = None, object_type: ObjectType = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: PageOffset = 0) -> AuditPage:
    """Entries in the caller's scope (auditor: their subtree; admin: all), oldest first."""
    flt = _filters(session, principal, from_, to, action, object_type)
    rows, total = service.list_events(session, flt, limit=limit, offset=offset)
    return AuditPage(items=[AuditEventOut.model_validate(r, from_attributes=True)
                            for r in rows], total=total)


@router.get("/events/{event_id}", response_model=AuditEventOut)
def get_event(event_id: RowId, session: SessionDep,
              principal: CurrentPrincipal) -> AuditEventOut:
    """One entry in the caller's scope."""
    flt = service.EventFilter(agencies=service.readable_agencies(session, principal))
    return AuditEventOut.model_validate(service.get_event(session, flt, event_id),
                                        from_attributes=True)


def _export_lines(flt: service.EventFilter, fmt: str) -> Iterator[str]:
    fields = list(AuditEventOut.model_fields)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(fields)
    for row in service.stream_events(flt):
        values: dict[str, Any] = jsonable_encoder(
            AuditEventOut.model_validate(row, from_attributes=True))
        if fmt == "jsonl":
            yield json.dumps(values, ensure_ascii=False) + "\n"
            continue
        writer.writerow([json.dumps(values[f], ensure_ascii=False)
                         if isinstance(values[f], dict) else values[f] for f in fields])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if fmt == "csv" and buffer.getvalue():
        yield buffer.getvalue()


@router.get("/export")
def export(session: SessionDep, principal: CurrentPrincipal,
           format: Annotated[str, Query(pattern="^(csv|jsonl)$")] = "jsonl",  # noqa: A002
           from_: FromDate = None, to: ToDate = None, action: Action = None,
           object_type: ObjectType = None) -> StreamingResponse:
    """The whole trail in scope as CSV or JSON Lines, streamed (each row with its hashes)."""
    flt = _filters(session, principal, from_, to, action, object_type)
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(_export_lines(flt, format), media_type=media,
                             headers={"Content-Disposition":
                                      f'attachment; filename="audit.{format}"'})


@router.get("/verify", response_model=ChainCheckOut)
def verify(session: SessionDep, principal: CurrentPrincipal) -> ChainCheckOut:
    """Recompute the whole chain and check its timestamp anchors."""
    principal.require_role("auditor", "admin")
    check = service.verify_chain(session)
    return ChainCheckOut(**check.as_dict(), message=service.describe(check))
