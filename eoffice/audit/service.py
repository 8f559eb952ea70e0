"""Hash-chained audit trail: each entry carries the hash of the one before it.

Business transactions only insert their entries; a sequencer seals committed entries into the
chain after the commit, in batches: a process seals at most every `audit_seal_interval_seconds`
and only if no other sealer is at work (that one, the next commit or beat picks the entries up).
Sealing after every commit cost each request a second transaction that queued on the chain
lock (bench/routing.py). A single chain needs a single writer: had
every request taken the chain lock, two transactions that also lock business rows in the
opposite order (a receiver accepting while a worker stores a verdict) would deadlock, and every
write in the province would queue behind one lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date
from time import monotonic
from typing import Any

from asn1crypto import cms
from sqlalchemy import bindparam, event, text
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from eoffice.db import defer_insert, offload_blocking
from eoffice.models import AuditAnchor, AuditEvent, utcnow
from eoffice.rows import update_rows
from eoffice.settings import get_settings
from eoffice.timeutil import day_end_utc, day_start_utc

GENESIS = "0" * 64
log = logging.getLogger(__name__)


def _canonical(entry: Any, seq: int | None, prev_hash: str | None) -> bytes:
    """The hashed form of an entry (an AuditEvent or a row with its columns) placed at `seq`
    after `prev_hash`."""
    body = {
        "seq": seq,
        "prev": prev_hash,
        "at": entry.at.isoformat(timespec="microseconds"),
        "actor": entry.actor,
        "agency_id": entry.agency_id,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "data": entry.data or {},
    }
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str).encode()


def entry_hash(event: AuditEvent) -> str:
    return _hash_at(event, event.seq, event.prev_hash)


def _hash_at(entry: Any, seq: int | None, prev_hash: str | None) -> str:
    return hashlib.sha256(_canonical(entry, seq, prev_hash)).hexdigest()


_PENDING = "eoffice_audit_pending"


def record(session: Session, *, actor: str, action: str, object_type: str, object_id: Any,
           agency_id: int | None = None, data: dict[str, Any] | None = None) -> None:
    """Append one entry inside the caller's transaction; it is sealed after the commit."""
    # Written at commit with the transaction's other entries, in one INSERT (defer_insert).
    defer_insert(session, AuditEvent, {
        "at": utcnow(), "actor": actor, "agency_id": agency_id, "action": action,
        "object_type": object_type, "object_id": str(object_id),
        "data": json.loads(json.dumps(data or {}, default=str)),
        "seq": None, "prev_hash": None, "hash": None})
    session.info[_PENDING] = True


_last_seal = [float("-inf")]  # monotonic time of this process's last seal after a commit
# Celery pool processes (and eager tasks) seal after their commits themselves.
_SEAL_IN_PROCESS = [False]


def seal_in_this_process() -> None:
    """Commits in this process seal the chain themselves (called in Celery pool processes)."""
    _SEAL_IN_PROCESS[0] = True


@event.listens_for(Session, "after_commit")
def _seal_after_commit(session: Session) -> None:
    if not session.info.pop(_PENDING, False):
        return
    interval = get_settings().audit_seal_interval_seconds
    now = monotonic()
    if interval > 0 and now - _last_seal[0] < interval:
        return
    _last_seal[0] = now
    # No import here: a module imported during commit listeners' dispatch that registers
    # listeners of its own breaks the dispatch ("deque mutated during iteration"). A process
    # that has not loaded the Celery app yet seals itself.
    celery = sys.modules.get("workers.celery_app")
    if celery is not None and not get_settings().tasks_eager and not _SEAL_IN_PROCESS[0]:
        # An API process with a broker only asks: a worker hashes and writes the chain, so
        # the request threads (one interpreter lock for all of them) do not.
        try:
            # The broker's network, off the event loop when a unit of work commits there.
            offload_blocking(celery.celery_app.send_task, "audit.seal", queue="fast",
                             ignore_result=True)
        except Exception:  # broker down: beat seals what is left
            log.warning("could not ask for audit sealing; beat will seal", exc_info=True)
        return
    from eoffice.db import new_session

    try:
        with new_session() as sealer:
            seal(sealer, wait=False)
            sealer.commit()
    except Exception:  # beat seals what is left; the request already succeeded
        log.warning("audit sealing after commit failed; beat will retry", exc_info=True)


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


