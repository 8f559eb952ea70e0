"""Electronic-exchange rate: the definition, incremental aggregates, reconciliation, KPI reads.

Counting unit (the definition stored beside every figure, see DEFINITION):
- outgoing: one per *document* an agency sent, dated by its sending date (electronic) or its
  registration date (paper outgoing register);
- incoming: one per *delivery* an agency received (a document sent to ten communes counts once
  for the sender and once for each commune), dated by the document's sending date, or the
  registration date of a paper incoming register entry.
Electronic items are counted once sent (out) / delivered into the inbox (in); drafts and
issued-but-unsent documents are not counted; recalled documents (out) and recalled deliveries
(in) leave the rate and are counted separately; secret documents never enter the system.

Each counted document or delivery is an "item" whose contribution to its (agency, day,
direction) cell is stored (StatsItem). An event recomputes the item from its raw row and adds
the difference to the cell, so a repeated event is a no-op. Reading sums cells only.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Table, func, text
from sqlalchemy import event as sa_event
from sqlalchemy import inspect as sa_inspect
from sqlmodel import Session, SQLModel, col, select
from sqlmodel.sql.expression import Select

from eoffice.db import BEFORE_COMMIT_STEPS
from eoffice.models import (
    Delivery,
    Document,
    StatsCell,
    StatsItem,
    StatsMonth,
    StatsReconcileRun,
    VerificationReport,
    utcnow,
)
from eoffice.rows import insert_ignore_rows, update_rows
from eoffice.timeutil import local_date, next_working_day

log = logging.getLogger(__name__)

DEFINITION = {
    "en": ("Electronic-exchange rate = items exchanged through the system (sent electronically "
           "and not recalled) / all items exchanged (electronic + registered on paper). An item "
           "is a document for the sending agency (outgoing) and a delivery (document-recipient "
           "pair) for each receiving agency (incoming); 'together' adds both. Counted per "
           "agency, tier and the whole province, dated by the sending date (electronic) or the "
           "register date (paper), Vietnam time, inclusive range. Not counted: drafts, "
           "unsent documents, secret documents (never in the system); recalled documents and "
           "deliveries are counted separately. Signatures valid = electronic items whose latest "
           "stored verification report of the file is TOTAL_PASSED with the leader's signature "
           "and the organisation seal conformant to Decree 30. Acknowledged on time = incoming "
           "deliveries confirmed (03 or 02) no later than the next working day after arrival "
           "(weekends and configured holidays excluded). Completed by due date = incoming "
           "deliveries with a due date completed (06) on or before it. Median and 90th "
           "percentile (nearest rank) of minutes from arrival to acknowledgement / completion "
           "are given at histogram-bucket resolution."),
    "vi": ("Tỷ lệ trao đổi văn bản điện tử = số văn bản trao đổi qua hệ thống (gửi điện tử, "
           "không bị thu hồi) / tổng số văn bản trao đổi (điện tử + đăng ký văn bản giấy). Văn "
           "bản đi tính theo văn bản của cơ quan gửi; văn bản đến tính theo từng lượt nhận của "
           "mỗi cơ quan nhận; 'chung' là tổng cả hai. Tính theo cơ quan, cấp và toàn tỉnh, theo "
           "ngày gửi (điện tử) hoặc ngày vào sổ (giấy), giờ Việt Nam, khoảng ngày tính cả hai "
           "đầu. Không tính: dự thảo, văn bản chưa gửi, văn bản mật (không đưa lên hệ thống); "
           "văn bản bị thu hồi được thống kê riêng. Chữ ký hợp lệ = văn bản điện tử có kết quả "
           "kiểm tra gần nhất TOTAL_PASSED, đủ chữ ký người có thẩm quyền và chữ ký số cơ quan "
           "theo Nghị định 30. Tiếp nhận đúng hạn = văn bản đến được xác nhận (03 hoặc 02) "
           "chậm nhất ngày làm việc tiếp theo sau ngày đến (trừ thứ Bảy, Chủ nhật và ngày nghỉ "
           "lễ được cấu hình). Hoàn thành đúng hạn = văn bản đến có hạn xử lý được hoàn thành "
           "(06) không muộn hơn hạn. Trung vị và phân vị 90 (hạng gần nhất) số phút từ lúc đến "
           "tới khi tiếp nhận / hoàn thành được tính theo khoảng của biểu đồ tần suất."),
    "version": "1",
}

# Bucket i holds durations in [EDGES[i-1], EDGES[i]) minutes; bucket 0 starts at 0 and the
# last bucket is open-ended. Log-spaced: a minute at first, a month at the end.
BUCKET_EDGES_MINUTES: tuple[int, ...] = (1, 5, 15, 30, 60, 120, 240, 480, 1440, 2880, 4320,
                                         10080, 20160, 43200)
N_BUCKETS = len(BUCKET_EDGES_MINUTES) + 1
COUNTERS = ("electronic", "paper", "recalled", "also_on_paper", "signed_ok", "acknowledged",
            "ack_on_time", "completed", "with_due", "done_by_due")
ACK_COLS = tuple(f"ack_h{i}" for i in range(N_BUCKETS))
DONE_COLS = tuple(f"done_h{i}" for i in range(N_BUCKETS))
CELL_COLUMNS = COUNTERS + ACK_COLS + DONE_COLS
DIRECTIONS = ("out", "in")
NO_DAY = date(1970, 1, 1)  # placeholder item row meaning "contributes nothing"


def bucket_of(minutes: float) -> int:
    """The histogram bucket of a duration in minutes (negative clock skew counts as 0)."""
    return bisect_right(BUCKET_EDGES_MINUTES, max(minutes, 0.0))


def bucket_bounds(index: int) -> tuple[int, int | None]:
    """[from, to) minutes of a bucket; to is None for the open-ended last bucket."""
    low = 0 if index == 0 else BUCKET_EDGES_MINUTES[index - 1]
    high = BUCKET_EDGES_MINUTES[index] if index < len(BUCKET_EDGES_MINUTES) else None
    return low, high


def _minutes(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 60.0


def acknowledged_on_time(delivered_at: datetime, acknowledged_at: datetime) -> bool:
    """Decree 30: confirmed on the arrival day, at the latest the next working day."""
    return local_date(acknowledged_at) <= next_working_day(local_date(delivered_at))


def signature_conformant(indication: str | None, report: Mapping[str, Any] | None) -> bool:
    """TOTAL_PASSED and the Decree 30 check found both required signatures valid."""
    if indication != "TOTAL_PASSED" or not isinstance(report, dict):
        return False
    decree30 = report.get("decree30")
    return isinstance(decree30, dict) and decree30.get("conformant") is True


# --- contributions -------------------------------------------------------------------------

@dataclass
class Contribution:
    """What one item adds to one cell."""

    agency_id: int
    day: date
    direction: str
    counts: dict[str, int] = field(default_factory=dict)
    ack_bucket: int | None = None
    done_bucket: int | None = None

    def vector(self) -> dict[str, int]:
        """The item as increments of cell columns."""
        vec = {k: v for k, v in self.counts.items() if v}
        if self.ack_bucket is not None:
            vec[f"ack_h{self.ack_bucket}"] = 1
        if self.done_bucket is not None:
            vec[f"done_h{self.done_bucket}"] = 1
        return vec

    def key(self) -> tuple[int, date, str]:
        return self.agency_id, self.day, self.direction


def document_contribution(doc: Any, signed_ok: bool) -> Contribution | None:
    """The outgoing (or paper register) item of a document row, or None if not counted."""
    if doc.channel == "paper":
        if doc.status != "registered" or doc.registered_on is None:
            return None
        direction = "in" if doc.register_name == "incoming" else "out"
        return Contribution(doc.sender_id, doc.registered_on, direction, {"paper": 1})
    if doc.sent_at is None or doc.status not in ("sent", "recalled"):
        return None
    day = local_date(doc.sent_at)
    if doc.status == "recalled":
        return Contribution(doc.sender_id, day, "out", {"recalled": 1})
    return Contribution(doc.sender_id, day, "out", {
        "electronic": 1, "also_on_paper": int(bool(doc.also_on_paper)),
        "signed_ok": int(signed_ok)})


def delivery_contribution(delivery: Any, doc: Any, signed_ok: bool) -> Contribution | None:
    """The incoming item of a delivery row (with its document), or None if not counted."""
    if doc.sent_at is None:
        return None
    day = local_date(doc.sent_at)
    if delivery.recalled:
        return Contribution(delivery.recipient_id, day, "in", {"recalled": 1})
    if delivery.transport_status != "delivered" or delivery.delivered_at is None:
        return None
    result = Contribution(delivery.recipient_id, day, "in", {
        "electronic": 1, "also_on_paper": int(bool(doc.also_on_paper)),
        "signed_ok": int(signed_ok)})
    if delivery.acknowledged_at is not None:
        result.counts["acknowledged"] = 1
        result.counts["ack_on_time"] = int(acknowledged_on_time(delivery.delivered_at,
                                                                delivery.acknowledged_at))
        result.ack_bucket = bucket_of(_minutes(delivery.delivered_at, delivery.acknowledged_at))
    if delivery.completed_at is not None:
        result.counts["completed"] = 1
        result.done_bucket = bucket_of(_minutes(delivery.delivered_at, delivery.completed_at))
    if doc.due_date is not None:
        result.counts["with_due"] = 1
        result.counts["done_by_due"] = int(delivery.completed_at is not None and
                                           local_date(delivery.completed_at) <= doc.due_date)
    return result


def _item_contribution(item: StatsItem) -> Contribution | None:
    if item.day == NO_DAY:
        return None
    return Contribution(item.agency_id, item.day, item.direction,
                        {c: getattr(item, c) for c in COUNTERS}, item.ack_bucket,
                        item.done_bucket)


def _store_item(item: StatsItem, value: Contribution | None) -> None:
    for name, column_value in _item_values(value).items():
        setattr(item, name, column_value)


def _item_values(value: Contribution | None) -> dict[str, Any]:
    """An item's columns for a contribution (None: the item adds nothing)."""
    return {"agency_id": value.agency_id if value else 0,
            "day": value.day if value else NO_DAY,
            "direction": value.direction if value else "",
            **{name: value.counts.get(name, 0) if value else 0 for name in COUNTERS},
            "ack_bucket": value.ack_bucket if value else None,
            "done_bucket": value.done_bucket if value else None}


