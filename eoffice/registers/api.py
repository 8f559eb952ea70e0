"""Paper registers: POST and GET /registers/outgoing and /registers/incoming."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from pydantic import ValidationError

from eoffice.deps import CurrentPrincipal, PageOffset, SessionDep
from eoffice.documents.api import parse_metadata, validation_failed
from eoffice.errors import ValidationFailed
from eoffice.models import Agency
from eoffice.registers import service
from eoffice.registers.schemas import REGISTER_KEYS, RegisterExtra

router = APIRouter(prefix="/registers", tags=["registers"])
Direction = Literal["outgoing", "incoming"]


def _split(raw: str) -> tuple[str, RegisterExtra]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(f"metadata is not valid JSON: {exc.msg}", field="metadata",
                               detail_vi="Trường metadata không phải JSON hợp lệ") from exc
    if not isinstance(data, dict):
        raise ValidationFailed("metadata must be a JSON object", field="metadata")
    extra = {k: data.pop(k) for k in REGISTER_KEYS if k in data}
    try:
        return json.dumps(data), RegisterExtra.model_validate(extra)
    except ValidationError as exc:
        raise validation_failed(exc, prefix="metadata") from exc


@router.post("/{direction}", status_code=201)
def register(direction: Direction, session: SessionDep, principal: CurrentPrincipal,
             metadata: Annotated[str, Form(description="document metadata JSON plus "
                                           "registered_on, sender_code/sender_name (incoming), "
                                           "recipient_code, original_ref")],
             scan: Annotated[UploadFile | None, File(description="optional PDF scan")] = None,
             ) -> dict[str, Any]:
    """Register a document sent or received on paper (channel = paper)."""
    rest, extra = _split(metadata)
    meta = parse_metadata(rest)
    document = service.register_paper(session, principal, direction, meta, extra,
                                      scan.file if scan else None,
                                      scan.filename if scan else None)
    agency = session.get(Agency, document.sender_id)
    assert agency is not None
    return service.entry_out(document, agency)


@router.get("/{direction}")
def list_entries(direction: Direction, session: SessionDep, principal: CurrentPrincipal,
                 year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
                 limit: Annotated[int, Query(ge=1, le=200)] = 50,
                 offset: PageOffset = 0) -> dict[str, Any]:
    """The caller's paper entries of one register."""
    items, total = service.list_paper(session, principal, direction, year=year, limit=limit,
                                      offset=offset)
    return {"items": items, "total": total}
