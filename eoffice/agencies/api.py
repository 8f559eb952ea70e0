"""The agency directory."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from sqlmodel import select

from eoffice.agencies import service
from eoffice.agencies.schemas import AgencyOut, ImportResult, MergeRequest
from eoffice.audit.service import record
from eoffice.deps import CurrentPrincipal, SessionDep
from eoffice.models import Agency

router = APIRouter(tags=["agencies"])


def _out(agency: Agency, by_id: dict[int | None, Agency]) -> AgencyOut:
    parent = by_id.get(agency.parent_id) if agency.parent_id else None
    successor = by_id.get(agency.successor_id) if agency.successor_id else None
    return AgencyOut(code=agency.code, name=agency.name, level=agency.level,
                     abbreviation=agency.abbreviation, parent=parent.code if parent else None,
                     successor=successor.code if successor else None,
                     merged_at=agency.merged_at, active=agency.active)


@router.get("/agencies", response_model=list[AgencyOut])
def list_agencies(session: SessionDep, _: CurrentPrincipal,
                  level: Annotated[str | None, Query(max_length=16)] = None,
                  parent: Annotated[str | None, Query(max_length=35)] = None,
                  q: Annotated[str | None, Query(max_length=100)] = None) -> list[AgencyOut]:
    """Every agency (names and codes are public within the exchange)."""
    agencies = list(session.exec(select(Agency).order_by(Agency.code)).all())
    by_id: dict[int | None, Agency] = {a.id: a for a in agencies}
    result = agencies
    if level:
        result = [a for a in result if a.level == level]
    if parent:
        parent_agency = next((a for a in agencies if a.code == parent.upper()), None)
        result = [a for a in result if parent_agency and a.parent_id == parent_agency.id]
    if q:
        needle = q.casefold()
        result = [a for a in result if needle in a.name.casefold() or needle in a.code.casefold()]
    return [_out(a, by_id) for a in result]


@router.get("/agencies/groups", response_model=dict[str, str])
def list_groups(_: CurrentPrincipal) -> dict[str, str]:
    """Recipient groups accepted by `send`."""
    return service.GROUPS


@router.post("/agencies/import", response_model=ImportResult)
def import_agencies(session: SessionDep, principal: CurrentPrincipal,
                    file: Annotated[UploadFile, File()]) -> ImportResult:
    """Create or update agencies from a CSV or JSON directory (admin)."""
    principal.require_role("admin")
    content = file.file.read(20 * 1024 * 1024 + 1)
    rows = service.parse_directory(content, file.filename or "")
    counts = service.import_directory(session, rows)
    record(session, actor=principal.name, action="agencies.imported", object_type="directory",
           object_id=file.filename or "-", data=counts)
    return ImportResult(**counts)


@router.post("/agencies/{code}/merge", response_model=AgencyOut)
def merge(code: str, body: MergeRequest, session: SessionDep,
          principal: CurrentPrincipal) -> AgencyOut:
    """Merge an agency into its successor (admin)."""
    principal.require_role("admin")
    merged = service.by_code(session, code)
    successor = service.by_code(session, body.successor)
    service.merge_agency(session, merged, successor, body.merged_at or date.today())
    record(session, actor=principal.name, action="agency.merged", object_type="agency",
           object_id=merged.code, data={"successor": successor.code})
    by_id: dict[int | None, Agency] = {a.id: a for a in session.exec(select(Agency)).all()}
    return _out(merged, by_id)
