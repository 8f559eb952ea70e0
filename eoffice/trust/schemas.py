"""Response models of the trust-store API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class TrustAnchorOut(BaseModel):
    """A trust anchor (active or removed)."""

    fingerprint: str
    fingerprint_colon: str
    subject: str
    kind: str
    source: str
    not_after: datetime | None
    added_at: datetime
    added_by: str
    removed_at: datetime | None
    removed_by: str | None
    active: bool


class TrustList(BaseModel):
    """The store: anchors and the state hash verification reports record."""

    items: list[TrustAnchorOut]
    total: int
    state: str


class TrustAdded(BaseModel):
    """Result of adding a file's certificates."""

    added: list[TrustAnchorOut]
    unchanged: list[TrustAnchorOut]
    state: str


class TrustHistory(BaseModel):
    """Was a certificate trusted at a moment, and the events that say so."""

    fingerprint: str
    at: datetime
    trusted: bool
    decided_by: dict[str, Any] | None
    events: list[dict[str, Any]]
