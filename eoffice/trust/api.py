"""Trust-store endpoints: admins change it, auditors and admins read it and its history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile

from eoffice.deps import CurrentPrincipal, SessionDep
from eoffice.errors import PayloadTooLarge
from eoffice.models import TrustAnchor
from eoffice.trust import service
from eoffice.trust.schemas import TrustAdded, TrustAnchorOut, TrustHistory, TrustList

router = APIRouter(prefix="/trust", tags=["trust"])


def _out(anchor: TrustAnchor) -> TrustAnchorOut:
    return TrustAnchorOut(**service.anchor_out(anchor))


@router.get("/anchors", response_model=TrustList)
def list_anchors(session: SessionDep, principal: CurrentPrincipal,
                 include_removed: bool = False) -> TrustList:
    """The trust anchors in force (and removed ones on request) with the state hash."""
    principal.require_role("admin", "auditor")
    service.ensure_synced(session)
    from sqlmodel import col, select

    query = select(TrustAnchor).order_by(col(TrustAnchor.added_at), col(TrustAnchor.id))
    if not include_removed:
        query = query.where(col(TrustAnchor.removed_at).is_(None))
    anchors = list(session.exec(query).all())
    return TrustList(items=[_out(a) for a in anchors], total=len(anchors),
                     state=service.current_state(session))


@router.post("/anchors", response_model=TrustAdded, status_code=201)
def add_anchor(session: SessionDep, principal: CurrentPrincipal,
               file: Annotated[UploadFile, File(description="certificate, PEM or DER")]
               ) -> TrustAdded:
    """Trust the certificate(s) in an uploaded PEM or DER file."""
    principal.require_role("admin")
    data = file.file.read(service.MAX_CERT_FILE_BYTES + 1)
    if len(data) > service.MAX_CERT_FILE_BYTES:
        raise PayloadTooLarge("a certificate file is at most 1 MB",
                              detail_vi="Tệp chứng thư số quá lớn")
    results = service.add_from_bytes(session, data, actor=principal.name, source="api",
                                     name=file.filename or "upload")
    return TrustAdded(added=[_out(a) for a, changed in results if changed],
                      unchanged=[_out(a) for a, changed in results if not changed],
                      state=service.current_state(session))


@router.delete("/anchors/{fingerprint}", response_model=TrustAnchorOut)
def remove_anchor(fingerprint: str, session: SessionDep,
                  principal: CurrentPrincipal) -> TrustAnchorOut:
    """Stop trusting an anchor; its history stays."""
    principal.require_role("admin")
    return _out(service.remove(session, fingerprint, actor=principal.name, source="api"))


@router.get("/history", response_model=TrustHistory)
def history(session: SessionDep, principal: CurrentPrincipal,
            fingerprint: Annotated[str, Query(max_length=200)],
            at: Annotated[datetime | None, Query(description="ISO 8601; default now")] = None
            ) -> TrustHistory:
    """Was this certificate a trust anchor at ``at``?"""
    principal.require_role("admin", "auditor")
    from eoffice.models import utcnow

    return TrustHistory(**service.trusted_at(session, fingerprint, at or utcnow()))