def _same(a: Contribution | None, b: Contribution | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.key() == b.key() and a.vector() == b.vector()


def _month_of(day: date) -> date:
    return day.replace(day=1)


def _upsert_statement(session: Session, model: Any, keys: dict[str, Any],
                      delta: dict[str, int]) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    table = model.__table__
    stmt = insert(table).values({**keys, **delta})
    return stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={name: table.c[name] + stmt.excluded[name] for name in delta})


def _upsert(session: Session, model: Any, keys: dict[str, Any], delta: dict[str, int]) -> None:
    """Add a delta to one aggregate row, creating it if needed, in one statement."""
    session.execute(_upsert_statement(session, model, keys, delta))


def _add_delta(session: Session, key: tuple[int, date, str], delta: dict[str, int]) -> None:
    """Add a vector to a day cell and to its month cell."""
    delta = {name: value for name, value in delta.items() if value}
    if not delta:
        return
    agency_id, day, direction = key
    day_keys = {"agency_id": agency_id, "day": day, "direction": direction}
    month_keys = {"agency_id": agency_id, "month": _month_of(day), "direction": direction}
    if session.get_bind().dialect.name == "postgresql":
        _upsert_day_and_month(session, day_keys, month_keys, delta)
        return
    _upsert(session, StatsCell, day_keys, delta)
    _upsert(session, StatsMonth, month_keys, delta)


