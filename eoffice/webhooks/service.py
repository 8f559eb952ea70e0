"""Webhook endpoints of agency systems and the signed, retried pushes made to them.

Every push is a row (`webhook_deliveries`) written in the same transaction as the status
event that causes it, so nothing is lost; its id travels as `X-Eoffice-Delivery` so receivers
can drop repeats (a push may arrive twice: at-least-once, as in DHX and eDelivery). Failed
attempts back off exponentially; after `webhook_max_attempts` the row is `failed` and waits
for a manual re-send.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from sqlalchemy import func, or_, update
from sqlmodel import Session, col, select

from eoffice.agencies.service import AgencyRow, AgencyTree
from eoffice.audit.service import record
from eoffice.db import VersionedCache
from eoffice.errors import Conflict, Forbidden, NotFound, ValidationFailed
from eoffice.models import (
    Delivery,
    DeliveryEvent,
    Document,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookVersion,
    new_uuid,
    utcnow,
)
from eoffice.outbox import enqueue
from eoffice.rows import insert_ignore
from eoffice.settings import get_settings
from eoffice.users.service import Principal

EVENT_TYPES = ("document.arrived", "delivery.status", "document.recall_requested")
MANAGER_ROLES = ("clerk", "admin")
SIGNATURE_HEADER = "X-Eoffice-Signature"
TIMESTAMP_HEADER = "X-Eoffice-Timestamp"
DELIVERY_HEADER = "X-Eoffice-Delivery"
EVENT_HEADER = "X-Eoffice-Event"
MAX_ENDPOINTS_PER_AGENCY = 20


# --- signatures ----------------------------------------------------------------------------

def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value: HMAC-SHA256 over `<timestamp>.<body>`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(secret: str, timestamp: str, body: bytes, header: str,
                     tolerance_seconds: float = 300.0, now: float | None = None) -> bool:
    """What a receiver does: constant-time compare and a freshness window against replays."""
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance_seconds and hmac.compare_digest(sign(secret, timestamp, body), header)


# --- endpoints -----------------------------------------------------------------------------

def _manager(principal: Principal) -> int:
    principal.require_role(*MANAGER_ROLES)
    if principal.agency_id is None:
        raise Forbidden("webhooks belong to an agency; you have none",
                        detail_vi="Webhook thuộc về một cơ quan; tài khoản không thuộc cơ quan nào")
    return principal.agency_id


def _check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed("url must be an absolute http(s) URL", field="url",
                               detail_vi="Địa chỉ phải là URL http(s) đầy đủ")
    if parts.username or parts.password:
        raise ValidationFailed("url must not carry credentials", field="url",
                               detail_vi="Địa chỉ không được chứa thông tin đăng nhập")
    if not get_settings().webhook_allow_private:
        # Keeps a hosted installation from being used to probe its own network.
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port or 443)
        except OSError as exc:
            raise ValidationFailed("url host does not resolve", field="url",
                                   detail_vi="Không phân giải được tên máy chủ") from exc
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if address.is_private or address.is_loopback or address.is_link_local:
                raise ValidationFailed("url points to a private address", field="url",
                                       detail_vi="Địa chỉ trỏ vào mạng nội bộ")
    return url.strip()


def create_endpoint(session: Session, principal: Principal, *, url: str,
                    events: list[str] | None, description: str = ""
                    ) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint for the caller's agency; returns it with its secret (shown once)."""
    agency_id = _manager(principal)
    chosen = list(dict.fromkeys(events or EVENT_TYPES))
    unknown = [e for e in chosen if e not in EVENT_TYPES]
    if unknown:
        raise ValidationFailed(f"unknown event type(s): {', '.join(unknown)}", field="events",
                               detail_vi="Loại sự kiện không hợp lệ")
    count = session.exec(select(func.count()).select_from(WebhookEndpoint)
                         .where(WebhookEndpoint.agency_id == agency_id)
                         .where(col(WebhookEndpoint.deleted_at).is_(None))).one()
    if count >= MAX_ENDPOINTS_PER_AGENCY:
        raise Conflict(f"at most {MAX_ENDPOINTS_PER_AGENCY} endpoints per agency",
                       detail_vi="Đã đạt số webhook tối đa của cơ quan")
    secret = "whsec_" + secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint(agency_id=agency_id, url=_check_url(url), secret=secret,
                               events=chosen, description=description.strip(),
                               created_by_id=principal.user_id)
    session.add(endpoint)
    session.flush()
    record(session, actor=principal.name, action="webhook.created", object_type="webhook",
           object_id=endpoint.id, agency_id=agency_id,
           data={"url": endpoint.url, "events": chosen})
    return endpoint, secret


