from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict


class AgencyOut(BaseModel):
    code: str
    name: str
    level: str
    abbreviation: str
    parent: str | None
    successor: str | None
    merged_at: date | None
    active: bool


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    successor: str
    merged_at: date | None = None


class ImportResult(BaseModel):
    created: int
    updated: int
