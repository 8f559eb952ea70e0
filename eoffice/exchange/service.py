"""Sending, delivery, edXML business statuses, recall/update/replace, inbox and outbox."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any, BinaryIO, NamedTuple

from sqlalchemy import func, or_
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, col, select

from eoffice.agencies.service import AgencyRow, AgencyTree, Recipient, resolve_recipients
from eoffice.audit.service import record
from eoffice.documents.schemas import DocumentMetadata
from eoffice.documents.service import (
    apply_metadata_changes,
    draft_row,
    finish_created,
    get_own,
    get_visible,
    insert_draft,
    insert_issued_and_sent,
    issue_and_mark_sent,
    next_number,
    number_notation,
    record_issued,
)
from eoffice.errors import Conflict, Forbidden, NotFound, ValidationFailed
from eoffice.models import Agency, Attachment, Delivery, DeliveryEvent, Document, User, utcnow
from eoffice.outbox import enqueue
from eoffice.rows import insert_rows, insert_rows_with_children
from eoffice.settings import get_settings
from eoffice.timeutil import day_end_utc, day_start_utc, local_date, local_now, local_today
from eoffice.users.service import Principal

STATUS_NAMES = {
    "01": "arrived / đã đến", "02": "rejected / từ chối", "03": "accepted / đã tiếp nhận",
    "04": "assigned / đã phân công", "05": "processing / đang xử lý",
    "06": "completed / hoàn thành", "13": "recall requested / đề nghị thu hồi",
    "15": "agreed to recall or update / đồng ý", "16": "refused recall or update / từ chối",
}
# What a receiver may move a delivery to, from each business status.
TRANSITIONS: dict[str | None, set[str]] = {
    "01": {"02", "03"},
    "03": {"04", "05", "06"},
    "04": {"04", "05", "06"},
    "05": {"05", "06"},
    "02": set(), "06": set(), "15": set(), None: set(),
}
FINISHED = {"02", "06", "15"}
# Fan-outs up to this many receivers notify their arrivals inline (see _notified_inline).
INLINE_NOTIFY_MAX = 10
RECEIVER_ROLES = ("clerk", "leader", "officer")


def _event(session: Session, delivery: Delivery, action: str, principal: Principal | None,
           code: str | None = None, reason: str | None = None,
           transport: str | None = None) -> DeliveryEvent:
    event = DeliveryEvent(delivery_id=delivery.id or 0, code=code, action=action,
                          transport_status=transport, reason=reason,
                          actor_user_id=principal.user_id if principal else None,
                          actor_agency_id=principal.agency_id if principal else None)
    session.add(event)
    session.flush()
    record(session, actor=principal.name if principal else "system", action=f"delivery.{action}",
           object_type="delivery", object_id=delivery.id,
           agency_id=principal.agency_id if principal else delivery.recipient_id,
           data={"code": code, "transport": transport, "reason": reason,
                 "document_id": delivery.document_id})
    if code is not None:
        enqueue(session, "exchange.notify_status", event.id)
    return event


# --- sending -------------------------------------------------------------------------------

def send_document(session: Session, principal: Principal, document: Document,
                  recipients: list[str]) -> list[Delivery]:
    """Issue if needed and create one delivery per new receiver.

    A send to at most `inline_delivery_max` new receivers puts the document into their inboxes
    in this transaction: a task of its own cost the system more than the work it does (see
    bench/routing.py). A larger fan-out is queued and run by a worker (`deliver`), so the
    request stays short whatever the number of receivers.
    """
    principal.require_role("clerk", "leader")
    if document.sender_id != principal.agency_id:
        raise NotFound(f"document {document.id} not found", detail_vi="Không tìm thấy văn bản")
    if document.channel != "electronic" or not document.file_sha256:
        raise Conflict("only electronic documents with a file can be sent",
                       detail_vi="Chỉ gửi được văn bản điện tử có tệp đính kèm")
    if document.status == "recalled":
        raise Conflict("a recalled document cannot be sent", detail_vi="Văn bản đã bị thu hồi")
    was_draft = document.status == "draft"
    plan = _plan_send(session, principal, document.id or 0, document.sender_id, recipients,
                      first_send=was_draft)
    return _write_send(session, principal, document, plan, was_draft=was_draft)


def _write_send(session: Session, principal: Principal, document: Document, plan: _SendPlan,
                *, was_draft: bool) -> list[Delivery]:
    """A checked and planned send of a written document: its rows, arrival and number."""
    # The deliveries and their events in one statement (rows.insert_rows_with_children):
    # an event names its delivery by position until the delivery's key exists.
    created, written = insert_rows_with_children(session, Delivery, plan.rows, DeliveryEvent,
                                                 plan.events, link="delivery_id")
    arrived = _arrival(session, document.id or 0, plan, created, written)
    # The register number is taken last, in the statement that marks the document sent:
    # the counter's row lock lasts until commit, and every clerk of the agency numbering
    # a document at the same time queues on it (bench/routing.py measured 38 ms of waiting
    # per request when the number came before the send's inserts).
    if was_draft:
        issue_and_mark_sent(session, principal, document)
    else:
        document.status = "sent"
        document.sent_at = document.sent_at or utcnow()
        document.updated_at = utcnow()
        session.add(document)
    return _finish_send(session, principal, document, plan, created, arrived)


def create_and_send(session: Session, principal: Principal, meta: DocumentMetadata,
                    file: BinaryIO, file_name: str | None,
                    attachments: list[tuple[BinaryIO, str, str]], recipients: list[str]
                    ) -> tuple[Document, list[Delivery]]:
    """A new document, issued and sent in the same transaction (DHX's sendDocument): as
    create_document then send_document, with the same checks and audit trail, but on
    PostgreSQL the document's row, its number, its deliveries and their events are ONE
    statement (documents.service.insert_issued_and_sent) instead of three."""
    draft = draft_row(session, principal, meta, file, file_name, len(attachments))
    principal.require_role("clerk", "leader")  # as send_document: officers only draft
    plan = _plan_send(session, principal, 0, principal.agency_id or 0, recipients,
                      first_send=True)
    family = insert_issued_and_sent(session, principal, draft, plan.rows, plan.events)
    if family is None:  # one step after the other, with the plan made above
        drafted = finish_created(session, principal, insert_draft(session, draft),
                                 attachments)
        rows = [{**row, "document_id": drafted.id or 0} for row in plan.rows]
        return drafted, _write_send(session, principal, drafted, plan._replace(rows=rows),
                                    was_draft=True)
    document: Document = family.root
    finish_created(session, principal, document, attachments)
    arrived = _arrival(session, document.id or 0, plan, family.children, family.grandchildren)
    record_issued(session, principal, document)
    return document, _finish_send(session, principal, document, plan, family.children,
                                  arrived)


class _SendPlan(NamedTuple):
    """A send's receivers and the rows it writes for those not sent to before."""

    resolved: list[Recipient]
    earlier: list[Delivery]
    rows: list[dict[str, Any]]
    events: list[dict[str, Any]]  # each names its delivery by position in `rows`
    inline: bool


def _plan_send(session: Session, principal: Principal, document_id: int, sender_id: int,
               recipients: list[str], *, first_send: bool) -> _SendPlan:
    sender = AgencyTree.load(session).by_id[sender_id]
    resolved = resolve_recipients(session, sender, recipients)
    # A draft has never been sent, so it has no deliveries to look up.
    earlier = [] if first_send else list(session.exec(
        select(Delivery).where(Delivery.document_id == document_id)).all())
    existing = {d.recipient_id for d in earlier}
    rows = [{"document_id": document_id, "recipient_id": recipient.agency.id or 0,
             "addressed_to_code": recipient.addressed_to_code}
            for recipient in resolved if recipient.agency.id not in existing]
    inline = bool(rows) and len(rows) <= get_settings().inline_delivery_max
    now = utcnow()
    if inline:
        # Written as arrived at once: one INSERT, no UPDATE of the rows just inserted.
        rows = [{**row, **_arrived_values(now)} for row in rows]
    events = [{"delivery_id": position, "action": "queued", "transport_status": "queued",
               "actor_user_id": principal.user_id, "actor_agency_id": principal.agency_id,
               "at": now} for position in range(len(rows))]
    if inline:
        events += _arrival_rows(list(range(len(rows))), now)
    return _SendPlan(resolved, earlier, rows, events, inline)


def _arrival(session: Session, document_id: int, plan: _SendPlan, created: list[Delivery],
             written: list[DeliveryEvent]) -> list[DeliveryEvent]:
    """An inline send's arrival (its events for the listeners); a large one's task."""
    if plan.inline:
        return _arrived(session, document_id, created, written[len(plan.rows):])
    if created:
        enqueue(session, "exchange.deliver", document_id)
    return []


def _finish_send(session: Session, principal: Principal, document: Document, plan: _SendPlan,
                 created: list[Delivery], arrived: list[DeliveryEvent]) -> list[Delivery]:
    # After numbering: what the listeners send on (webhook payloads) carries the number.
    _run_listeners(session, arrived, {d.id or 0: d for d in created})
    # stats (issue 6): count the sent document in the exchange-rate aggregates.
    from eoffice.stats.service import enqueue_document

    enqueue_document(session, document.id or 0)
    record(session, actor=principal.name, action="document.sent", object_type="document",
           object_id=document.id, agency_id=document.sender_id,
           data={"recipients": [r.agency.code for r in plan.resolved],
                 "deliveries_queued": [d.id for d in created]})
    return sorted([*plan.earlier, *created], key=lambda d: d.id or 0)


def deliver(session: Session, document_id: int) -> int:
    """Place queued deliveries into the receivers' inboxes (status 01); safe to repeat.

    A fan-out to a hundred receivers is one transaction with bulk writes, one audit entry,
    one batched status notification and one arrival check of the (shared) file: per-receiver
    round trips and tasks are what made large sends slow.
    """
    queued = session.exec(select(Delivery).where(Delivery.document_id == document_id)
                          .where(col(Delivery.transport_status).in_(["queued", "retried"]))
                          .order_by(col(Delivery.id)).with_for_update()).all()
    if not queued:
        return 0
    arrived, now = list(queued), utcnow()
    _mark_arrived(arrived, now)
    events = insert_rows(session, DeliveryEvent,
                         _arrival_rows([d.id or 0 for d in arrived], now))
    _run_listeners(session, _arrived(session, document_id, arrived, events),
                   {d.id or 0: d for d in arrived})
    return len(arrived)


def _mark_arrived(deliveries: list[Delivery], now: datetime) -> None:
    for delivery in deliveries:
        delivery.transport_status = "delivered"
        delivery.status_code = "01"
        delivery.delivered_at = now
        delivery.updated_at = now
        delivery.transport_attempts += 1


def _arrived_values(now: datetime) -> dict[str, Any]:
    """_mark_arrived for a delivery not written yet (its first attempt)."""
    return {"transport_status": "delivered", "status_code": "01", "delivered_at": now,
            "updated_at": now, "transport_attempts": 1}


def _arrival_rows(delivery_ids: list[int], now: datetime) -> list[dict[str, Any]]:
    """The arrival events (01) of deliveries marked arrived at `now`. A small fan-out's are
    written as notified: its listeners run in this transaction (_arrived)."""
    notified = now if len(delivery_ids) <= INLINE_NOTIFY_MAX else None
    return [{"delivery_id": delivery_id, "code": "01", "action": "arrived",
             "transport_status": "delivered", "at": now, "notified_at": notified}
            for delivery_id in delivery_ids]


def _notified_inline(deliveries: list[Delivery]) -> bool:
    # A small fan-out's arrival packages (01) go to their listeners in this transaction: a
    # task of its own cost more than the work it did. A large one keeps them in a task of
    # their own, so its receivers see the document before the listeners have run.
    return len(deliveries) <= INLINE_NOTIFY_MAX


def _arrived(session: Session, document_id: int, deliveries: list[Delivery],
             events: list[DeliveryEvent]) -> list[DeliveryEvent]:
    """What follows the arrival of `deliveries` (their `events` written): one audit entry,
    the arrival check, the status notification. Returns the events the caller hands to the
    status listeners in this transaction (none when a task will)."""
    record(session, actor="system", action="delivery.arrived", object_type="document",
           object_id=document_id, agency_id=None,
           data={"code": "01", "transport": "delivered",
                 "deliveries": {str(d.id): d.recipient_id for d in deliveries}})
    enqueue(session, "verification.verify_arrivals", document_id, queue="crypto")
    if _notified_inline(deliveries):
        return events
    enqueue(session, "exchange.notify_status", [e.id for e in events])
    return []


def requeue_stuck(session: Session, older_than_seconds: int) -> list[int]:
    """Documents with deliveries still queued long after sending get their fan-out again.

    The outbox guarantees the task reached the broker; this covers a worker node that died
    holding it, without waiting for the broker's visibility timeout. `deliver` is idempotent.
    """
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    ids = sorted({int(i) for i in session.exec(
        select(Delivery.document_id).where(col(Delivery.transport_status) == "queued")
        .where(col(Delivery.created_at) < cutoff)).all()})
    for document_id in ids:
        enqueue(session, "exchange.deliver", document_id)
    return ids


# --- receiver actions ----------------------------------------------------------------------

def _delivery_for_receiver(session: Session, principal: Principal, delivery_id: int
                           ) -> Delivery:
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or principal.agency_id is None:
        raise NotFound(f"delivery {delivery_id} not found", detail_vi="Không tìm thấy")
    if delivery.recipient_id != principal.agency_id:
        document = session.get(Document, delivery.document_id)
        if document is not None and document.sender_id == principal.agency_id:
            return delivery  # the sender; the caller decides what it may do
        raise NotFound(f"delivery {delivery_id} not found", detail_vi="Không tìm thấy")
    if delivery.recalled:
        raise NotFound(f"delivery {delivery_id} was recalled", detail_vi="Văn bản đã thu hồi")
    return delivery


def change_status(session: Session, principal: Principal, delivery_id: int, code: str,
                  reason: str | None = None, assignee: str | None = None) -> Delivery:
    """Apply an edXML business status from the receiver (or 13 from the sender)."""
    delivery = _delivery_for_receiver(session, principal, delivery_id)
    document = session.get(Document, delivery.document_id)
    assert document is not None
    if code not in STATUS_NAMES:
        raise ValidationFailed(f"unknown status code '{code}'", field="code",
                               detail_vi=f"Mã trạng thái '{code}' không hợp lệ")
    is_sender = delivery.recipient_id != principal.agency_id
    if is_sender:
        if code != "13":
            raise Forbidden("the sender can only ask to recall (13)", field="code",
                            detail_vi="Cơ quan gửi chỉ có thể đề nghị thu hồi (13)")
        request_recall(session, principal, delivery, reason)
        return delivery
    principal.require_role(*RECEIVER_ROLES)
    if delivery.transport_status != "delivered":
        raise Conflict("the document has not arrived yet", detail_vi="Văn bản chưa đến")
    if code in ("15", "16"):
        answer_request(session, principal, delivery, agree=code == "15", reason=reason)
        return delivery
    if code == "13":
        raise Forbidden("only the sender can ask to recall", field="code")
    if delivery.pending_request:
        raise Conflict(f"answer the {delivery.pending_request} request first (15 or 16)",
                       field="code",
                       detail_vi="Cần trả lời đề nghị thu hồi/cập nhật trước (15 hoặc 16)")
    if code not in TRANSITIONS.get(delivery.status_code, set()):
        raise Conflict(f"cannot change status from {delivery.status_code} to {code}",
                       field="code",
                       detail_vi=f"Không thể chuyển trạng thái từ {delivery.status_code} "
                                 f"sang {code}")
    now = utcnow()
    if code == "02":
        if not reason or not reason.strip():
            raise ValidationFailed("a reason is required to reject (02)", field="reason",
                                   detail_vi="Cần nêu lý do từ chối")
        delivery.reason = reason.strip()
    if code == "03":
        principal.require_role("clerk", "leader")
        if delivery.verification_indication == "TOTAL_FAILED":
            raise Conflict("the signature check failed: reject with 02 instead of accepting",
                           field="code",
                           detail_vi="Chữ ký không hợp lệ: hãy trả lại (02) thay vì tiếp nhận")
        delivery.arrival_number = next_number(session, delivery.recipient_id, "incoming",
                                              local_now().year)
        delivery.arrival_date = local_today()
    if code in ("02", "03"):
        delivery.acknowledged_at = now
    if code == "04":
        delivery.assigned_to_id = _assignee(session, principal, assignee)
    if code == "06":
        delivery.completed_at = now
    delivery.status_code = code
    delivery.updated_at = now
    session.add(delivery)
    _event(session, delivery, "status", principal, code=code, reason=reason)
    return delivery


def _assignee(session: Session, principal: Principal, username: str | None) -> int:
    if not username:
        raise ValidationFailed("assigning (04) needs an assignee username", field="assignee",
                               detail_vi="Cần chọn người xử lý")
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None or user.agency_id != principal.agency_id or not user.is_active:
        raise ValidationFailed(f"'{username}' is not a member of your agency", field="assignee",
                               detail_vi="Người xử lý không thuộc cơ quan của bạn")
    assert user.id is not None
    return user.id


def mark_read(session: Session, principal: Principal, delivery: Delivery) -> None:
    if delivery.recipient_id == principal.agency_id and delivery.read_at is None:
        delivery.read_at = utcnow()
        session.add(delivery)


# --- recall, update, replace ---------------------------------------------------------------

def request_recall(session: Session, principal: Principal, delivery: Delivery,
                   reason: str | None) -> None:
    principal.require_role("clerk", "leader")
    if not reason or not reason.strip():
        raise ValidationFailed("a reason is required to recall", field="reason",
                               detail_vi="Cần nêu lý do thu hồi")
    if delivery.status_code == "06":
        raise Conflict(f"delivery {delivery.id} is completed and cannot be recalled",
                       field="code", detail_vi="Văn bản đã xử lý xong, không thể thu hồi")
    if delivery.recalled or delivery.status_code in ("02", "15"):
        raise Conflict(f"delivery {delivery.id} is already closed", field="code",
                       detail_vi="Văn bản đã được đóng")
    if delivery.pending_request:
        raise Conflict(f"delivery {delivery.id} already has a pending {delivery.pending_request}",
                       detail_vi="Đang chờ trả lời một đề nghị khác")
    if delivery.transport_status != "delivered":
        # Not yet in the receiver's inbox: withdraw it outright.
        delivery.recalled = True
        delivery.transport_status = "recalled"
        session.add(delivery)
        _event(session, delivery, "withdrawn", principal, reason=reason, transport="recalled")
        return
    _open_request(session, principal, delivery, "recall", {"reason": reason.strip()})


def _open_request(session: Session, principal: Principal, delivery: Delivery, kind: str,
                  data: dict[str, Any]) -> None:
    delivery.status_before_request = delivery.status_code
    delivery.pending_request = kind
    delivery.pending_request_data = data
    delivery.status_code = "13" if kind == "recall" else delivery.status_code
    delivery.updated_at = utcnow()
    session.add(delivery)
    _event(session, delivery, f"{kind}_requested", principal, code="13" if kind == "recall"
           else None, reason=data.get("reason"))


def recall_document(session: Session, principal: Principal, document_id: int, reason: str
                    ) -> list[Delivery]:
    """Ask every receiver that has not finished to give the document back (edXML 13)."""
    document = get_own(session, principal, document_id)
    if document.status not in ("sent", "recalled"):
        raise Conflict("only a sent document can be recalled",
                       detail_vi="Chỉ thu hồi được văn bản đã gửi")
    deliveries = session.exec(select(Delivery).where(Delivery.document_id == document.id)).all()
    open_ones = [d for d in deliveries if not d.recalled and d.status_code not in FINISHED
                 and not d.pending_request]
    if not open_ones:
        raise Conflict("no receiver can still be asked to recall: every delivery is completed, "
                       "rejected or already recalled",
                       detail_vi="Không còn nơi nhận nào có thể thu hồi")
    for delivery in open_ones:
        request_recall(session, principal, delivery, reason)
    document.status = "recalled"
    document.recalled_at = utcnow()
    session.add(document)
    # stats (issue 6): move the document and its deliveries to the recalled counters.
    from eoffice.stats.service import enqueue_document

    enqueue_document(session, document.id or 0)
    record(session, actor=principal.name, action="document.recall_requested",
           object_type="document", object_id=document.id, agency_id=document.sender_id,
           data={"reason": reason})
    return list(deliveries)


def update_document(session: Session, principal: Principal, document_id: int,
                    changes: dict[str, Any], reason: str) -> Document:
    """Correct metadata of a sent document; each receiver answers 15 (agree) or 16."""
    principal.require_role("clerk", "leader")
    document = get_own(session, principal, document_id)
    if document.status != "sent":
        raise Conflict("only a sent document can be updated",
                       detail_vi="Chỉ cập nhật được văn bản đã gửi")
    validated = apply_metadata_changes(document, changes)
    before: dict[str, Any] = {}
    for key, value in validated.items():
        if key == "signer_info":
            before[key] = {"competence": document.signer_competence,
                           "position": document.signer_position,
                           "full_name": document.signer_full_name}
            document.signer_competence = value["competence"]
            document.signer_position = value["position"]
            document.signer_full_name = value["full_name"]
        else:
            before[key] = getattr(document, key)
            setattr(document, key, date.fromisoformat(value) if key == "due_date" and value
                    else value)
    document.updated_at = utcnow()
    session.add(document)
    for delivery in session.exec(select(Delivery).where(Delivery.document_id == document.id)):
        if delivery.recalled or delivery.status_code in FINISHED or delivery.pending_request:
            continue
        if delivery.transport_status == "delivered":
            _open_request(session, principal, delivery, "update",
                          {"reason": reason, "changes": validated,
                           "before": {k: str(v) if isinstance(v, date) else v
                                      for k, v in before.items()}})
    record(session, actor=principal.name, action="document.updated", object_type="document",
           object_id=document.id, agency_id=document.sender_id,
           data={"changes": validated, "reason": reason})
    return document


def replace_document(session: Session, principal: Principal, old: Document, new: Document,
                     reason: str) -> list[Delivery]:
    """Send `new` to every receiver of `old`; the old copies get a replace request."""
    if old.status != "sent":
        raise Conflict("only a sent document can be replaced",
                       detail_vi="Chỉ thay thế được văn bản đã gửi")
    new.replaces_id = old.id
    session.add(new)
    old_deliveries = [d for d in session.exec(select(Delivery)
                                              .where(Delivery.document_id == old.id))
                      if not d.recalled and d.status_code != "02"]
    if not old_deliveries:
        raise Conflict("the old document has no receiver left",
                       detail_vi="Văn bản cũ không còn nơi nhận")
    codes = [session.get(Agency, d.recipient_id).code for d in old_deliveries]  # type: ignore[union-attr]
    sent = send_document(session, principal, new, codes)
    for delivery in old_deliveries:
        if delivery.transport_status == "delivered" and not delivery.pending_request:
            _open_request(session, principal, delivery, "replace",
                          {"reason": reason, "replacement_id": new.id})
    return sent


def answer_request(session: Session, principal: Principal, delivery: Delivery, *, agree: bool,
                   reason: str | None) -> None:
    """Receiver's 15 (agree) or 16 (refuse) to a recall, update or replace."""
    if not delivery.pending_request:
        raise Conflict("there is no recall or update request to answer", field="code",
                       detail_vi="Không có đề nghị thu hồi/cập nhật nào cần trả lời")
    kind = delivery.pending_request
    code = "15" if agree else "16"
    if agree and kind in ("recall", "replace"):
        # The receiver deletes its copy: it leaves the inbox and the sender sees 15.
        delivery.recalled = True
        delivery.status_code = "15"
    else:
        delivery.status_code = delivery.status_before_request
    delivery.pending_request = None
    delivery.reason = reason or delivery.reason
    delivery.updated_at = utcnow()
    session.add(delivery)
    _event(session, delivery, f"{kind}_{'agreed' if agree else 'refused'}", principal,
           code=code, reason=reason)


def forward_delivery(session: Session, principal: Principal, delivery_id: int,
                     recipients: list[str], note: str | None) -> Document:
    """Send a received document on: a new document of ours pointing at the original."""
    principal.require_role("clerk", "leader")
    delivery = _delivery_for_receiver(session, principal, delivery_id)
    if delivery.recipient_id != principal.agency_id:
        raise Forbidden("only a receiver can forward", detail_vi="Chỉ nơi nhận được chuyển tiếp")
    if delivery.status_code not in ("03", "04", "05", "06"):
        raise Conflict("accept (03) the document before forwarding it",
                       detail_vi="Cần tiếp nhận văn bản trước khi chuyển tiếp")
    original = session.get(Document, delivery.document_id)
    assert original is not None
    copy = Document(sender_id=principal.agency_id or 0, created_by_id=principal.user_id,
                    type_name=original.type_name, subject=original.subject,
                    priority=original.priority, signer_competence=original.signer_competence,
                    signer_position=original.signer_position,
                    signer_full_name=original.signer_full_name, due_date=original.due_date,
                    to_places=list(original.to_places or []), page_amount=original.page_amount,
                    place=original.place, forwarded_from_id=original.id,
                    file_sha256=original.file_sha256, file_name=original.file_name,
                    status="issued", code_number=original.code_number,
                    code_notation=original.code_notation, issued_year=original.issued_year,
                    promulgation_date=original.promulgation_date,
                    register_name=f"forwarded:{original.id}",
                    issued_at=original.issued_at, response_for_ref=note)
    session.add(copy)
    session.flush()
    for attachment in session.exec(select(Attachment)
                                   .where(Attachment.document_id == original.id)):
        session.add(Attachment(document_id=copy.id or 0, blob_sha256=attachment.blob_sha256,
                               file_name=attachment.file_name,
                               content_type=attachment.content_type, size=attachment.size))
    send_document(session, principal, copy, recipients)
    return copy


# --- reading -------------------------------------------------------------------------------

def is_overdue(document: Document, delivery: Delivery, today: date | None = None) -> bool:
    today = today or local_today()
    return bool(document.due_date and document.due_date < today and not delivery.recalled
                and delivery.status_code not in FINISHED)


def not_acknowledged_same_day(delivery: Delivery, today: date | None = None) -> bool:
    """Decree 30: the receiver confirms (03 or 02) on the day the document arrives."""
    if delivery.delivered_at is None:
        return False
    arrived = local_date(delivery.delivered_at)
    if delivery.acknowledged_at is None:
        return (today or local_today()) > arrived
    return local_date(delivery.acknowledged_at) > arrived


def _verification_fields(delivery: Delivery) -> dict[str, Any]:
    """Signature-check summary and a pre-filled 02 reason (verification domain decides)."""
    from eoffice.verification.service import delivery_verification, suggested_rejection_reason

    return {"verification": delivery_verification(delivery),
            "suggested_rejection_reason": suggested_rejection_reason(
                delivery.verification_indication)}


def delivery_out(delivery: Delivery, document: Document, agency: AgencyRow) -> dict[str, Any]:
    return {
        "id": delivery.id, "recipient": agency.code, "recipient_name": agency.name,
        "addressed_to": delivery.addressed_to_code, "status_code": delivery.status_code,
        "transport_status": delivery.transport_status,
        "pending_request": delivery.pending_request, "recalled": delivery.recalled,
        "reason": delivery.reason, "arrival_number": delivery.arrival_number,
        "delivered_at": delivery.delivered_at, "acknowledged_at": delivery.acknowledged_at,
        "completed_at": delivery.completed_at,
        "verification_indication": delivery.verification_indication,
        **_verification_fields(delivery),
        "overdue": is_overdue(document, delivery),
        "not_acknowledged_same_day": not_acknowledged_same_day(delivery),
    }


def inbox(session: Session, principal: Principal, *, status: str | None = None,
          overdue: bool | None = None, q: str | None = None, limit: int = 50,
          offset: int = 0, urgent: bool = False, unread: bool = False,
          arrived_from: date | None = None, arrived_to: date | None = None,
          sender: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """Documents that arrived at the caller's agency, newest first.

    `arrived_from`/`arrived_to` are Vietnam calendar dates (inclusive).
    """
    if principal.agency_id is None or principal.role not in RECEIVER_ROLES:
        raise Forbidden("only agency staff have an inbox", detail_vi="Bạn không có hộp thư đến")
    query = (select(Delivery, Document, Agency)
             .join(Document, col(Document.id) == Delivery.document_id)
             .join(Agency, col(Agency.id) == Document.sender_id)
             .where(Delivery.recipient_id == principal.agency_id)
             .where(Delivery.transport_status == "delivered")
             .where(col(Delivery.recalled).is_(False)))
    if status:
        query = query.where(Delivery.status_code == status)
    if q:
        like = f"%{q.strip()}%"
        query = query.where(or_(col(Document.subject).ilike(like),
                                col(Document.code_notation).ilike(like),
                                col(Document.code_number) == q.strip(),
                                col(Agency.name).ilike(like), col(Agency.code) == q.strip()))
    if urgent:
        query = query.where(col(Document.priority) >= 1)
    if unread:
        query = query.where(col(Delivery.read_at).is_(None))
    if sender:
        query = query.where(col(Agency.code) == sender.strip().upper())
    if arrived_from:
        query = query.where(col(Delivery.delivered_at) >= day_start_utc(arrived_from))
    if arrived_to:
        query = query.where(col(Delivery.delivered_at) < day_end_utc(arrived_to))
    today = local_today()
    if overdue is True:
        query = query.where(col(Document.due_date) < today).where(
            col(Delivery.status_code).not_in(list(FINISHED)))
    elif overdue is False:
        query = query.where(or_(col(Document.due_date).is_(None), col(Document.due_date) >= today,
                                col(Delivery.status_code).in_(list(FINISHED))))
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(col(Delivery.delivered_at).desc(), col(Delivery.id).desc())
                        .offset(offset).limit(limit)).all()
    items = []
    for delivery, document, sender_agency in rows:
        items.append({
            "delivery_id": delivery.id, "document_id": document.id, "sender": sender_agency.code,
            "sender_name": sender_agency.name, "subject": document.subject,
            "type_name": document.type_name, "code_number": document.code_number,
            "code_notation": document.code_notation,
            "number_notation": number_notation(document), "priority": document.priority,
            "due_date": document.due_date, "status_code": delivery.status_code,
            "pending_request": delivery.pending_request,
            "transport_status": delivery.transport_status,
            "arrival_number": delivery.arrival_number, "delivered_at": delivery.delivered_at,
            "unread": delivery.read_at is None, "overdue": is_overdue(document, delivery, today),
            "not_acknowledged_same_day": not_acknowledged_same_day(delivery, today),
            "verification_indication": delivery.verification_indication,
            **_verification_fields(delivery),
        })
    return items, int(total)


def outbox(session: Session, principal: Principal, *, status: str | None = None,
           overdue: bool | None = None, q: str | None = None, limit: int = 50,
           offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Documents the caller's agency sent, each with every receiver's status."""
    if principal.agency_id is None or principal.role not in RECEIVER_ROLES:
        raise Forbidden("only agency staff have an outbox", detail_vi="Bạn không có hộp thư đi")
    query = (select(Document).where(Document.sender_id == principal.agency_id)
             .where(col(Document.status).in_(["sent", "recalled"])))
    if status:
        query = query.where(col(Document.id).in_(
            select(Delivery.document_id).where(Delivery.status_code == status)))
    if q:
        like = f"%{q.strip()}%"
        query = query.where(or_(col(Document.subject).ilike(like),
                                col(Document.code_notation).ilike(like),
                                col(Document.code_number) == q.strip()))
    today = local_today()
    if overdue is not None:
        late = (select(Delivery.document_id).join(Document, col(Document.id) ==
                                                  Delivery.document_id)
                .where(col(Document.due_date) < today)
                .where(col(Delivery.status_code).not_in(list(FINISHED)))
                .where(col(Delivery.recalled).is_(False)))
        query = query.where(col(Document.id).in_(late) if overdue else
                            col(Document.id).not_in(late))
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    documents = session.exec(query.order_by(col(Document.sent_at).desc(), col(Document.id).desc())
                             .offset(offset).limit(limit)).all()
    ids = [d.id for d in documents]
    by_document: dict[int, list[dict[str, Any]]] = {i: [] for i in ids if i is not None}
    if ids:
        rows = session.exec(select(Delivery, Agency)
                            .join(Agency, col(Agency.id) == Delivery.recipient_id)
                            .where(col(Delivery.document_id).in_(ids))
                            .order_by(col(Delivery.id))).all()
        docs = {d.id: d for d in documents}
        for delivery, agency in rows:
            by_document[delivery.document_id].append(
                delivery_out(delivery, docs[delivery.document_id], agency))
    items = []
    for document in documents:
        deliveries = by_document.get(document.id or 0, [])
        items.append({
            "document_id": document.id, "subject": document.subject,
            "type_name": document.type_name, "code_number": document.code_number,
            "code_notation": document.code_notation,
            "number_notation": number_notation(document), "status": document.status,
            "priority": document.priority, "due_date": document.due_date,
            "sent_at": document.sent_at, "deliveries": deliveries,
            "overdue": any(d["overdue"] for d in deliveries),
        })
    return items, int(total)


def history(session: Session, principal: Principal, document_id: int) -> list[dict[str, Any]]:
    """Every event of every delivery the caller may see, oldest first."""
    document = get_visible(session, principal, document_id)
    query = (select(DeliveryEvent, Delivery, Agency)
             .join(Delivery, col(Delivery.id) == DeliveryEvent.delivery_id)
             .join(Agency, col(Agency.id) == Delivery.recipient_id)
             .where(Delivery.document_id == document.id))
    if principal.role != "auditor" and principal.agency_id != document.sender_id:
        query = query.where(Delivery.recipient_id == principal.agency_id)
    rows = session.exec(query.order_by(col(DeliveryEvent.at), col(DeliveryEvent.id))).all()
    users = {u.id: u.username for u in session.exec(select(User).where(col(User.id).in_(
        {e.actor_user_id for e, _, _ in rows if e.actor_user_id})))} if rows else {}
    return [{"delivery_id": d.id, "recipient": a.code, "action": e.action, "code": e.code,
             "transport_status": e.transport_status, "reason": e.reason, "at": e.at,
             "actor": users.get(e.actor_user_id) if e.actor_user_id else "system"}
            for e, d, a in rows]


# Other domains (webhooks, statistics) subscribe here to status packages: a listener is
# called with a transaction's events together and their deliveries (by id), so it can do
# its reads once for all of them.
StatusListener = Callable[[Session, list[DeliveryEvent], dict[int, Delivery]], Any]
STATUS_LISTENERS: list[StatusListener] = []


def notify_status(session: Session, event_ids: int | list[int]) -> int:
    """Deliver status packages to the other side; repeats are no-ops. Returns how many."""
    ids = [event_ids] if isinstance(event_ids, int) else list(event_ids)
    events = session.exec(select(DeliveryEvent).where(col(DeliveryEvent.id).in_(ids))
                          .where(col(DeliveryEvent.notified_at).is_(None))
                          .order_by(col(DeliveryEvent.id))).all()
    return _notify_events(session, list(events))


def _notify_events(session: Session, events: list[DeliveryEvent]) -> int:
    now = utcnow()
    for event in events:
        event.notified_at = now
        session.add(event)
    _run_listeners(session, events, deliveries_of(session, {e.delivery_id for e in events}))
    return len(events)


def deliveries_of(session: Session, ids: set[int]) -> dict[int, Delivery]:
    """These deliveries by id: from the session where it holds them, the rest in one query."""
    found: dict[int, Delivery] = {}
    for delivery_id in ids:
        held = session.identity_map.get(identity_key(Delivery, delivery_id))
        if held is not None:
            found[delivery_id] = held
    missing = sorted(ids - found.keys())
    if missing:
        found.update({d.id or 0: d for d in session.exec(
            select(Delivery).where(col(Delivery.id).in_(missing))).all()})
    return found


def _run_listeners(session: Session, events: list[DeliveryEvent],
                   deliveries: dict[int, Delivery]) -> None:
    if events:
        for listener in STATUS_LISTENERS:
            listener(session, events, deliveries)