def list_endpoints(session: Session, principal: Principal) -> list[WebhookEndpoint]:
    """The caller's agency's live endpoints."""
    agency_id = _manager(principal)
    return list(session.exec(select(WebhookEndpoint)
                             .where(WebhookEndpoint.agency_id == agency_id)
                             .where(col(WebhookEndpoint.deleted_at).is_(None))
                             .order_by(col(WebhookEndpoint.id))).all())


def get_endpoint(session: Session, principal: Principal, endpoint_id: int) -> WebhookEndpoint:
    """One endpoint of the caller's agency, 404 for anybody else's."""
    agency_id = _manager(principal)
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.agency_id != agency_id or endpoint.deleted_at is not None:
        raise NotFound(f"webhook {endpoint_id} not found", detail_vi="Không tìm thấy webhook")
    return endpoint


def delete_endpoint(session: Session, principal: Principal, endpoint_id: int) -> None:
    """Stop pushing to an endpoint; its delivery history stays readable to auditors."""
    endpoint = get_endpoint(session, principal, endpoint_id)
    endpoint.active = False
    endpoint.deleted_at = utcnow()
    session.add(endpoint)
    session.exec(update(WebhookDelivery)  # type: ignore[call-overload]
                 .where(col(WebhookDelivery.endpoint_id) == endpoint.id)
                 .where(col(WebhookDelivery.status) == "pending")
                 .values(status="failed", last_error="endpoint deleted", updated_at=utcnow()))
    record(session, actor=principal.name, action="webhook.deleted", object_type="webhook",
           object_id=endpoint.id, agency_id=endpoint.agency_id, data={"url": endpoint.url})


def list_deliveries(session: Session, principal: Principal, endpoint_id: int, *,
                    status: str | None = None, limit: int = 50, offset: int = 0
                    ) -> tuple[list[WebhookDelivery], int]:
    """Pushes to one endpoint, newest first."""
    endpoint = get_endpoint(session, principal, endpoint_id)
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    if status:
        query = query.where(WebhookDelivery.status == status)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(col(WebhookDelivery.created_at).desc(),
                                       col(WebhookDelivery.id)).offset(offset).limit(limit)).all()
    return list(rows), int(total)


def resend(session: Session, principal: Principal, endpoint_id: int,
           delivery_id: str) -> WebhookDelivery:
    """Manually push a failed (or already delivered) event again, with a fresh retry budget."""
    endpoint = get_endpoint(session, principal, endpoint_id)
    row = session.get(WebhookDelivery, delivery_id)
    if row is None or row.endpoint_id != endpoint.id:
        raise NotFound(f"webhook delivery {delivery_id} not found",
                       detail_vi="Không tìm thấy lần gửi webhook")
    if row.status == "pending":
        raise Conflict("this delivery is still being retried",
                       detail_vi="Lần gửi này vẫn đang được thử lại")
    row.status = "pending"
    row.attempts = 0
    row.next_attempt_at = None
    row.updated_at = utcnow()
    session.add(row)
    enqueue(session, "webhooks.push", row.id)
    record(session, actor=principal.name, action="webhook.resent", object_type="webhook_delivery",
           object_id=row.id, agency_id=endpoint.agency_id, data={"endpoint_id": endpoint.id})
    return row


# --- the active endpoints, cached per process ---------------------------------------------

class EndpointRow(NamedTuple):
    id: int
    agency_id: int
    events: list[str]


