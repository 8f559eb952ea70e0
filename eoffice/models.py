"""Every table of the service, in one place.

Times are stored as UTC and read back timezone-aware; business dates (due dates, arrival
dates, issuance dates) are Vietnam calendar dates.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

# The register an issued document is numbered in unless it was registered otherwise.
OUTGOING_REGISTER = "outgoing"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_uuid() -> str:
    return uuid.uuid4().hex


# The tables' serial keys are INTEGER (int4 on PostgreSQL): no row has a larger key.
ROW_ID_MAX = 2**31 - 1


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (SQLite keeps no offset) and always returns aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def ts_column(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def created_column() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


def json_column(default: Any = None) -> Any:
    factory = (lambda: list(default)) if isinstance(default, list) else (
        (lambda: dict(default)) if isinstance(default, dict) else (lambda: default))
    return Field(default_factory=factory, sa_column=Column(JSON, nullable=True))


# --- agencies and people -------------------------------------------------------------------

class Agency(SQLModel, table=True):
    """A state body; merged bodies keep their row and point to the successor."""

    __tablename__ = "agencies"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(sa_column=Column(String(35), unique=True, nullable=False, index=True))
    name: str = Field(max_length=200)
    level: str = Field(max_length=16, index=True)  # central|province|department|district|commune
    abbreviation: str = Field(default="UBND", max_length=20)
    parent_id: int | None = Field(default=None, foreign_key="agencies.id", index=True)
    successor_id: int | None = Field(default=None, foreign_key="agencies.id")
    merged_at: date | None = None
    active: bool = True
    email: str | None = Field(default=None, max_length=200)
    default_signature_level: str = Field(default="B-T", max_length=8)
    created_at: datetime = created_column()


class DirectoryVersion(SQLModel, table=True):
    """One row, given a new random value by every transaction that writes an agency:
    processes cache the directory and read it again only when this moved
    (AgencyTree.load)."""

    __tablename__ = "directory_version"

    id: int = Field(default=1, primary_key=True)
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


class WebhookVersion(SQLModel, table=True):
    """One row, given a new random value by every transaction that writes a webhook
    endpoint: processes cache the endpoints and read them again only when this moved
    (eoffice.webhooks.service)."""

    __tablename__ = "webhook_version"

    id: int = Field(default=1, primary_key=True)
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(sa_column=Column(String(100), unique=True, nullable=False, index=True))
    password_hash: str
    full_name: str = Field(max_length=200)
    position: str = Field(default="", max_length=200)
    role: str = Field(max_length=16)  # clerk|leader|officer|auditor|admin
    agency_id: int | None = Field(default=None, foreign_key="agencies.id", index=True)
    # An auditor reads across the subtree rooted here (defaults to their own agency).
    scope_agency_id: int | None = Field(default=None, foreign_key="agencies.id")
    is_active: bool = True
    token_version: int = 0
    created_at: datetime = created_column()


class ApiKey(SQLModel, table=True):
    """A credential for an agency's own system; only a hash of the key is kept."""

    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    prefix: str = Field(sa_column=Column(String(16), unique=True, nullable=False))
    key_hash: str = Field(max_length=128)
    name: str = Field(max_length=200)
    agency_id: int = Field(foreign_key="agencies.id", index=True)
    role: str = Field(default="clerk", max_length=16)
    created_by_id: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = created_column()
    revoked_at: datetime | None = ts_column()
    last_used_at: datetime | None = ts_column()


