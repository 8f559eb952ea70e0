from __future__ import annotations

from pydantic import BaseModel


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class Me(BaseModel):
    username: str
    full_name: str
    role: str
    position: str
    agency_code: str | None
    agency_name: str | None
    agency_level: str | None


class ApiKeyCreate(BaseModel):
    name: str
    role: str = "clerk"


class ApiKeyCreated(BaseModel):
    id: int
    name: str
    role: str
    key: str
