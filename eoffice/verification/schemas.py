"""Response models of the verification API (the report itself follows the CLI contract)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class SignatureResult(BaseModel):
    """One signature, as `eoffice verify --format json` prints it (extra keys kept)."""

    model_config = ConfigDict(extra="allow")

    field: str | None = None
    indication: str
    sub_indication: str | None = None
    signer: str | None = None
    signing_time: str | None = None
    intact: bool | None = None
    valid: bool | None = None
    trusted: bool | None = None
    coverage: str | None = None
    modification_level: str | None = None
    timestamp: dict[str, Any] | None = None
    revocation: dict[str, Any] | None = None
    errors: list[Any] = []


class VerificationResult(BaseModel):
    """The CLI report object plus where the stored copy lives."""

    model_config = ConfigDict(extra="allow")

    file: str
    indication: str
    sub_indication: str | None = None
    signatures: list[SignatureResult] = []
    elapsed_ms: int = 0
    report_id: int
    trust_state: str
    html_url: str
    pdf_url: str