class LoginFailure(SQLModel, table=True):
    """Failed sign-ins, kept in the database so every API replica sees the same count."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_username_at", "username", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=100)
    ip: str = Field(default="", max_length=64)
    at: datetime = created_column()


# --- files and documents -------------------------------------------------------------------

class Blob(SQLModel, table=True):
    """A stored file, addressed by the SHA-256 of its content."""

    __tablename__ = "blobs"

    sha256: str = Field(sa_column=Column(String(64), primary_key=True))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    content_type: str = Field(default="application/pdf", max_length=100)
    created_at: datetime = created_column()


class Document(SQLModel, table=True):
    """An official document with its Decree 30 / edXML metadata."""

    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("sender_id", "register_name", "issued_year", "code_number",
                         "code_notation", name="uq_documents_number"),
    )

    id: int | None = Field(default=None, primary_key=True)
    sender_id: int = Field(foreign_key="agencies.id", index=True)
    created_by_id: int | None = Field(default=None, foreign_key="users.id")
    status: str = Field(default="draft", max_length=16, index=True)  # draft|issued|sent|recalled
    channel: str = Field(default="electronic", max_length=16)  # electronic|paper
    also_on_paper: bool = False  # edXML Paper = 1
    # Added by 0004_stats: paper register entries (channel = paper). For an incoming paper
    # entry sender_id is the registering (receiving) agency; the real sender is below.
    counterpart_code: str | None = Field(default=None, max_length=35)
    counterpart_name: str | None = Field(default=None, max_length=200)
    original_ref: str | None = Field(default=None, max_length=64)
    registered_on: date | None = None
    type_name: str = Field(max_length=50)
    subject: str = Field(sa_column=Column(Text, nullable=False))
    priority: int = 0
    signer_competence: str = Field(default="", max_length=20)
    signer_position: str = Field(default="", max_length=200)
    signer_full_name: str = Field(default="", max_length=200)
    due_date: date | None = None
    to_places: list[str] = json_column([])
    response_for_id: int | None = Field(default=None, foreign_key="documents.id")
    response_for_ref: str | None = Field(default=None, max_length=200)
    page_amount: int | None = None
    confidentiality: str = Field(default="none", max_length=20)
    place: str = Field(default="", max_length=100)
    register_name: str = Field(default=OUTGOING_REGISTER, max_length=32)
    code_number: str | None = Field(default=None, max_length=11)
    code_notation: str | None = Field(default=None, max_length=30)
    issued_year: int | None = None
    promulgation_date: date | None = None
    issued_at: datetime | None = ts_column()
    sent_at: datetime | None = ts_column(index=True)
    recalled_at: datetime | None = ts_column()
    replaces_id: int | None = Field(default=None, foreign_key="documents.id")
    forwarded_from_id: int | None = Field(default=None, foreign_key="documents.id")
    file_sha256: str | None = Field(default=None, foreign_key="blobs.sha256")
    file_name: str | None = Field(default=None, max_length=255)
    revision: int = 1
    created_at: datetime = created_column()
    updated_at: datetime = created_column()


class DocumentRevision(SQLModel, table=True):
    """Every version of the main file; signing adds one, nothing is overwritten."""

    __tablename__ = "document_revisions"
    __table_args__ = (UniqueConstraint("document_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="documents.id", index=True)
    number: int
    blob_sha256: str = Field(foreign_key="blobs.sha256")
    reason: str = Field(default="upload", max_length=50)
    created_by_id: int | None = Field(default=None, foreign_key="users.id")
    job_id: str | None = Field(default=None, max_length=32, unique=True)
    created_at: datetime = created_column()


class Attachment(SQLModel, table=True):
    __tablename__ = "attachments"

    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="documents.id", index=True)
    blob_sha256: str = Field(foreign_key="blobs.sha256")
    file_name: str = Field(max_length=255)
    content_type: str = Field(default="application/octet-stream", max_length=100)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))


class RegisterCounter(SQLModel, table=True):
    """The last number given in a register (outgoing or incoming) of an agency for a year."""

    __tablename__ = "register_counters"

    agency_id: int = Field(foreign_key="agencies.id", primary_key=True)
    register_name: str = Field(max_length=32, primary_key=True)
    year: int = Field(primary_key=True)
    last_number: int = 0


# --- exchange ------------------------------------------------------------------------------

class Delivery(SQLModel, table=True):
    """One document to one receiver: transport status and edXML business status kept apart."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("document_id", "recipient_id", name="uq_delivery_once"),)

    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="documents.id", index=True)
    recipient_id: int = Field(foreign_key="agencies.id", index=True)
    # The code the sender used, when it named a merged body whose successor received it.
    addressed_to_code: str | None = Field(default=None, max_length=35)
    transport_status: str = Field(default="queued", max_length=16)
    transport_attempts: int = 0
    status_code: str | None = Field(default=None, max_length=2, index=True)
    pending_request: str | None = Field(default=None, max_length=16)  # recall|update|replace
    pending_request_data: dict[str, Any] | None = json_column(None)
    status_before_request: str | None = Field(default=None, max_length=2)
    recalled: bool = False
    reason: str | None = Field(default=None, sa_column=Column(Text))
    arrival_number: int | None = None
    arrival_date: date | None = None
    assigned_to_id: int | None = Field(default=None, foreign_key="users.id")
    read_at: datetime | None = ts_column()
    delivered_at: datetime | None = ts_column()
    acknowledged_at: datetime | None = ts_column()
    completed_at: datetime | None = ts_column()
    verification_indication: str | None = Field(default=None, max_length=32)
    verification_report_id: int | None = None
    created_at: datetime = created_column()
    updated_at: datetime = created_column()