def seal(session: Session, limit: int = 5000, wait: bool = True) -> int:
    """Chain committed, unsealed entries in id order; the one writer of the chain.

    wait=False returns 0 at once if another sealer holds the chain (it, or the next, will
    take these entries too).
    """
    if session.get_bind().dialect.name == "postgresql":
        if not wait:
            if not session.exec(text("SELECT pg_try_advisory_xact_lock(727274)")).one()[0]:  # type: ignore[call-overload]
                return 0
        else:
            session.exec(text("SELECT pg_advisory_xact_lock(727274)"))  # type: ignore[call-overload]
    head = session.exec(select(AuditEvent.seq, AuditEvent.hash)
                        .where(col(AuditEvent.seq).is_not(None))
                        .order_by(col(AuditEvent.seq).desc()).limit(1)).first()
    if head is None:
        seq, prev = 0, GENESIS
    else:
        assert head[0] is not None  # the query reads sealed entries only
        seq, prev = int(head[0]), str(head[1])
    # Plain rows, not ORM objects: the sealer only hashes them and writes three columns
    # back in one statement (loading entities was a third of a worker's sealing, py-spy).
    pending = session.execute(_PENDING_ENTRIES, {"limit": limit}).all()
    chained = []
    for entry in pending:
        seq += 1
        chained.append({"id": entry.id, "seq": seq, "prev_hash": prev,
                        "hash": (prev := _hash_at(entry, seq, prev))})
    update_rows(session, AuditEvent, chained)
    return len(pending)


_events = AuditEvent.__table__  # type: ignore[attr-defined]
_PENDING_ENTRIES = (sa_select(_events.c.id, _events.c.at, _events.c.actor, _events.c.agency_id,
                              _events.c.action, _events.c.object_type, _events.c.object_id,
                              _events.c.data)
                    .where(_events.c.seq.is_(None)).order_by(_events.c.id)
                    .limit(bindparam("limit")))


def unsealed_count(session: Session) -> int:
    from sqlalchemy import func

    return int(session.exec(select(func.count()).select_from(AuditEvent)
                            .where(col(AuditEvent.seq).is_(None))).one())


