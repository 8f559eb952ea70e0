"""Request and response models of the webhooks API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

EventType = Literal["document.arrived", "delivery.status", "document.recall_requested"]


class EndpointCreate(BaseModel):
    url: str = Field(min_length=8, max_length=500,
                     description="http(s) URL of the agency system / địa chỉ nhận")
    events: list[EventType] | None = Field(
        default=None, max_length=3, description="Event types; all when omitted")
    description: str = Field(default="", max_length=200)


class EndpointOut(BaseModel):
    id: int
    url: str
    events: list[str]
    description: str
    active: bool
    created_at: datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(description="HMAC secret, shown only once / khóa bí mật, chỉ hiện một lần")


class EndpointPage(BaseModel):
    items: list[EndpointOut]
    total: int


class WebhookDeliveryOut(BaseModel):
    id: str
    endpoint_id: int
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]


class WebhookDeliveryPage(BaseModel):
    items: list[WebhookDeliveryOut]
    total: int