class DeliveryEvent(SQLModel, table=True):
    """Who did what to a delivery, when: the history both sides see."""

    __tablename__ = "delivery_events"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(foreign_key="deliveries.id", index=True)
    code: str | None = Field(default=None, max_length=2)
    transport_status: str | None = Field(default=None, max_length=16)
    action: str = Field(max_length=32)
    actor_user_id: int | None = Field(default=None, foreign_key="users.id")
    actor_agency_id: int | None = Field(default=None, foreign_key="agencies.id")
    reason: str | None = Field(default=None, sa_column=Column(Text))
    at: datetime = created_column()
    notified_at: datetime | None = ts_column()


class IdempotencyKey(SQLModel, table=True):
    """The first answer to a request carrying an Idempotency-Key, replayed for repeats."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("principal", "endpoint", "key", name="uq_idempotency"),)

    id: int | None = Field(default=None, primary_key=True)
    principal: str = Field(max_length=64)
    endpoint: str = Field(max_length=200)
    key: str = Field(max_length=200)
    request_hash: str = Field(max_length=64)
    status_code: int = 200
    response: dict[str, Any] | None = json_column(None)
    created_at: datetime = created_column()


# --- infrastructure ------------------------------------------------------------------------

class OutboxMessage(SQLModel, table=True):
    """A task to enqueue, written in the same transaction as the change that causes it."""

    __tablename__ = "outbox"

    id: str = Field(default_factory=new_uuid, primary_key=True, max_length=32)
    task: str = Field(max_length=200)
    args: list[Any] = json_column([])
    queue: str = Field(default="fast", max_length=32)
    request_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = created_column()
    published_at: datetime | None = ts_column(index=True)
    attempts: int = 0


class Job(SQLModel, table=True):
    """A long-running piece of work (signing, verification) whose progress users read."""

    __tablename__ = "jobs"

    id: str = Field(default_factory=new_uuid, primary_key=True, max_length=32)
    kind: str = Field(max_length=32)
    # queued|running|awaiting_signature|succeeded|failed (widened to 32 by 0002_signing)
    status: str = Field(default="queued", max_length=32)
    progress: int = 0
    document_id: int | None = Field(default=None, foreign_key="documents.id", index=True)
    created_by_id: int | None = Field(default=None, foreign_key="users.id")
    params: dict[str, Any] | None = json_column({})
    result: dict[str, Any] | None = json_column(None)
    error: str | None = Field(default=None, sa_column=Column(Text))
    attempts: int = 0
    created_at: datetime = created_column()
    updated_at: datetime = created_column()


class VerificationReport(SQLModel, table=True):
    """A stored verification report with the file revision and trust-store state it used."""

    __tablename__ = "verification_reports"

    id: int | None = Field(default=None, primary_key=True)
    document_id: int | None = Field(default=None, foreign_key="documents.id", index=True)
    revision_id: int | None = Field(default=None, foreign_key="document_revisions.id")
    blob_sha256: str = Field(max_length=64, index=True)
    indication: str = Field(max_length=32)
    sub_indication: str | None = Field(default=None, max_length=64)
    trust_state: str = Field(default="", max_length=64)
    report: dict[str, Any] = json_column({})
    created_by_id: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = created_column()
    # Added by 0003_verification: the delivery checked on arrival and why the check ran.
    delivery_id: int | None = Field(default=None, foreign_key="deliveries.id", index=True)
    purpose: str = Field(default="upload", max_length=16)  # upload|arrival|reverify


class AuditEvent(SQLModel, table=True):
    """An append-only, hash-chained record of every state change."""

    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = created_column()
    actor: str = Field(default="system", max_length=100)
    agency_id: int | None = Field(default=None, index=True)
    action: str = Field(max_length=64, index=True)
    object_type: str = Field(max_length=32)
    object_id: str = Field(max_length=64)
    data: dict[str, Any] | None = json_column({})
    # Set when the entry is sealed into the chain (shortly after its transaction commits):
    # `seq` is its place in the chain, `prev_hash` the hash of the entry before it.
    seq: int | None = Field(default=None, sa_column=Column(BigInteger, unique=True,
                                                           nullable=True))
    prev_hash: str | None = Field(default=None, max_length=64)
    hash: str | None = Field(default=None, sa_column=Column(String(64), unique=True,
                                                            nullable=True))


# --- verification: trust store and audit anchors (verification engineer) ------------------

class TrustAnchor(SQLModel, table=True):
    """A certificate the service trusts; removal keeps the row (history lives in events)."""

    __tablename__ = "trust_anchors"

    id: int | None = Field(default=None, primary_key=True)
    # SHA-256 of the DER, lower-case hex without separators.
    fingerprint: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    subject: str = Field(sa_column=Column(Text, nullable=False))
    pem: str = Field(sa_column=Column(Text, nullable=False))
    kind: str = Field(default="root", max_length=16)  # root|intermediate
    source: str = Field(default="api", max_length=255)  # api|cli|dir:<file>|dev-pki
    not_after: datetime | None = ts_column()
    added_at: datetime = created_column()
    added_by: str = Field(default="system", max_length=100)
    removed_at: datetime | None = ts_column(index=True)
    removed_by: str | None = Field(default=None, max_length=100)


class TrustEvent(SQLModel, table=True):
    """One change of the trust store: answers "was this certificate trusted at T"."""

    __tablename__ = "trust_events"
    __table_args__ = (Index("ix_trust_events_fingerprint_at", "fingerprint", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(max_length=64)
    action: str = Field(max_length=16)  # added|removed
    at: datetime = created_column()
    actor: str = Field(default="system", max_length=100)
    source: str = Field(default="api", max_length=255)
    state_after: str = Field(default="", max_length=64)


class AuditAnchor(SQLModel, table=True):
    """An RFC 3161 timestamp over the audit chain head: truncation and rewrites show."""

    __tablename__ = "audit_anchors"

    id: int | None = Field(default=None, primary_key=True)
    last_event_id: int = Field(index=True)
    head_hash: str = Field(max_length=64)
    tst: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    tsa_url: str = Field(default="", max_length=500)
    gen_time: datetime | None = ts_column()
    created_at: datetime = created_column()


# --- platform: webhooks and task outcomes (issue 5) ----------------------------------------

class WebhookEndpoint(SQLModel, table=True):
    """An agency system's URL to which arrivals, statuses and recall requests are pushed."""

    __tablename__ = "webhook_endpoints"

    id: int | None = Field(default=None, primary_key=True)
    agency_id: int = Field(foreign_key="agencies.id", index=True)
    url: str = Field(max_length=500)
    # Kept in clear because signing a push needs it; shown to the agency only once.
    secret: str = Field(max_length=128)
    events: list[str] = json_column([])
    description: str = Field(default="", max_length=200)
    active: bool = True
    created_by_id: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = created_column()
    deleted_at: datetime | None = ts_column()