def _upsert_day_and_month(session: Session, day_keys: dict[str, Any],
                          month_keys: dict[str, Any], delta: dict[str, int]) -> None:
    """Both upserts in one round trip: PostgreSQL runs a data-modifying CTE exactly once."""
    columns = tuple(c for c in delta
                    if c in _table(StatsCell).c and c in _table(StatsMonth).c)
    if len(columns) != len(delta):
        raise ValueError(f"unknown aggregate columns {sorted(set(delta) - set(columns))}")
    sql = _day_and_month_upsert(columns)
    session.execute(sql, {"agency_id": day_keys["agency_id"], "day": day_keys["day"],
                          "month": month_keys["month"], "direction": day_keys["direction"],
                          **{f"v_{c}": v for c, v in delta.items()}})


@lru_cache(maxsize=256)
def _day_and_month_upsert(columns: tuple[str, ...]) -> Any:
    """Built once per set of counters moved (SQLAlchemy keys a new statement object's
    cache on every execution)."""
    names = ", ".join(columns)
    values = ", ".join(f":v_{c}" for c in columns)

    def adds(table: str) -> str:
        return ", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in columns)

    return text(
        f"WITH day_cell AS (INSERT INTO stats_cells (agency_id, day, direction, {names}) "
        f"VALUES (:agency_id, :day, :direction, {values}) "
        f"ON CONFLICT (agency_id, day, direction) DO UPDATE SET {adds('stats_cells')} "
        f"RETURNING 1) "
        f"INSERT INTO stats_months (agency_id, month, direction, {names}) "
        f"VALUES (:agency_id, :month, :direction, {values}) "
        f"ON CONFLICT (agency_id, month, direction) DO UPDATE SET {adds('stats_months')}")


CellDeltas = dict[tuple[int, date, str], dict[str, int]]


def _apply(item: StatsItem, new: Contribution | None, deltas: CellDeltas
           ) -> dict[str, Any] | None:
    """Move an item to its new contribution, adding the difference to `deltas`; returns
    the item's new row for the caller to write (None: unchanged)."""
    old = _item_contribution(item)
    if _same(old, new):
        return None

    def add(key: tuple[int, date, str], vector: dict[str, int], sign: int) -> None:
        cell = deltas.setdefault(key, {})
        for name, value in vector.items():
            cell[name] = cell.get(name, 0) + sign * value

    if old is not None:
        add(old.key(), old.vector(), -1)
    if new is not None:
        add(new.key(), new.vector(), 1)
    return {"kind": item.kind, "ref_id": item.ref_id, **_item_values(new)}


def _flush_deltas(session: Session, deltas: CellDeltas) -> None:
    """Add gathered vectors to their cells, in key order (concurrent batches lock alike)."""
    for key in sorted(deltas):
        _add_delta(session, key, deltas[key])


def apply_event(session: Session, kind: str, ref_id: int) -> int:
    """Apply one stats event: ("document", id) or ("delivery", id)."""
    return apply_events(session, [(kind, ref_id)])


