"""Response models of the audit API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AuditEventOut(BaseModel):
    """One entry of the hash-chained trail."""

    id: int
    at: datetime
    actor: str
    agency_id: int | None
    action: str
    object_type: str
    object_id: str
    data: dict[str, Any] | None
    prev_hash: str | None
    hash: str | None
    seq: int | None = None


class AuditPage(BaseModel):
    """A page of entries."""

    items: list[AuditEventOut]
    total: int


class ChainCheckOut(BaseModel):
    """Result of recomputing the chain and checking its timestamp anchors."""

    ok: bool
    checked: int
    broken_id: int | None = None
    reason: str | None = None
    anchors: int = 0
    notes: list[str] = []
    message: str
