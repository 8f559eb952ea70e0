"""Paper register entries: the document metadata plus what only a paper entry has."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

# Keys of the `metadata` JSON that are not edXML document metadata.
REGISTER_KEYS = ("registered_on", "sender_code", "sender_name", "original_ref",
                 "recipient_code")


class RegisterExtra(BaseModel):
    """Register-only fields of a paper entry."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    registered_on: date | None = None
    sender_code: str | None = Field(default=None, max_length=35)
    sender_name: str | None = Field(default=None, max_length=200)
    original_ref: str | None = Field(default=None, max_length=64)
    recipient_code: str | None = Field(default=None, max_length=35)


class RegisterEntry(BaseModel):
    """One line of an outgoing or incoming register (paper channel)."""

    id: int
    direction: str
    channel: str
    agency: str
    number: str | None
    notation: str | None
    registered_on: date | None
    counterpart_code: str | None
    counterpart_name: str | None
    original_ref: str | None
    type_name: str
    subject: str
    priority: int
    due_date: date | None
    has_scan: bool
    created_at: datetime
