"""Hash-chained audit trail: each entry carries the hash of the one before it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, select

from eoffice.models import AuditEvent, utcnow

GENESIS = "0" * 64


def _canonical(event: AuditEvent) -> bytes:
    body = {
        "prev": event.prev_hash,
        "at": event.at.isoformat(timespec="microseconds"),
        "actor": event.actor,
        "agency_id": event.agency_id,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "data": event.data or {},
    }
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str).encode()


def entry_hash(event: AuditEvent) -> str:
    return hashlib.sha256(_canonical(event)).hexdigest()


def record(session: Session, *, actor: str, action: str, object_type: str, object_id: Any,
           agency_id: int | None = None, data: dict[str, Any] | None = None) -> AuditEvent:
    """Append one entry (inside the caller's transaction)."""
    if session.get_bind().dialect.name == "postgresql":
        # Serialise appenders so two transactions never chain onto the same predecessor.
        session.exec(text("SELECT pg_advisory_xact_lock(727274)"))  # type: ignore[call-overload]
    last = session.exec(select(AuditEvent.hash).order_by(col(AuditEvent.id).desc())
                        .limit(1)).first()
    now = utcnow()
    event = AuditEvent(at=now.replace(microsecond=now.microsecond), actor=actor,
                       agency_id=agency_id, action=action, object_type=object_type,
                       object_id=str(object_id), data=json.loads(json.dumps(data or {},
                                                                            default=str)),
                       prev_hash=last or GENESIS, hash="")
    event.hash = entry_hash(event)
    session.add(event)
    session.flush()
    return event


@dataclass
class ChainCheck:
    ok: bool
    checked: int
    broken_id: int | None = None
    reason: str | None = None


def iter_events(session: Session, batch: int = 1000) -> Iterator[AuditEvent]:
    last_id = 0
    while True:
        rows = session.exec(select(AuditEvent).where(col(AuditEvent.id) > last_id)
                            .order_by(col(AuditEvent.id)).limit(batch)).all()
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id or last_id


def verify_chain(session: Session) -> ChainCheck:
    """Recompute every hash; name the first entry whose content or link does not match."""
    prev = GENESIS
    checked = 0
    for event in iter_events(session):
        if event.prev_hash != prev:
            return ChainCheck(False, checked, event.id, "link to previous entry broken")
        if entry_hash(event) != event.hash:
            return ChainCheck(False, checked, event.id, "entry content altered")
        prev = event.hash
        checked += 1
    return ChainCheck(True, checked)
