"""Sign-in, the current user, API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm

from eoffice.audit.service import record
from eoffice.deps import CurrentPrincipal, SessionDep
from eoffice.errors import Unauthenticated, ValidationFailed
from eoffice.models import Agency
from eoffice.settings import get_settings
from eoffice.users import service
from eoffice.users.schemas import ApiKeyCreate, ApiKeyCreated, Me, Token

router = APIRouter(tags=["auth"])


@router.post("/auth/token", response_model=Token)
def login(request: Request, session: SessionDep,
          form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
    """OAuth2 password flow: a short-lived bearer token."""
    ip = request.client.host if request.client else ""
    try:
        user = service.authenticate(session, form.username, form.password, ip)
    except Unauthenticated:
        session.commit()  # the failure must count even though the request fails
        raise
    record(session, actor=user.username, action="user.signed_in", object_type="user",
           object_id=user.id, agency_id=user.agency_id)
    return Token(access_token=service.issue_token(user),
                 expires_in=get_settings().access_token_minutes * 60)


@router.get("/me", response_model=Me)
def me(principal: CurrentPrincipal, session: SessionDep) -> Me:
    agency = session.get(Agency, principal.agency_id) if principal.agency_id else None
    return Me(username=principal.name, full_name=principal.full_name or principal.name,
              role=principal.role, position=principal.position,
              agency_code=agency.code if agency else None,
              agency_name=agency.name if agency else None,
              agency_level=agency.level if agency else None)


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=201)
def create_api_key(body: ApiKeyCreate, principal: CurrentPrincipal,
                   session: SessionDep) -> ApiKeyCreated:
    """A key for the caller's agency system (clerk or leader of that agency)."""
    principal.require_role("clerk", "leader")
    if body.role not in ("clerk", "officer"):
        raise ValidationFailed("an API key acts as clerk or officer", field="role")
    assert principal.agency_id is not None
    key, plain = service.create_api_key(session, agency_id=principal.agency_id, name=body.name,
                                        role=body.role, created_by_id=principal.user_id)
    record(session, actor=principal.name, action="apikey.created", object_type="api_key",
           object_id=key.id, agency_id=principal.agency_id, data={"name": body.name})
    return ApiKeyCreated(id=key.id or 0, name=key.name, role=key.role, key=plain)