def _read_active(session: Session) -> dict[int, list[EndpointRow]]:
    by_agency: dict[int, list[EndpointRow]] = {}
    for row in session.execute(
            select(col(WebhookEndpoint.id), col(WebhookEndpoint.agency_id),
                   col(WebhookEndpoint.events))
            .where(col(WebhookEndpoint.active).is_(True))
            .where(col(WebhookEndpoint.deleted_at).is_(None))):
        by_agency.setdefault(row.agency_id, []).append(
            EndpointRow(row.id, row.agency_id, list(row.events or [])))
    return by_agency


# Every endpoint write moves the webhook version (see VersionedCache).
_ENDPOINTS: VersionedCache[dict[int, list[EndpointRow]]] = VersionedCache(
    "webhooks", WebhookVersion, WebhookEndpoint, _read_active)


def active_endpoints(session: Session) -> dict[int, list[EndpointRow]]:
    """Active endpoints by agency, as this transaction sees them.

    Every transaction that changes a status asks, and almost always for agencies without
    endpoints: the answer is cached per process behind a version row that every endpoint
    write moves, and the version itself is read along with the caller (note_versions).
    """
    return _ENDPOINTS.get(session)


# --- events -> pushes ----------------------------------------------------------------------

def _payload(event: DeliveryEvent, event_type: str, delivery: Delivery, document: Document,
             sender: AgencyRow, recipient: AgencyRow) -> dict[str, Any]:
    return {
        "type": event_type,
        "event_id": event.id,
        "occurred_at": event.at.isoformat(),
        "status_code": event.code,
        "action": event.action,
        "reason": event.reason,
        "document": {"id": document.id, "sender": sender.code, "subject": document.subject,
                     "code_number": document.code_number,
                     "code_notation": document.code_notation, "type_name": document.type_name,
                     "priority": document.priority},
        "delivery": {"id": delivery.id, "recipient": recipient.code,
                     "status_code": delivery.status_code,
                     "transport_status": delivery.transport_status},
    }


def on_status_events(session: Session, events: list[DeliveryEvent],
                     deliveries: dict[int, Delivery]) -> int:
    """Exchange listener: one push row per subscribed endpoint and event, via the outbox.

    The active endpoints come from the process cache (active_endpoints); with none at all,
    as in most installations, nothing else is read.
    """
    subscribed = active_endpoints(session)
    coded = [(e, deliveries[e.delivery_id]) for e in events
             if e.code is not None and e.delivery_id in deliveries]
    if not subscribed or not coded:
        return 0
    documents = {d.document_id: session.get(Document, d.document_id) for _, d in coded}
    created = 0
    now = utcnow()
    directory = AgencyTree.load(session)
    for event, delivery in coded:
        document = documents[delivery.document_id]
        assert document is not None
        targets: list[tuple[int, str]] = [(document.sender_id, "delivery.status")]
        if event.code == "01":
            targets.append((delivery.recipient_id, "document.arrived"))
        elif event.code == "13":
            targets.append((delivery.recipient_id, "document.recall_requested"))
        for agency_id, event_type in targets:
            for endpoint in subscribed.get(agency_id, ()):
                if event_type not in endpoint.events:
                    continue
                row_id = new_uuid()
                # The unique (endpoint, event) pair makes a re-run of the listener a no-op.
                if insert_ignore(session, WebhookDelivery, {
                        "id": row_id, "endpoint_id": endpoint.id, "event_type": event_type,
                        "event_key": f"{event_type}:{event.id}",
                        "payload": _payload(event, event_type, delivery, document,
                                            directory.by_id[document.sender_id],
                                            directory.by_id[delivery.recipient_id]),
                        "status": "pending", "attempts": 0, "created_at": now,
                        "updated_at": now}):
                    enqueue(session, "webhooks.push", row_id)
                    created += 1
    return created


# --- pushing -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Attempt:
    """Everything one HTTP attempt needs, read in a short transaction."""

    delivery_id: str
    url: str
    secret: str
    event_type: str
    body: bytes


@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    status_code: int | None
    error: str | None


def backoff_seconds(attempts: int) -> float:
    """Delay before the next attempt after `attempts` failures (exponential, capped)."""
    settings = get_settings()
    return float(min(settings.webhook_backoff_max_seconds,
                     settings.webhook_backoff_seconds * (2 ** max(0, attempts - 1))))