def apply_events(session: Session, events: Iterable[tuple[str, int]]) -> int:
    """Apply stats events in one transaction; returns how many items changed.

    Set-based, so a batch costs a handful of statements whatever its size: the items are
    created if missing and locked in a fixed order (documents, then deliveries, by id); the
    raw rows are read after the locks are held, so the last batch to run sees the latest
    committed state and concurrent repeats cannot double-count; the cells the items move
    are summed and written once each, in key order, so two batches cannot deadlock.
    """
    unique = set(events)
    for kind, _ref in unique:
        if kind not in ("document", "delivery"):
            raise ValueError(f"unknown stats event kind {kind!r}")
    if not unique:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        # Aggregates are derived data that reconciliation rebuilds: no need to wait for the
        # WAL flush on every event (it is most of the cost of a small transaction).
        session.execute(text("SET LOCAL synchronous_commit = off"))
    doc_ids = sorted({ref for kind, ref in unique if kind == "document"})
    dlv_ids = {ref for kind, ref in unique if kind == "delivery"}
    if doc_ids:
        # A document's event covers its deliveries (their rows are re-read under the lock).
        dlv_ids.update(int(i) for i in session.exec(
            select(Delivery.id).where(col(Delivery.document_id).in_(doc_ids))).all()
            if i is not None)
    keys = [("doc", i) for i in doc_ids] + [("dlv", i) for i in sorted(dlv_ids)]
    items = _lock_items(session, keys)
    deliveries = {row.id: row for row in session.execute(
        _select_columns(*_DLV_COLUMNS).where(col(Delivery.id).in_(sorted(dlv_ids))))} \
        if dlv_ids else {}
    wanted_docs = set(doc_ids) | {row.document_id for row in deliveries.values()}
    docs = {row.id: row for row in session.execute(
        _select_columns(*_DOC_COLUMNS).where(col(Document.id).in_(sorted(wanted_docs))))} \
        if wanted_docs else {}
    good = _conformant_blobs(session, {d.file_sha256 for d in docs.values() if d.file_sha256})
    deltas: CellDeltas = {}
    changed: list[dict[str, Any]] = []
    for kind, ref_id in keys:
        new: Contribution | None = None
        if kind == "doc":
            doc = docs.get(ref_id)
            if doc is not None:
                new = document_contribution(doc, doc.file_sha256 in good)
        else:
            dlv = deliveries.get(ref_id)
            parent = docs.get(dlv.document_id) if dlv is not None else None
            if dlv is not None and parent is not None:
                new = delivery_contribution(dlv, parent, parent.file_sha256 in good)
        row = _apply(items[(kind, ref_id)], new, deltas)
        if row is not None:
            changed.append(row)
            session.expire(items[(kind, ref_id)])  # written below, not through the ORM
    # One statement for the batch's items (the ORM's flush was an UPDATE per item).
    update_rows(session, StatsItem, changed, key=("kind", "ref_id"))
    _flush_deltas(session, deltas)
    return len(changed)


def _lock_items(session: Session, keys: list[tuple[str, int]]
                ) -> dict[tuple[str, int], StatsItem]:
    """The items of these keys, created if missing, locked (FOR UPDATE) in key order."""
    insert_ignore_rows(session, StatsItem, [
        {"kind": kind, "ref_id": ref_id, "agency_id": 0, "day": NO_DAY, "direction": "",
         **dict.fromkeys(COUNTERS, 0)} for kind, ref_id in keys])
    found: dict[tuple[str, int], StatsItem] = {}
    for kind in ("doc", "dlv"):
        ids = [ref for k, ref in keys if k == kind]
        if not ids:
            continue
        rows = session.exec(select(StatsItem).where(StatsItem.kind == kind)
                            .where(col(StatsItem.ref_id).in_(ids))
                            .order_by(col(StatsItem.ref_id)).with_for_update()
                            .execution_options(populate_existing=True)).all()
        found.update({(kind, row.ref_id): row for row in rows})
    return found


_PENDING_STATS = "eoffice_stats_pending"


def _pending(session: Session) -> dict[str, Any]:
    pending: dict[str, Any] = session.info.setdefault(
        _PENDING_STATS, {"document": set(), "delivery": {}})
    return pending


def enqueue_document(session: Session, document_id: int) -> None:
    """Schedule the stats update of a document when the caller's transaction commits."""
    _pending(session)["document"].add(document_id)


def on_status_events(session: Session, events: list[Any], deliveries: dict[int, Any]) -> None:
    """Exchange status listener: business statuses changed on these deliveries."""
    pending = _pending(session)["delivery"]
    for event in events:
        delivery = deliveries.get(event.delivery_id)
        pending[event.delivery_id] = delivery.document_id if delivery is not None else None


def _enqueue_pending(session: Session) -> None:
    """One outbox row per document and per delivery changed in the transaction.

    A document's update covers its deliveries, so a send that also delivers (and notifies)
    costs one stats task, not one per receiver plus one.
    """
    pending = session.info.pop(_PENDING_STATS, None)
    if not pending:
        return
    from eoffice.outbox import enqueue

    documents = pending["document"]
    for document_id in sorted(documents):
        enqueue(session, "stats.apply", "document", document_id, queue="stats")
    for delivery_id, document_id in sorted(pending["delivery"].items()):
        if document_id not in documents:
            enqueue(session, "stats.apply", "delivery", delivery_id, queue="stats")


# Before the commit writes the transaction's outbox rows, which these join.
BEFORE_COMMIT_STEPS.append(_enqueue_pending)


@sa_event.listens_for(Session, "after_rollback")
def _forget_pending(session: Session) -> None:
    session.info.pop(_PENDING_STATS, None)


# --- full recomputation and reconciliation -------------------------------------------------

_DOC_COLUMNS = (Document.id, Document.sender_id, Document.channel, Document.status,
                Document.sent_at, Document.register_name, Document.registered_on,
                Document.also_on_paper, Document.file_sha256, Document.due_date)
_DLV_COLUMNS = (Delivery.id, Delivery.document_id, Delivery.recipient_id,
                Delivery.transport_status, Delivery.recalled, Delivery.delivered_at,
                Delivery.acknowledged_at, Delivery.completed_at)


def _table(model: type[SQLModel]) -> Table:
    """A model's Core table (SQLModel does not declare `__table__` to type checkers)."""
    return cast(Table, sa_inspect(model).local_table)


