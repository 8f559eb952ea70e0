"""Request and response models of the signing API."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Level = Literal["B-B", "B-T", "B-LT", "B-LTA"]


class _Placement(BaseModel):
    """Where the leader's visible signature goes (default: bottom-right of the last page)."""

    page: int | None = Field(default=None, ge=1, le=100000,
                             description="1-based page; default the last page")
    box: list[float] | None = Field(default=None, min_length=4, max_length=4,
                                    description="x1, y1, x2, y2 in PDF points")

    @field_validator("box")
    @classmethod
    def _box(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return None
        x1, y1, x2, y2 = value
        if min(value) < 0 or x2 - x1 < 100 or y2 - y1 < 60:
            raise ValueError("box must be x1, y1, x2, y2 with x2 - x1 >= 100 and y2 - y1 >= 60 "
                             "points, all non-negative")
        return value


class LeaderSignRequest(_Placement):
    """The leader signs with the server-held key file; the passphrase is used, never kept."""

    model_config = ConfigDict(extra="forbid")

    # SecretStr: the value never shows in a repr, a log line or a validation error.
    passphrase: SecretStr = Field(min_length=1, max_length=1024)
    level: Level | None = None


class PrepareRequest(_Placement):
    """Two-step signing, step 1: the signer's certificate (the key stays on their token)."""

    model_config = ConfigDict(extra="forbid")

    certificate: str = Field(min_length=1, max_length=65536,
                             description="PEM or base64 DER of the signing certificate")
    chain: list[str] = Field(default_factory=list, max_length=10,
                             description="Intermediate certificates, PEM or base64 DER")
    level: Level | None = None


def _b64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{name} must be base64") from exc


class CompleteRequest(BaseModel):
    """Two-step signing, step 2: the raw signature value, or a whole CMS SignedData."""

    model_config = ConfigDict(extra="forbid")

    signature: str | None = Field(default=None, max_length=16384,
                                  description="base64 raw signature over data_to_sign")
    cms: str | None = Field(default=None, max_length=1_000_000,
                            description="base64 DER CMS SignedData made from data_to_sign")

    @model_validator(mode="after")
    def _one_of(self) -> CompleteRequest:
        if (self.signature is None) == (self.cms is None):
            raise ValueError("give exactly one of signature or cms")
        return self

    def decoded(self) -> tuple[bytes, str]:
        """The bytes and which kind they are."""
        if self.signature is not None:
            return _b64(self.signature, "signature"), "signature"
        assert self.cms is not None
        return _b64(self.cms, "cms"), "cms"


class IssueSignedRequest(BaseModel):
    """The clerk's issuance with the organisation seal."""

    model_config = ConfigDict(extra="forbid")

    level: Level | None = None


class JobAccepted(BaseModel):
    """202 answer: the job to poll at GET /jobs/{job_id}."""

    job_id: str
    status: str
    document_id: int | None
    progress: int = 0
    number_notation: str | None = None


class JobOut(BaseModel):
    """A job as its creator's agency sees it (never the signing state or passphrases)."""

    id: str
    kind: str
    status: str
    progress: int
    document_id: int | None
    level: str | None = None
    error: str | None
    error_vi: str | None = None
    error_code: str | None = None
    attempts: int
    created_at: datetime
    updated_at: datetime
    result: dict[str, Any]
    digest: str | None = Field(default=None, description="base64 SHA-256 of data_to_sign")
    digest_hex: str | None = None
    digest_algorithm: str | None = None
    data_to_sign: str | None = Field(default=None,
                                     description="base64 DER of the CMS signed attributes")
    field: str | None = None
