"""Idempotency-Key: a repeated request returns the first answer, even when sent concurrently."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlmodel import Session, select

from eoffice.errors import ValidationFailed
from eoffice.models import IdempotencyKey, utcnow
from eoffice.rows import insert_ignore


def request_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def claim(session: Session, principal_key: str, endpoint: str, key: str, body_hash: str
          ) -> IdempotencyKey | None:
    """Claim the key (None: go ahead) or return the stored first answer.

    The claim row is inserted inside the caller's transaction; a concurrent twin blocks on the
    unique index until this transaction commits, then sees the stored answer.
    """
    if not key or len(key) > 200:
        raise ValidationFailed("Idempotency-Key must be 1 to 200 characters",
                               field="Idempotency-Key")
    inserted = insert_ignore(session, IdempotencyKey, {
        "principal": principal_key, "endpoint": endpoint, "key": key,
        "request_hash": body_hash, "status_code": 0, "created_at": utcnow()})
    if inserted:
        return None
    stored = session.exec(select(IdempotencyKey).where(IdempotencyKey.principal == principal_key)
                          .where(IdempotencyKey.endpoint == endpoint)
                          .where(IdempotencyKey.key == key)).one()
    if stored.request_hash != body_hash:
        raise ValidationFailed("this Idempotency-Key was used with a different request",
                               field="Idempotency-Key",
                               detail_vi="Khóa Idempotency-Key đã dùng cho yêu cầu khác")
    return stored


def store(session: Session, principal_key: str, endpoint: str, key: str, status_code: int,
          response: Any) -> None:
    row = session.exec(select(IdempotencyKey).where(IdempotencyKey.principal == principal_key)
                       .where(IdempotencyKey.endpoint == endpoint)
                       .where(IdempotencyKey.key == key)).one()
    row.status_code = status_code
    row.response = json.loads(json.dumps(response, default=str))
    session.add(row)