def _select_columns(*columns: Any) -> Select[Any]:
    """The Select that sqlmodel's select() builds for many columns.

    Its typed overloads stop at four columns.
    """
    return Select(*columns)


def _conformant_blobs(session: Session, among: set[str] | None = None) -> set[str]:
    """Files whose newest verdict found a conformant signature (all files, or `among`)."""
    if among is not None and not among:
        return set()
    latest: dict[str, bool] = {}
    query = select(VerificationReport.blob_sha256, VerificationReport.indication,
                   VerificationReport.report).order_by(col(VerificationReport.id))
    if among is not None:
        query = query.where(col(VerificationReport.blob_sha256).in_(sorted(among)))
    for sha, indication, report in session.exec(query).all():
        latest[sha] = signature_conformant(indication, report)
    return {sha for sha, ok in latest.items() if ok}


def expected_items(session: Session, chunk: int = 20000
                   ) -> Iterator[list[tuple[str, int, Contribution | None]]]:
    """Every item recomputed from the raw rows, in chunks of documents."""
    good = _conformant_blobs(session)
    last_id = 0
    # execute(), not exec(): the rows are read by column name, which sqlmodel types as tuples.
    while True:
        docs = session.execute(_select_columns(*_DOC_COLUMNS)
                               .where(col(Document.id) > last_id)
                               .order_by(col(Document.id)).limit(chunk)).all()
        if not docs:
            return
        last_id = docs[-1].id
        by_id = {d.id: d for d in docs}
        out: list[tuple[str, int, Contribution | None]] = []
        for doc in docs:
            out.append(("doc", doc.id, document_contribution(doc, doc.file_sha256 in good)))
        deliveries = session.execute(_select_columns(*_DLV_COLUMNS)
                                     .where(col(Delivery.document_id) >= docs[0].id)
                                     .where(col(Delivery.document_id) <= last_id)).all()
        for dlv in deliveries:
            doc = by_id[dlv.document_id]
            out.append(("dlv", dlv.id,
                        delivery_contribution(dlv, doc, doc.file_sha256 in good)))
        yield out


@dataclass
class Drift:
    """What a reconciliation found and fixed."""

    cells_checked: int = 0
    cells_fixed: int = 0
    items_fixed: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)


def reconcile(session: Session, *, fix: bool = True) -> StatsReconcileRun:
    """Recompute every item and cell from raw rows, compare with the stored ones, fix drift."""
    run = StatsReconcileRun(started_at=utcnow())
    drift = Drift()
    expected_cells: dict[tuple[int, date, str], dict[str, int]] = defaultdict(
        lambda: defaultdict(int))
    seen_items: set[tuple[str, int]] = set()
    for batch in expected_items(session):
        stored = _stored_items(session, batch)
        for kind, ref_id, value in batch:
            seen_items.add((kind, ref_id))
            if value is not None:
                cell = expected_cells[value.key()]
                for name, amount in value.vector().items():
                    cell[name] += amount
            current = stored.get((kind, ref_id))
            if _same(current, value):
                continue
            drift.items_fixed += 1
            if fix:
                row = session.get(StatsItem, (kind, ref_id)) or StatsItem(
                    kind=kind, ref_id=ref_id, agency_id=0, day=NO_DAY, direction="")
                _store_item(row, value)
                session.add(row)
        session.flush()
    # Items whose raw row vanished contribute nothing.
    for kind, ref_id in session.exec(select(StatsItem.kind, StatsItem.ref_id)
                                     .where(StatsItem.day != NO_DAY)).all():
        if (kind, ref_id) not in seen_items:
            drift.items_fixed += 1
            if fix:
                orphan = session.get(StatsItem, (kind, ref_id))
                if orphan is not None:
                    _store_item(orphan, None)
                    session.add(orphan)
    expected_months: dict[tuple[int, date, str], dict[str, int]] = defaultdict(
        lambda: defaultdict(int))
    for (agency_id, day, direction), values in expected_cells.items():
        month = expected_months[(agency_id, _month_of(day), direction)]
        for name, amount in values.items():
            month[name] += amount
    _compare(session, StatsCell, "day", expected_cells, drift, fix)
    _compare(session, StatsMonth, "month", expected_months, drift, fix)
    run.finished_at = utcnow()
    run.cells_checked, run.cells_fixed, run.items_fixed = (drift.cells_checked,
                                                           drift.cells_fixed, drift.items_fixed)
    run.drift = {"examples": drift.examples, "fixed": fix}
    session.add(run)
    session.flush()
    if drift.cells_fixed or drift.items_fixed:
        log.warning("stats drift: %d of %d cells and %d items differed from a full "
                    "recomputation%s", drift.cells_fixed, drift.cells_checked, drift.items_fixed,
                    " (fixed)" if fix else "")
        from eoffice.audit.service import record

        record(session, actor="system", action="stats.reconciled",
               object_type="stats_reconcile_run", object_id=run.id,
               data={"cells_fixed": drift.cells_fixed, "items_fixed": drift.items_fixed,
                     "fixed": fix})
    else:
        log.info("stats reconciled: %d cells, no drift", drift.cells_checked)
    return run