class WebhookDelivery(SQLModel, table=True):
    """One push of one event to one endpoint; its id is the receiver's de-duplication key."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("endpoint_id", "event_key", name="uq_webhook_event_once"),
                      Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"))

    id: str = Field(default_factory=new_uuid, primary_key=True, max_length=32)
    endpoint_id: int = Field(foreign_key="webhook_endpoints.id", index=True)
    event_type: str = Field(max_length=64)
    event_key: str = Field(max_length=100)
    payload: dict[str, Any] = json_column({})
    status: str = Field(default="pending", max_length=16)  # pending|succeeded|failed
    attempts: int = 0
    next_attempt_at: datetime | None = ts_column()
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = created_column()
    updated_at: datetime = created_column()
    delivered_at: datetime | None = ts_column()


class TaskStat(SQLModel, table=True):
    """Celery task outcomes and durations summed across every worker, read by /metrics."""

    __tablename__ = "task_stats"

    task: str = Field(sa_column=Column(String(200), primary_key=True))
    outcome: str = Field(sa_column=Column(String(16), primary_key=True))
    count: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    total_seconds: float = 0.0
    max_seconds: float = 0.0
    updated_at: datetime = created_column()


# --- stats: electronic-exchange rate aggregates (stats engineer, issue 6; 0004_stats) -------

class StatsCounters(SQLModel):
    """The counters a day cell and a month cell both carry (not a table)."""

    electronic: int = 0
    paper: int = 0
    recalled: int = 0
    also_on_paper: int = 0
    signed_ok: int = 0
    acknowledged: int = 0
    ack_on_time: int = 0
    completed: int = 0
    with_due: int = 0
    done_by_due: int = 0
    ack_h0: int = 0
    ack_h1: int = 0
    ack_h2: int = 0
    ack_h3: int = 0
    ack_h4: int = 0
    ack_h5: int = 0
    ack_h6: int = 0
    ack_h7: int = 0
    ack_h8: int = 0
    ack_h9: int = 0
    ack_h10: int = 0
    ack_h11: int = 0
    ack_h12: int = 0
    ack_h13: int = 0
    ack_h14: int = 0
    done_h0: int = 0
    done_h1: int = 0
    done_h2: int = 0
    done_h3: int = 0
    done_h4: int = 0
    done_h5: int = 0
    done_h6: int = 0
    done_h7: int = 0
    done_h8: int = 0
    done_h9: int = 0
    done_h10: int = 0
    done_h11: int = 0
    done_h12: int = 0
    done_h13: int = 0
    done_h14: int = 0


class StatsCell(StatsCounters, table=True):
    """Counters of one (agency, Vietnam day, direction) cell; KPIs are sums of cells.

    ack_h*/done_h* are histograms of minutes to acknowledge / to complete in the fixed buckets
    eoffice.stats.service.BUCKET_EDGES_MINUTES (percentiles cannot be summed, buckets can).
    """

    __tablename__ = "stats_cells"
    # Period reads filter on day across all agencies.
    __table_args__ = (Index("ix_stats_cells_day", "day"),)

    agency_id: int = Field(primary_key=True)
    day: date = Field(primary_key=True)
    direction: str = Field(primary_key=True, max_length=3)  # out|in


class StatsMonth(StatsCounters, table=True):
    """The same counters summed per calendar month: long ranges read ~30x fewer rows."""

    __tablename__ = "stats_months"

    agency_id: int = Field(primary_key=True)
    month: date = Field(primary_key=True)  # first day of the month
    direction: str = Field(primary_key=True, max_length=3)


class StatsItem(SQLModel, table=True):
    """What one document (out) or delivery (in) currently adds to its cell.

    Applying an event recomputes the item from its raw row and adds the difference to the
    cell, so applying the same event twice changes nothing.
    """

    __tablename__ = "stats_items"

    kind: str = Field(primary_key=True, max_length=3)  # doc|dlv
    ref_id: int = Field(primary_key=True)
    agency_id: int
    day: date
    direction: str = Field(max_length=3)
    electronic: int = 0
    paper: int = 0
    recalled: int = 0
    also_on_paper: int = 0
    signed_ok: int = 0
    acknowledged: int = 0
    ack_on_time: int = 0
    completed: int = 0
    with_due: int = 0
    done_by_due: int = 0
    ack_bucket: int | None = None
    done_bucket: int | None = None


class StatsReconcileRun(SQLModel, table=True):
    """One reconciliation of the aggregates against a full recomputation, with its drift."""

    __tablename__ = "stats_reconcile_runs"

    id: int | None = Field(default=None, primary_key=True)
    started_at: datetime = created_column()
    finished_at: datetime | None = ts_column()
    cells_checked: int = 0
    cells_fixed: int = 0
    items_fixed: int = 0
    drift: dict[str, Any] | None = json_column({})


# --- signing (issue 3): attachment versions made by the organisation seal ------------------

class AttachmentRevision(SQLModel, table=True):
    """Every version of an attachment file; the seal job adds the stamped one.

    ``Attachment.blob_sha256`` always points at the newest version (what is downloaded and
    sent); number 1 is the upload. ``job_id`` makes a re-run seal job write nothing twice.
    """

    __tablename__ = "attachment_revisions"
    __table_args__ = (UniqueConstraint("attachment_id", "number"),
                      UniqueConstraint("attachment_id", "job_id", name="uq_attachment_rev_job"))

    id: int | None = Field(default=None, primary_key=True)
    attachment_id: int = Field(foreign_key="attachments.id", index=True)
    number: int
    blob_sha256: str = Field(foreign_key="blobs.sha256")
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    reason: str = Field(default="upload", max_length=50)
    job_id: str | None = Field(default=None, max_length=32)
    created_at: datetime = created_column()