@dataclass
class ChainCheck:
    ok: bool
    checked: int
    broken_id: int | None = None
    reason: str | None = None
    anchors: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON view (API, CLI)."""
        return {"ok": self.ok, "checked": self.checked, "broken_id": self.broken_id,
                "reason": self.reason, "anchors": self.anchors, "notes": self.notes}


def iter_events(session: Session, batch: int = 1000) -> Iterator[AuditEvent]:
    """Sealed entries in chain order."""
    last_seq = 0
    while True:
        rows = session.exec(select(AuditEvent).where(col(AuditEvent.seq) > last_seq)
                            .order_by(col(AuditEvent.seq)).limit(batch)).all()
        if not rows:
            return
        yield from rows
        last_seq = rows[-1].seq or last_seq


def verify_chain(session: Session) -> ChainCheck:
    """Recompute every hash and check every anchor; name the first entry that does not match.

    Deleting rows leaves a gap in the sequence and breaks the next link; deleting the tail is
    caught up to the last anchor (an RFC 3161 token over the hash of an entry that must still
    be there).
    """
    prev = GENESIS
    prev_seq = 0
    checked = 0
    for entry in iter_events(session):
        if entry.seq != prev_seq + 1 or entry.prev_hash != prev:
            gap = (f" (chain positions {prev_seq + 1}..{(entry.seq or 0) - 1} are missing)"
                   if entry.seq and entry.seq > prev_seq + 1 else "")
            return ChainCheck(False, checked, entry.id,
                              f"link to previous entry broken{gap}")
        if entry_hash(entry) != entry.hash:
            return ChainCheck(False, checked, entry.id, "entry content altered")
        prev = entry.hash
        prev_seq = entry.seq
        checked += 1
    result = _check_anchors(session, ChainCheck(True, checked))
    waiting = unsealed_count(session)
    if waiting:
        result.notes.append(f"{waiting} entries committed but not yet sealed")
    return result


# --- anchoring: RFC 3161 timestamps over the chain head ------------------------------------

def chain_head(session: Session) -> tuple[int, str] | None:
    """(id, hash) of the newest sealed entry, or None for an empty trail."""
    row = session.exec(select(AuditEvent.id, AuditEvent.hash)
                       .where(col(AuditEvent.seq).is_not(None))
                       .order_by(col(AuditEvent.seq).desc()).limit(1)).first()
    if row is None:
        return None
    assert row[0] is not None  # a stored entry always has its primary key
    return int(row[0]), str(row[1])


def anchor_tsa_url() -> str:
    """The configured TSA (development: the local PKI's TSA)."""
    settings = get_settings()
    return settings.tsa_url or f"{settings.pki_base_url.rstrip('/')}/tsa"


def request_timestamp(head_hash: str, url: str, timeout: float = 10.0) -> bytes:
    """An RFC 3161 token whose message imprint is the entry hash itself (SHA-256)."""
    from pyhanko.sign.timestamps.requests_client import HTTPTimeStamper

    stamper = HTTPTimeStamper(url, timeout=int(timeout))
    token = asyncio.run(stamper.async_timestamp(bytes.fromhex(head_hash), "sha256"))
    return bytes(token.dump())


def _tst_info(tst_der: bytes) -> Any:
    info = cms.ContentInfo.load(tst_der)
    signed = info["content"]
    return signed, signed["encap_content_info"]["content"].parsed


def store_anchor(session: Session, event_id: int, head_hash: str, tst_der: bytes,
                 url: str) -> AuditAnchor:
    """Keep a token after checking that it covers ``head_hash``."""
    _, tst_info = _tst_info(tst_der)
    imprint = bytes(tst_info["message_imprint"]["hashed_message"].native)
    if imprint != bytes.fromhex(head_hash):
        raise ValueError("the TSA answered with a token over another hash")
    anchor = AuditAnchor(last_event_id=event_id, head_hash=head_hash, tst=tst_der,
                         tsa_url=url[:500], gen_time=tst_info["gen_time"].native)
    session.add(anchor)
    session.flush()
    return anchor


def latest_anchor(session: Session) -> AuditAnchor | None:
    """The newest anchor."""
    return session.exec(select(AuditAnchor).order_by(col(AuditAnchor.id).desc())
                        .limit(1)).first()


def _token_intact(signed_data: Any, imprint: bytes) -> bool:
    from pyhanko.sign.validation.generic_cms import validate_tst_signed_data

    async def _run() -> dict[str, Any]:
        return await validate_tst_signed_data(signed_data, None, lambda _alg: imprint)

    try:
        status = asyncio.run(_run())
    except Exception:  # noqa: BLE001 - a mangled token is simply not intact
        return False
    return bool(status.get("intact")) and bool(status.get("valid"))


def _check_anchors(session: Session, result: ChainCheck) -> ChainCheck:
    anchors = session.exec(select(AuditAnchor).order_by(col(AuditAnchor.id))).all()
    for anchor in anchors:
        event = session.get(AuditEvent, anchor.last_event_id)
        if event is None:
            return ChainCheck(False, result.checked, anchor.last_event_id,
                              f"entry {anchor.last_event_id}, anchored by timestamp "
                              f"{anchor.id}, is missing (trail truncated or rows deleted)",
                              result.anchors)
        if event.hash != anchor.head_hash:
            return ChainCheck(False, result.checked, event.id,
                              f"entry differs from the hash anchored by timestamp {anchor.id}",
                              result.anchors)
        try:
            signed, tst_info = _tst_info(anchor.tst)
            imprint = bytes(tst_info["message_imprint"]["hashed_message"].native)
        except Exception:  # noqa: BLE001
            return ChainCheck(False, result.checked, event.id,
                              f"timestamp {anchor.id} is unreadable", result.anchors)
        if imprint != bytes.fromhex(event.hash):
            return ChainCheck(False, result.checked, event.id,
                              f"timestamp {anchor.id} does not cover this entry",
                              result.anchors)
        if not _token_intact(signed, imprint):
            return ChainCheck(False, result.checked, event.id,
                              f"timestamp {anchor.id} signature is broken", result.anchors)
        result.anchors += 1
    return result


def describe(check: ChainCheck) -> str:
    """The one-line verdict `eoffice audit verify` prints."""
    if check.ok:
        anchors = f", {check.anchors} timestamp anchors valid" if check.anchors else ""
        notes = f" ({'; '.join(check.notes)})" if check.notes else ""
        return f"audit chain intact: {check.checked} entries{anchors}{notes}"
    return f"audit chain BROKEN at entry {check.broken_id}: {check.reason}"


# --- reading the trail (auditors and admins) -----------------------------------------------

@dataclass
class EventFilter:
    """Which entries a reader asked for and may see; ``agencies`` None means all."""

    agencies: set[int] | None
    from_day: date | None = None
    to_day: date | None = None
    action: str | None = None
    object_type: str | None = None

    def apply(self, query: Any) -> Any:
        """Add the WHERE clauses to a select over AuditEvent."""
        if self.agencies is not None:
            query = query.where(col(AuditEvent.agency_id).in_(sorted(self.agencies)))
        if self.from_day is not None:
            query = query.where(AuditEvent.at >= day_start_utc(self.from_day, UTC))
        if self.to_day is not None:
            query = query.where(AuditEvent.at < day_end_utc(self.to_day, UTC))
        if self.action:
            query = query.where(AuditEvent.action == self.action)
        if self.object_type:
            query = query.where(AuditEvent.object_type == self.object_type)
        return query


def readable_agencies(session: Session, principal: Any) -> set[int] | None:
    """Admin: everything (None); auditor: their subtree; anyone else: 403."""
    from eoffice.agencies.service import AgencyTree
    from eoffice.errors import Forbidden

    if principal.role == "admin":
        return None
    if principal.role == "auditor":
        root = principal.scope_agency_id
        return AgencyTree.load(session).subtree_ids(root) if root else set()
    raise Forbidden("only auditors and administrators read the audit trail",
                    detail_vi="Chỉ kiểm toán viên và quản trị viên được xem nhật ký")


def list_events(session: Session, flt: EventFilter, *, limit: int = 100, offset: int = 0
                ) -> tuple[list[AuditEvent], int]:
    """A page of entries matching the filter, oldest first, and the total."""
    from sqlalchemy import func

    base = flt.apply(select(AuditEvent))
    total = session.exec(select(func.count()).select_from(base.subquery())).one()
    rows = session.exec(base.order_by(col(AuditEvent.id)).offset(offset).limit(limit)).all()
    return list(rows), int(total)


def get_event(session: Session, flt: EventFilter, event_id: int) -> AuditEvent:
    """One entry the reader may see, else 404."""
    from eoffice.errors import NotFound

    row = session.exec(flt.apply(select(AuditEvent).where(AuditEvent.id == event_id))).first()
    if row is None:
        raise NotFound(f"audit entry {event_id} not found",
                       detail_vi="Không tìm thấy mục nhật ký")
    return row


def stream_events(flt: EventFilter, batch: int = 1000) -> Iterator[AuditEvent]:
    """Every matching entry in id order, read in batches with a session of its own.

    A streamed response outlives the request's session, so the export opens its own.
    """
    from eoffice.db import new_session

    last_id = 0
    with new_session() as session:
        while True:
            rows = session.exec(flt.apply(select(AuditEvent))
                                .where(col(AuditEvent.id) > last_id)
                                .order_by(col(AuditEvent.id)).limit(batch)).all()
            session.expunge_all()  # keep the loaded rows usable after the rollback
            session.rollback()  # end the read transaction between batches
            if not rows:
                return
            yield from rows
            last_id = rows[-1].id or last_id