def _compare(session: Session, model: Any, period: str,
             expected: dict[tuple[int, date, str], dict[str, int]], drift: Drift,
             fix: bool) -> None:
    """Compare stored aggregate rows with the expected ones; overwrite those that differ."""
    stored = {(c.agency_id, getattr(c, period), c.direction): c
              for c in session.exec(select(model)).all()}
    for key in set(stored) | set(expected):
        drift.cells_checked += 1
        want = expected.get(key, {})
        cell = stored.get(key)
        have = {name: getattr(cell, name) for name in CELL_COLUMNS} if cell else {}
        if all(have.get(n, 0) == want.get(n, 0) for n in CELL_COLUMNS):
            continue
        drift.cells_fixed += 1
        if len(drift.examples) < 20:
            drift.examples.append({
                "table": model.__tablename__, "agency_id": key[0], period: key[1].isoformat(),
                "direction": key[2],
                "differences": {n: {"stored": have.get(n, 0), "expected": want.get(n, 0)}
                                for n in CELL_COLUMNS if have.get(n, 0) != want.get(n, 0)}})
        if fix:
            if cell is None:
                cell = model(agency_id=key[0], direction=key[2], **{period: key[1]})
            for name in CELL_COLUMNS:
                setattr(cell, name, want.get(name, 0))
            session.add(cell)


def _stored_items(session: Session, batch: list[tuple[str, int, Contribution | None]]
                  ) -> dict[tuple[str, int], Contribution | None]:
    found: dict[tuple[str, int], Contribution | None] = {}
    for kind in ("doc", "dlv"):
        ids = [ref for k, ref, _ in batch if k == kind]
        for start in range(0, len(ids), 5000):
            part = ids[start:start + 5000]
            for row in session.exec(select(StatsItem).where(StatsItem.kind == kind)
                                    .where(col(StatsItem.ref_id).in_(part))).all():
                found[(kind, row.ref_id)] = _item_contribution(row)
    return found