def claim_attempt(session: Session, delivery_id: str) -> Attempt | None:
    """Lease a due push (None if done, not due, or another worker holds it)."""
    settings = get_settings()
    now = utcnow()
    lease = now + timedelta(seconds=settings.webhook_timeout_seconds + 30)
    # A conditional UPDATE is the lock: of two workers given the same push, one wins.
    claimed = session.exec(update(WebhookDelivery)  # type: ignore[call-overload]
                           .where(col(WebhookDelivery.id) == delivery_id)
                           .where(col(WebhookDelivery.status) == "pending")
                           .where(or_(col(WebhookDelivery.next_attempt_at).is_(None),
                                      col(WebhookDelivery.next_attempt_at) <= now))
                           .values(next_attempt_at=lease, updated_at=now))
    if not claimed.rowcount:
        return None
    row = session.get(WebhookDelivery, delivery_id)
    assert row is not None
    endpoint = session.get(WebhookEndpoint, row.endpoint_id)
    if endpoint is None or not endpoint.active or endpoint.deleted_at is not None:
        row.status, row.last_error = "failed", "endpoint deleted"
        session.add(row)
        return None
    body = json.dumps({"delivery_id": row.id, **(row.payload or {})}, ensure_ascii=False,
                      separators=(",", ":"), sort_keys=True).encode()
    return Attempt(row.id, endpoint.url, endpoint.secret, row.event_type, body)


def post(attempt: Attempt) -> AttemptResult:
    """One signed HTTP POST; any 2xx is success. No database work happens here."""
    import httpx

    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json; charset=utf-8",
               "User-Agent": "eoffice-webhooks/1",
               DELIVERY_HEADER: attempt.delivery_id, EVENT_HEADER: attempt.event_type,
               TIMESTAMP_HEADER: timestamp,
               SIGNATURE_HEADER: sign(attempt.secret, timestamp, attempt.body)}
    try:
        with httpx.Client(timeout=get_settings().webhook_timeout_seconds,
                          follow_redirects=False) as client:
            response = client.post(attempt.url, content=attempt.body, headers=headers)
    except httpx.HTTPError as exc:
        return AttemptResult(False, None, f"{exc.__class__.__name__}: {exc}"[:500])
    if 200 <= response.status_code < 300:
        return AttemptResult(True, response.status_code, None)
    return AttemptResult(False, response.status_code, f"HTTP {response.status_code}")


def record_attempt(session: Session, delivery_id: str, result: AttemptResult) -> str:
    """Store the outcome; schedule the next try or give up. Returns the new status."""
    row = session.get(WebhookDelivery, delivery_id)
    if row is None or row.status != "pending":
        return row.status if row else "missing"
    now = utcnow()
    row.attempts += 1
    row.last_status_code = result.status_code
    row.updated_at = now
    if result.ok:
        row.status, row.delivered_at, row.last_error = "succeeded", now, None
        row.next_attempt_at = None
    elif row.attempts >= get_settings().webhook_max_attempts:
        row.status, row.last_error, row.next_attempt_at = "failed", result.error, None
        endpoint = session.get(WebhookEndpoint, row.endpoint_id)
        record(session, actor="system", action="webhook.failed",
               object_type="webhook_delivery", object_id=row.id,
               agency_id=endpoint.agency_id if endpoint else None,
               data={"attempts": row.attempts, "error": result.error})
    else:
        row.last_error = result.error
        row.next_attempt_at = now + timedelta(seconds=backoff_seconds(row.attempts))
    session.add(row)
    return row.status


def enqueue_due(session: Session, limit: int = 500) -> int:
    """Beat sweep: enqueue every pending push whose next attempt is due."""
    now = utcnow()
    ids = session.exec(select(WebhookDelivery.id)
                       .where(WebhookDelivery.status == "pending")
                       .where(col(WebhookDelivery.next_attempt_at).is_not(None))
                       .where(col(WebhookDelivery.next_attempt_at) <= now)
                       .order_by(col(WebhookDelivery.next_attempt_at)).limit(limit)).all()
    for delivery_id in ids:
        enqueue(session, "webhooks.push", delivery_id)
    return len(ids)
