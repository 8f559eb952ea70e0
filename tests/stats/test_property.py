"""Property: every KPI from the API equals a brute-force recomputation from the raw rows.

Hypothesis writes random histories straight into the tables (documents across tiers and
dates, paper registrations, deliveries with statuses, recalls, verification reports), drives
the incremental path (events applied in random order, some twice, then status changes), and
compares GET /stats/exchange with an independent computation over all raw rows. Percentiles
are compared at the resolution of the histogram buckets.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from tests.conftest import Clients, Env

VN = ZoneInfo("Asia/Ho_Chi_Minh")
HOLIDAYS = ["2026-04-30", "2026-05-01", "2026-09-02"]
EDGES = (1, 5, 15, 30, 60, 120, 240, 480, 1440, 2880, 4320, 10080, 20160, 43200)
BLOBS = {"a" * 64: ("TOTAL_PASSED", True), "b" * 64: ("TOTAL_PASSED", False),
         "c" * 64: ("TOTAL_FAILED", False), "d" * 64: None}
BASE = datetime(2026, 3, 1, tzinfo=UTC)

delivery_st = st.fixed_dictionaries({
    "recipient": st.integers(0, 60), "delivered": st.booleans(),
    "recalled": st.integers(0, 4), "arrive_min": st.integers(0, 600),
    "ack_min": st.one_of(st.none(), st.integers(0, 60 * 24 * 9)),
    "done_min": st.one_of(st.none(), st.integers(0, 60 * 24 * 40)),
})
document_st = st.fixed_dictionaries({
    "kind": st.sampled_from(["sent", "sent", "sent", "recalled", "draft", "paper_out",
                             "paper_in"]),
    "sender": st.integers(0, 60), "minute": st.integers(0, 60 * 24 * 120),
    "paper_flag": st.booleans(), "blob": st.sampled_from(sorted(BLOBS)),
    "due_days": st.one_of(st.none(), st.integers(0, 30)),
    "deliveries": st.lists(delivery_st, max_size=4),
})
history_st = st.lists(document_st, min_size=1, max_size=10)
range_st = st.tuples(st.integers(0, 130), st.integers(0, 130))


def _local(moment: datetime) -> date:
    return moment.astimezone(VN).date()


def _next_working(day: date) -> date:
    day += timedelta(days=1)
    while day.weekday() >= 5 or day.isoformat() in HOLIDAYS:
        day += timedelta(days=1)
    return day


def _bucket(minutes: float) -> int:
    return sum(1 for edge in EDGES if edge <= minutes)


def _nearest_rank(values: list[float], fraction: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return _bucket(ordered[max(1, math.ceil(fraction * len(ordered))) - 1])


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def brute_force(session: Any, start: date, end: date) -> dict[int, dict[str, Any]]:
    """Per agency: counters and raw durations, straight from documents and deliveries."""
    from sqlalchemy import text

    reports: dict[str, tuple[str, Any]] = {}
    for sha, indication, report in session.execute(text(
            "SELECT blob_sha256, indication, report FROM verification_reports ORDER BY id")):
        reports[sha] = (indication, report)

    def signed(sha: str | None) -> int:
        import json

        if sha not in reports:
            return 0
        indication, report = reports[sha]
        report = json.loads(report) if isinstance(report, str) else report
        return int(indication == "TOTAL_PASSED" and bool(report)
                   and (report.get("decree30") or {}).get("conformant") is True)

    result: dict[int, dict[str, Any]] = defaultdict(lambda: {
        "out": defaultdict(int), "in": defaultdict(int), "ack": [], "done": []})
    docs = {row.id: row for row in session.execute(text(
        "SELECT id, sender_id, channel, status, sent_at, register_name, registered_on, "
        "also_on_paper, file_sha256, due_date FROM documents"))}
    for doc in docs.values():
        if doc.channel == "paper":
            day = doc.registered_on if isinstance(doc.registered_on, date) else \
                date.fromisoformat(str(doc.registered_on)) if doc.registered_on else None
            if doc.status == "registered" and day and start <= day <= end:
                side = "in" if doc.register_name == "incoming" else "out"
                result[doc.sender_id][side]["paper"] += 1
            continue
        sent = _utc(_dt(doc.sent_at))
        if sent is None or doc.status not in ("sent", "recalled"):
            continue
        if not start <= _local(sent) <= end:
            continue
        out = result[doc.sender_id]["out"]
        if doc.status == "recalled":
            out["recalled"] += 1
        else:
            out["electronic"] += 1
            out["also_on_paper"] += int(bool(doc.also_on_paper))
            out["signed_ok"] += signed(doc.file_sha256)
    for dlv in session.execute(text(
            "SELECT document_id, recipient_id, transport_status, recalled, delivered_at, "
            "acknowledged_at, completed_at FROM deliveries")):
        doc = docs[dlv.document_id]
        sent = _utc(_dt(doc.sent_at))
        if sent is None or not start <= _local(sent) <= end:
            continue
        agency = result[dlv.recipient_id]
        inc = agency["in"]
        if dlv.recalled:
            inc["recalled"] += 1
            continue
        arrived = _utc(_dt(dlv.delivered_at))
        if dlv.transport_status != "delivered" or arrived is None:
            continue
        inc["electronic"] += 1
        inc["also_on_paper"] += int(bool(doc.also_on_paper))
        inc["signed_ok"] += signed(doc.file_sha256)
        acked, done = _utc(_dt(dlv.acknowledged_at)), _utc(_dt(dlv.completed_at))
        if acked is not None:
            inc["acknowledged"] += 1
            inc["ack_on_time"] += int(_local(acked) <= _next_working(_local(arrived)))
            agency["ack"].append((acked - arrived).total_seconds() / 60)
        if done is not None:
            inc["completed"] += 1
            agency["done"].append((done - arrived).total_seconds() / 60)
        due = doc.due_date if doc.due_date is None or isinstance(doc.due_date, date) else \
            date.fromisoformat(str(doc.due_date))
        if due is not None:
            inc["with_due"] += 1
            inc["done_by_due"] += int(done is not None and _local(done) <= due)
    return result


def _dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _check_block(api: dict[str, Any], agencies: list[dict[str, Any]]) -> None:
    """One API block against the merged brute-force counters of some agencies."""
    out: dict[str, int] = defaultdict(int)
    inc: dict[str, int] = defaultdict(int)
    ack: list[float] = []
    done: list[float] = []
    for agency in agencies:
        for key, value in agency["out"].items():
            out[key] += value
        for key, value in agency["in"].items():
            inc[key] += value
        ack += agency["ack"]
        done += agency["done"]
    for name, side in (("outgoing", out), ("incoming", inc)):
        total = side["electronic"] + side["paper"]
        assert api[name] == {"electronic": side["electronic"], "paper": side["paper"],
                             "total": total,
                             "electronic_rate": side["electronic"] / total if total else None,
                             "recalled": side["recalled"],
                             "also_on_paper": side["also_on_paper"]}, name
    electronic = out["electronic"] + inc["electronic"]
    total = electronic + out["paper"] + inc["paper"]
    assert (api["electronic"], api["total"]) == (electronic, total)
    assert api["electronic_rate"] == (electronic / total if total else None)
    signed = out["signed_ok"] + inc["signed_ok"]
    assert api["signatures"]["both_valid"] == signed
    assert api["signatures"]["share"] == (signed / electronic if electronic else None)
    a = api["acknowledgement"]
    assert (a["deliveries"], a["acknowledged"], a["on_time"]) == (
        inc["electronic"], inc["acknowledged"], inc["ack_on_time"])
    assert a["on_time_share"] == (inc["ack_on_time"] / inc["electronic"]
                                  if inc["electronic"] else None)
    for fraction, key in ((0.5, "median"), (0.9, "p90")):
        expected = _nearest_rank(ack, fraction)
        assert (a[key]["bucket"] if a[key] else None) == expected, key
        expected = _nearest_rank(done, fraction)
        got = api["completion"][key]
        assert (got["bucket"] if got else None) == expected, key
    c = api["completion"]
    assert (c["with_due"], c["completed_by_due"], c["completed"]) == (
        inc["with_due"], inc["done_by_due"], inc["completed"])


def _insert_history(session: Any, history: list[dict[str, Any]], agency_ids: list[int],
                    rng_seed: int) -> tuple[list[int], list[int]]:
    from eoffice.models import Delivery, Document

    doc_ids: list[int] = []
    delivery_ids: list[int] = []
    for spec in history:
        sender = agency_ids[spec["sender"] % len(agency_ids)]
        moment = BASE + timedelta(minutes=spec["minute"])
        kind = spec["kind"]
        doc = Document(sender_id=sender, type_name="Công văn", subject="thử",
                       channel="paper" if kind.startswith("paper") else "electronic",
                       also_on_paper=spec["paper_flag"] and not kind.startswith("paper"),
                       file_sha256=None if kind.startswith("paper") else spec["blob"],
                       due_date=(_local(moment) + timedelta(days=spec["due_days"])
                                 if spec["due_days"] is not None else None))
        if kind in ("sent", "recalled"):
            doc.status, doc.sent_at = kind, moment
        elif kind == "draft":
            doc.status = "draft"
        else:
            doc.status = "registered"
            doc.register_name = "incoming" if kind == "paper_in" else "outgoing"
            doc.registered_on = _local(moment)
        session.add(doc)
        session.flush()
        doc_ids.append(doc.id)
        if kind not in ("sent", "recalled"):
            continue
        used = {sender}
        for d in spec["deliveries"]:
            recipient = agency_ids[d["recipient"] % len(agency_ids)]
            if recipient in used:
                continue
            used.add(recipient)
            arrived = moment + timedelta(minutes=d["arrive_min"])
            delivery = Delivery(document_id=doc.id, recipient_id=recipient,
                                transport_status="delivered" if d["delivered"] else "queued",
                                recalled=d["recalled"] == 0,
                                delivered_at=arrived if d["delivered"] else None)
            if d["delivered"] and d["ack_min"] is not None:
                delivery.acknowledged_at = arrived + timedelta(minutes=d["ack_min"])
            if d["delivered"] and d["done_min"] is not None:
                delivery.completed_at = arrived + timedelta(minutes=d["done_min"])
            session.add(delivery)
            session.flush()
            delivery_ids.append(delivery.id)
    return doc_ids, delivery_ids


def _setup_blobs(session: Any) -> None:
    from eoffice.models import Blob, VerificationReport

    if session.get(Blob, "a" * 64) is not None:
        return
    for sha, verdict in BLOBS.items():
        session.add(Blob(sha256=sha, size=1))
        session.flush()
        if verdict is not None:
            session.add(VerificationReport(blob_sha256=sha, indication=verdict[0], report={
                "decree30": {"conformant": verdict[1], "reasons": []}}))
    session.flush()


@pytest.fixture
def holidays(env: Env) -> Any:
    from eoffice.settings import get_settings

    previous = os.environ.get("EOFFICE_HOLIDAYS")
    os.environ["EOFFICE_HOLIDAYS"] = str(HOLIDAYS).replace("'", '"')
    get_settings.cache_clear()
    yield
    if previous is None:
        os.environ.pop("EOFFICE_HOLIDAYS", None)
    else:
        os.environ["EOFFICE_HOLIDAYS"] = previous
    get_settings.cache_clear()


@settings(max_examples=int(os.environ.get("STATS_EXAMPLES", "20")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(history=history_st, first=range_st, seed=st.randoms(use_true_random=False),
       changes=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 3)), max_size=6))
def test_api_equals_brute_force(env: Env, as_user: Clients, holidays: Any,
                                history: list[dict[str, Any]], first: tuple[int, int],
                                seed: Any, changes: list[tuple[int, int]]) -> None:
    from eoffice.db import new_session
    from eoffice.models import Agency, Delivery, Document
    from eoffice.stats import service

    with new_session() as session:
        _setup_blobs(session)
        agency_ids = sorted(a.id for a in session.exec(select(Agency)).all())
        doc_ids, delivery_ids = _insert_history(session, history, agency_ids, 0)
        events = [("document", i) for i in doc_ids]
        events += [events[seed.randrange(len(events))] for _ in range(2)]  # repeats
        seed.shuffle(events)
        for kind, ref in events:
            service.apply_event(session, kind, ref)
        # Later status changes (acknowledge, complete, recall), applied incrementally.
        for index, what in changes:
            if not delivery_ids:
                break
            delivery = session.get(Delivery, delivery_ids[index % len(delivery_ids)])
            assert delivery is not None
            now = (delivery.delivered_at or BASE) + timedelta(hours=index + 1)
            if what == 0 and delivery.delivered_at:
                delivery.acknowledged_at = now
            elif what == 1 and delivery.delivered_at:
                delivery.completed_at = now + timedelta(days=index)
            elif what == 2:
                delivery.recalled = True
            else:
                doc = session.get(Document, delivery.document_id)
                assert doc is not None
                doc.status = "recalled"
                session.add(doc)
                session.flush()
                service.apply_event(session, "document", doc.id)
            session.add(delivery)
            session.flush()
            service.apply_event(session, "delivery", delivery.id)
        session.commit()

    start = date(2026, 3, 1) + timedelta(days=min(first))
    end = date(2026, 3, 1) + timedelta(days=max(first))
    client = as_user.client
    admin = as_user.headers("admin")
    body = client.get("/api/v1/stats/exchange", headers=admin,
                      params={"from": start.isoformat(), "to": end.isoformat()}).json()
    with new_session() as session:
        truth = brute_force(session, start, end)
        levels = {a.id: a.level for a in session.exec(select(Agency)).all()}
        codes = {a.code: a.id for a in session.exec(select(Agency)).all()}
    empty = {"out": {}, "in": {}, "ack": [], "done": []}
    _check_block(body, list(truth.values()))
    assert len(body["rows"]) == len(agency_ids)
    for row in body["rows"]:
        _check_block(row, [truth.get(codes[row["agency"]], empty)])
    tiers = client.get("/api/v1/stats/exchange", headers=admin,
                       params={"from": start.isoformat(), "to": end.isoformat(),
                               "group_by": "tier"}).json()
    for row in tiers["rows"]:
        _check_block(row, [v for k, v in truth.items() if levels[k] == row["tier"]])
    communes = client.get("/api/v1/stats/exchange", headers=admin,
                          params={"from": start.isoformat(), "to": end.isoformat(),
                                  "level": "commune"}).json()
    _check_block(communes, [v for k, v in truth.items() if levels[k] == "commune"])
    with new_session() as session:
        run = service.reconcile(session, fix=False)
        assert (run.cells_fixed, run.items_fixed) == (0, 0), run.drift
        session.rollback()