def rebuild(session: Session) -> int:
    """Drop and rebuild every aggregate in bulk (first install, benchmarks); items written."""
    session.execute(text("DELETE FROM stats_items"))
    session.execute(text("DELETE FROM stats_cells"))
    session.execute(text("DELETE FROM stats_months"))
    cells: dict[tuple[int, date, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    items_table = _table(StatsItem)
    written = 0
    for batch in expected_items(session):
        rows = []
        for kind, ref_id, value in batch:
            if value is None:
                continue
            for name, amount in value.vector().items():
                cells[value.key()][name] += amount
            rows.append({"kind": kind, "ref_id": ref_id, "agency_id": value.agency_id,
                         "day": value.day, "direction": value.direction,
                         **{c: value.counts.get(c, 0) for c in COUNTERS},
                         "ack_bucket": value.ack_bucket, "done_bucket": value.done_bucket})
        if rows:
            session.execute(items_table.insert(), rows)
            written += len(rows)
    cell_rows = [{"agency_id": k[0], "day": k[1], "direction": k[2],
                  **{c: v.get(c, 0) for c in CELL_COLUMNS}} for k, v in cells.items()]
    months: dict[tuple[int, date, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (agency_id, day, direction), values in cells.items():
        for name, amount in values.items():
            months[(agency_id, _month_of(day), direction)][name] += amount
    month_rows = [{"agency_id": k[0], "month": k[1], "direction": k[2],
                   **{c: v.get(c, 0) for c in CELL_COLUMNS}} for k, v in months.items()]
    for model, aggregate_rows in ((StatsCell, cell_rows), (StatsMonth, month_rows)):
        for start in range(0, len(aggregate_rows), 5000):
            session.execute(_table(model).insert(), aggregate_rows[start:start + 5000])
    session.flush()
    return written


# --- reading -------------------------------------------------------------------------------

@dataclass
class Totals:
    """Summed cell columns of one direction."""

    values: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CELL_COLUMNS, 0))

    def add(self, other: dict[str, int] | Totals) -> None:
        source = other.values if isinstance(other, Totals) else other
        for name in CELL_COLUMNS:
            self.values[name] += int(source.get(name) or 0)


def split_range(start: date, end: date) -> list[tuple[str, date, date]]:
    """Cover [start, end] with whole months (month table) and edge days (day table)."""
    import calendar

    parts: list[tuple[str, date, date]] = []
    first_full = start if start.day == 1 else _next_month(start)
    last_day = calendar.monthrange(end.year, end.month)[1]
    after_full = _next_month(end) if end.day == last_day else end.replace(day=1)
    if first_full >= after_full:
        return [("day", start, end)]
    if start < first_full:
        parts.append(("day", start, first_full - timedelta(days=1)))
    parts.append(("month", first_full, after_full - timedelta(days=1)))
    if after_full <= end:
        parts.append(("day", after_full, end))
    return parts


def _next_month(day: date) -> date:
    return date(day.year + (day.month == 12), day.month % 12 + 1, 1)


def sum_cells(session: Session, start: date, end: date, agency_ids: Iterable[int] | None,
              by_month: bool = False) -> list[tuple[int, str, str | None, dict[str, int]]]:
    """(agency_id, direction, month or None, sums) of a date range, from aggregates only."""
    merged: dict[tuple[int, str, str | None], dict[str, int]] = {}
    ids = sorted(agency_ids) if agency_ids is not None else None
    for source, first, last in split_range(start, end):
        for agency_id, direction, month, values in _sum_part(session, source, first, last,
                                                             ids, by_month):
            key = (agency_id, direction, month)
            if key in merged:
                for name in CELL_COLUMNS:
                    merged[key][name] += values[name]
            else:
                merged[key] = values
    return [(a, d, m, v) for (a, d, m), v in merged.items()]


def _sum_part(session: Session, source: str, start: date, end: date,
              agency_ids: list[int] | None, by_month: bool
              ) -> list[tuple[int, str, str | None, dict[str, int]]]:
    model: Any = StatsMonth if source == "month" else StatsCell
    table = model.__table__
    period = table.c.month if source == "month" else table.c.day
    month: Any = None
    if by_month:
        month = (func.to_char(period, "YYYY-MM")
                 if session.get_bind().dialect.name == "postgresql"
                 else func.strftime("%Y-%m", period)).label("month")
    keys = [table.c.agency_id, table.c.direction] + ([month] if by_month else [])
    query = (select(*keys, *[func.sum(table.c[name]).label(name) for name in CELL_COLUMNS])
             .where(period >= start).where(period <= end))
    if agency_ids is not None:
        query = query.where(table.c.agency_id.in_(agency_ids))
    query = query.group_by(*keys)
    result = []
    for row in session.execute(query).all():
        mapping = row._mapping
        result.append((int(mapping["agency_id"]), str(mapping["direction"]),
                       str(mapping["month"]) if by_month else None,
                       {name: int(mapping[name] or 0) for name in CELL_COLUMNS}))
    return result


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def percentile(histogram: list[int], fraction: float) -> dict[str, Any] | None:
    """Nearest-rank percentile from a bucket histogram, as the bucket that holds it."""
    import math

    total = sum(histogram)
    if total == 0:
        return None
    rank = max(1, math.ceil(fraction * total))
    running = 0
    for index, count in enumerate(histogram):
        running += count
        if running >= rank:
            low, high = bucket_bounds(index)
            return {"bucket": index, "from_minutes": low, "to_minutes": high}
    raise AssertionError("unreachable")


def _direction_block(values: dict[str, int]) -> dict[str, Any]:
    total = values["electronic"] + values["paper"]
    return {"electronic": values["electronic"], "paper": values["paper"], "total": total,
            "electronic_rate": _rate(values["electronic"], total),
            "recalled": values["recalled"], "also_on_paper": values["also_on_paper"]}


def kpi_block(out: Totals, inc: Totals) -> dict[str, Any]:
    """Every KPI of one row (or the whole selection) from its outgoing and incoming sums."""
    both = Totals()
    both.add(out)
    both.add(inc)
    v, i = both.values, inc.values
    ack_hist = [i[c] for c in ACK_COLS]
    done_hist = [i[c] for c in DONE_COLS]
    block = _direction_block(v)
    block.update({
        "outgoing": _direction_block(out.values),
        "incoming": _direction_block(i),
        "signatures": {"electronic": v["electronic"], "both_valid": v["signed_ok"],
                       "share": _rate(v["signed_ok"], v["electronic"])},
        "acknowledgement": {"deliveries": i["electronic"], "acknowledged": i["acknowledged"],
                            "on_time": i["ack_on_time"],
                            "on_time_share": _rate(i["ack_on_time"], i["electronic"]),
                            "median": percentile(ack_hist, 0.5),
                            "p90": percentile(ack_hist, 0.9), "histogram": ack_hist},
        "completion": {"with_due": i["with_due"], "completed_by_due": i["done_by_due"],
                       "by_due_share": _rate(i["done_by_due"], i["with_due"]),
                       "completed": i["completed"], "median": percentile(done_hist, 0.5),
                       "p90": percentile(done_hist, 0.9), "histogram": done_hist},
    })
    return block


# --- the /stats/exchange query -------------------------------------------------------------

TIERS = ("province", "department", "district", "commune")
GROUPS = ("agency", "tier", "month", "agency-month", "none")
MAX_RANGE_DAYS = 366 * 10 + 3
EARLIEST = date(2000, 1, 1)


def parse_period(period: str) -> tuple[date, date]:
    """"2026", "2026-Q1", "2026-03" or "2026-03-05" as an inclusive date range."""
    import calendar
    import re

    from eoffice.errors import ValidationFailed

    value = period.strip().upper()
    try:
        if re.fullmatch(r"\d{4}", value):
            year = int(value)
            return date(year, 1, 1), date(year, 12, 31)
        if match := re.fullmatch(r"(\d{4})-Q([1-4])", value):
            year, quarter = int(match[1]), int(match[2])
            first = 3 * quarter - 2
            return (date(year, first, 1),
                    date(year, first + 2, calendar.monthrange(year, first + 2)[1]))
        if match := re.fullmatch(r"(\d{4})-(\d{2})", value):
            year, month = int(match[1]), int(match[2])
            return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = date.fromisoformat(value)
            return day, day
    except ValueError:
        pass
    raise ValidationFailed(
        f"period '{period}' must be YYYY, YYYY-Qn, YYYY-MM or YYYY-MM-DD", field="period",
        detail_vi=f"Kỳ '{period}' phải có dạng YYYY, YYYY-Qn, YYYY-MM hoặc YYYY-MM-DD")


def check_range(start: date, end: date) -> None:
    """Refuse reversed, absurdly long or out-of-era ranges with a 422."""
    from eoffice.errors import ValidationFailed
    from eoffice.timeutil import local_today

    if start > end:
        raise ValidationFailed(f"from ({start}) is after to ({end})", field="from",
                               detail_vi=f"Ngày bắt đầu ({start}) sau ngày kết thúc ({end})")
    if start < EARLIEST or end.year > local_today().year + 1:
        raise ValidationFailed(
            f"dates must lie between {EARLIEST} and the end of next year", field="from"
            if start < EARLIEST else "to",
            detail_vi="Ngày phải nằm trong khoảng từ năm 2000 đến hết năm sau")
    if (end - start).days > MAX_RANGE_DAYS:
        raise ValidationFailed("the range is longer than 10 years", field="to",
                               detail_vi="Khoảng thời gian dài quá 10 năm")


def scope_ids(session: Session, principal: Any) -> tuple[set[int] | None, Any]:
    """Agencies whose figures the caller may read (None = all) and the agency tree."""
    from eoffice.agencies.service import AgencyTree
    from eoffice.errors import Forbidden

    tree = AgencyTree.load(session)
    if principal.role == "admin":
        return None, tree
    root = principal.scope_agency_id if principal.role == "auditor" else principal.agency_id
    if principal.role == "auditor" and root is None:
        root = principal.agency_id
    if root is None:
        raise Forbidden("no agency scope for statistics",
                        detail_vi="Tài khoản không gắn với cơ quan nào")
    return tree.subtree_ids(root), tree


def selection(session: Session, principal: Any, agency: str | None, level: str | None
              ) -> tuple[set[int], Any]:
    """The agencies a query covers: the caller's scope, narrowed by agency and level."""
    from eoffice.agencies.service import LEVELS
    from eoffice.errors import Forbidden, NotFound, ValidationFailed

    scope, tree = scope_ids(session, principal)
    chosen = set(tree.by_id) if scope is None else set(scope)
    if agency:
        found = tree.by_code.get(agency.strip().upper())
        if found is None:
            raise NotFound(f"unknown agency '{agency}'", field="agency",
                           detail_vi=f"Không tìm thấy cơ quan '{agency}'")
        if scope is not None and found.id not in scope:
            raise Forbidden(f"agency '{agency}' is outside your scope", field="agency",
                            detail_vi=f"Cơ quan '{agency}' nằm ngoài phạm vi bạn được xem")
        chosen &= tree.subtree_ids(found.id)
    if level:
        if level not in LEVELS:
            raise ValidationFailed(f"level must be one of {', '.join(LEVELS)}", field="level",
                                   detail_vi="Cấp không hợp lệ")
        chosen = {i for i in chosen if tree.by_id[i].level == level}
    return chosen, tree


def exchange_stats(session: Session, principal: Any, *, start: date, end: date,
                   agency: str | None = None, level: str | None = None,
                   group_by: str = "agency") -> dict[str, Any]:
    """The contract response of GET /stats/exchange, from the aggregate cells only."""
    from eoffice.errors import ValidationFailed

    check_range(start, end)
    if group_by not in GROUPS:
        raise ValidationFailed(f"group_by must be one of {', '.join(GROUPS)}", field="group_by",
                               detail_vi="Cách nhóm không hợp lệ")
    agencies, tree = selection(session, principal, agency, level)
    by_month = group_by in ("month", "agency-month")
    all_agencies = principal.role == "admin" and not agency and not level
    sums = sum_cells(session, start, end, None if all_agencies else agencies, by_month) \
        if agencies else []
    overall = {"out": Totals(), "in": Totals()}
    groups: dict[tuple[Any, ...], dict[str, Totals]] = {}
    for agency_id, direction, month, values in sums:
        overall[direction].add(values)
        found = tree.by_id.get(agency_id)
        tier = found.level if found else "unknown"
        key: tuple[Any, ...] = {"agency": (agency_id,), "tier": (tier,), "month": (month,),
                                "agency-month": (agency_id, month), "none": ()}[group_by]
        if group_by == "none":
            continue
        groups.setdefault(key, {"out": Totals(), "in": Totals()})[direction].add(values)
    if group_by == "agency":
        for agency_id in agencies:  # agencies without any exchange still get a row
            groups.setdefault((agency_id,), {"out": Totals(), "in": Totals()})
    rows = []
    for key, pair in groups.items():
        row: dict[str, Any] = {}
        if group_by in ("agency", "agency-month"):
            found = tree.by_id[key[0]]
            row.update({"agency": found.code, "agency_name": found.name, "level": found.level})
        if group_by == "tier":
            row["tier"] = key[0]
        if by_month:
            row["month"] = key[-1]
        row.update(kpi_block(pair["out"], pair["in"]))
        rows.append(row)
    rows.sort(key=_row_order(tree))
    body: dict[str, Any] = {"from": start.isoformat(), "to": end.isoformat(),
                            "definition": DEFINITION, "level": level, "agency": agency,
                            "group_by": group_by,
                            "histogram_buckets_minutes": list(BUCKET_EDGES_MINUTES)}
    body.update(kpi_block(overall["out"], overall["in"]))
    body["rows"] = rows
    return body


def _row_order(tree: Any) -> Any:
    tier_rank = {t: i for i, t in enumerate(("central",) + TIERS)}

    def order(row: dict[str, Any]) -> tuple[Any, ...]:
        level = row.get("level") or row.get("tier") or ""
        return (row.get("month") or "", tier_rank.get(level, 9), row.get("agency") or "")
    return order
