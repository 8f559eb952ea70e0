"""Webhook endpoints of the caller's agency and their push history (thin handlers)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response

from eoffice.deps import CurrentPrincipal, PageOffset, RowId, SessionDep
from eoffice.models import WebhookDelivery, WebhookEndpoint
from eoffice.webhooks import service
from eoffice.webhooks.schemas import (
    EndpointCreate,
    EndpointCreated,
    EndpointOut,
    EndpointPage,
    WebhookDeliveryOut,
    WebhookDeliveryPage,
)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

DeliveryId = Annotated[str, Path(min_length=1, max_length=32)]


def _endpoint_out(endpoint: WebhookEndpoint) -> EndpointOut:
    return EndpointOut(id=endpoint.id or 0, url=endpoint.url, events=list(endpoint.events or []),
                       description=endpoint.description, active=endpoint.active,
                       created_at=endpoint.created_at)


def _delivery_out(row: WebhookDelivery) -> WebhookDeliveryOut:
    return WebhookDeliveryOut(id=row.id, endpoint_id=row.endpoint_id, event_type=row.event_type,
                              status=row.status, attempts=row.attempts,
                              next_attempt_at=row.next_attempt_at,
                              last_status_code=row.last_status_code, last_error=row.last_error,
                              created_at=row.created_at, delivered_at=row.delivered_at,
                              payload=row.payload or {})


@router.post("", status_code=201, response_model=EndpointCreated)
def create(body: EndpointCreate, session: SessionDep,
           principal: CurrentPrincipal) -> EndpointCreated:
    """Register an endpoint; the signing secret is in this response only."""
    endpoint, secret = service.create_endpoint(session, principal, url=body.url,
                                               events=list(body.events or []) or None,
                                               description=body.description)
    return EndpointCreated(**_endpoint_out(endpoint).model_dump(), secret=secret)


@router.get("", response_model=EndpointPage)
def list_endpoints(session: SessionDep, principal: CurrentPrincipal) -> EndpointPage:
    """The agency's endpoints (secrets are never shown again)."""
    items = [_endpoint_out(e) for e in service.list_endpoints(session, principal)]
    return EndpointPage(items=items, total=len(items))


@router.get("/{endpoint_id}", response_model=EndpointOut)
def get_endpoint(endpoint_id: RowId, session: SessionDep,
                 principal: CurrentPrincipal) -> EndpointOut:
    """One endpoint."""
    return _endpoint_out(service.get_endpoint(session, principal, endpoint_id))


@router.delete("/{endpoint_id}", status_code=204)
def delete(endpoint_id: RowId, session: SessionDep,
           principal: CurrentPrincipal) -> Response:
    """Stop pushing to this endpoint."""
    service.delete_endpoint(session, principal, endpoint_id)
    return Response(status_code=204)


@router.get("/{endpoint_id}/deliveries", response_model=WebhookDeliveryPage)
def deliveries(endpoint_id: RowId, session: SessionDep, principal: CurrentPrincipal,
               status: Literal["pending", "succeeded", "failed"] | None = None,
               limit: Annotated[int, Query(ge=1, le=200)] = 50,
               offset: PageOffset = 0) -> WebhookDeliveryPage:
    """Pushes to this endpoint, newest first; failed ones can be re-sent."""
    rows, total = service.list_deliveries(session, principal, endpoint_id, status=status,
                                          limit=limit, offset=offset)
    return WebhookDeliveryPage(items=[_delivery_out(r) for r in rows], total=total)


@router.post("/{endpoint_id}/deliveries/{delivery_id}/resend", status_code=202,
             response_model=WebhookDeliveryOut)
def resend(endpoint_id: RowId, delivery_id: DeliveryId, session: SessionDep,
           principal: CurrentPrincipal) -> WebhookDeliveryOut:
    """Push a failed event again (a new retry budget, the same delivery id)."""
    return _delivery_out(service.resend(session, principal, endpoint_id, delivery_id))
