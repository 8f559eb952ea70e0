"""Accounts, password sign-in with rate limiting, bearer tokens and API keys."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Row, bindparam, delete, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from eoffice.db import VersionedCache, note_versions_from, version_columns
from eoffice.errors import Forbidden, TooManyRequests, Unauthenticated
from eoffice.models import Agency, ApiKey, LoginFailure, User, utcnow
from eoffice.settings import get_settings

ROLES = ("clerk", "leader", "officer", "auditor", "admin")
AGENCY_ROLES = ("clerk", "leader", "officer")


@lru_cache
def _hasher() -> PasswordHasher:
    # OWASP's argon2id minimum (19 MiB, t=2); tests use a cheaper setting through the env.
    if get_settings().environment == "test":
        return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass
class Principal:
    """Who is calling: a signed-in user or an agency system holding an API key."""

    role: str
    agency_id: int | None
    # Plain values rather than the User row: a caller is resolved on every API call, and
    # building an ORM object for it cost more than the query (bench/request_cost.py).
    user_id: int | None = None
    full_name: str = ""
    position: str = ""
    api_key_id: int | None = None
    scope_agency_id: int | None = None
    name: str = ""  # the username, or the API key's name
    agency_code: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """A stable id of the caller, used for idempotency keys."""
        return f"user:{self.user_id}" if self.user_id else f"apikey:{self.api_key_id}"

    def require_role(self, *roles: str) -> None:
        if self.role not in roles:
            raise Forbidden(f"role '{self.role}' may not do this (needs {', '.join(roles)})",
                            detail_vi="Vai trò của bạn không được phép thực hiện thao tác này")


def _check_rate_limit(session: Session, username: str) -> None:
    settings = get_settings()
    since = utcnow() - timedelta(seconds=settings.login_window_seconds)
    failures = session.exec(select(func.count()).select_from(LoginFailure)
                            .where(LoginFailure.username == username)
                            .where(LoginFailure.at >= since)).one()
    if failures >= settings.login_max_failures:
        raise TooManyRequests(
            "too many failed sign-ins; try again later",
            detail_vi="Đăng nhập sai quá nhiều lần; vui lòng thử lại sau",
            extra={"retry_after": settings.login_window_seconds})


def authenticate(session: Session, username: str, password: str, ip: str = "") -> User:
    """Check a password; failures are recorded (the caller commits them)."""
    username = username.strip()
    _check_rate_limit(session, username)
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None or not user.is_active or not verify_password(user.password_hash, password):
        session.add(LoginFailure(username=username[:100], ip=ip[:64]))
        raise Unauthenticated("incorrect username or password",
                              detail_vi="Sai tên đăng nhập hoặc mật khẩu")
    session.exec(delete(LoginFailure).where(col(LoginFailure.username) == username))  # type: ignore[call-overload]
    return user


def issue_token(user: User) -> str:
    settings = get_settings()
    now = utcnow()
    payload = {"sub": str(user.id), "ver": user.token_version, "iat": int(now.timestamp()),
               "exp": int((now + timedelta(minutes=settings.access_token_minutes)).timestamp())}
    return jwt.encode(payload, settings.signing_secret(), algorithm="HS256")


def principal_for_user(session: Session, user: User) -> Principal:
    agency = session.get(Agency, user.agency_id) if user.agency_id else None
    return _user_principal(user, agency.code if agency else None)


def _user_principal(user: User | Row[Any], agency_code: str | None) -> Principal:
    """A signed-in user's principal, from the User row or the caller query's plain row."""
    return Principal(role=user.role, agency_id=user.agency_id, user_id=user.id,
                     full_name=user.full_name, position=user.position,
                     scope_agency_id=user.scope_agency_id or user.agency_id,
                     name=user.username, agency_code=agency_code)


def principal_from_token(session: Session, token: str) -> Principal:
    if token.startswith("eok_"):
        return principal_from_api_key(session, token)
    payload = _verified_claims(token, get_settings().signing_secret())
    # One round trip for the user and their agency's code, as plain columns (this runs on
    # every API call), with the versions of the process caches read along.
    row = session.execute(_caller_query(len(VersionedCache.registry)),
                          {"user_id": int(payload.get("sub", 0))}).first()
    if row is not None:
        note_versions_from(session, row)
    return _checked_caller(row, payload)


def principals_from_tokens(session: Session, credentials: list[str]
                           ) -> dict[str, Principal | Unauthenticated]:
    """principal_from_token for several callers at once (a batch of units of work): the
    signed-in users in one query; a refused credential maps to its error."""
    resolved: dict[str, Principal | Unauthenticated] = {}
    claims: dict[str, dict[str, Any]] = {}
    for credential in credentials:
        try:
            if credential.startswith("eok_"):
                resolved[credential] = principal_from_api_key(session, credential)
            else:
                claims[credential] = _verified_claims(credential,
                                                      get_settings().signing_secret())
        except Unauthenticated as exc:
            resolved[credential] = exc
    if claims:
        rows = {row.id: row for row in session.execute(
            _callers_query(len(VersionedCache.registry)),
            {"user_ids": sorted({int(c.get("sub", 0)) for c in claims.values()})})}
        if rows:
            note_versions_from(session, next(iter(rows.values())))
        for credential, payload in claims.items():
            try:
                resolved[credential] = _checked_caller(rows.get(int(payload.get("sub", 0))),
                                                       payload)
            except Unauthenticated as exc:
                resolved[credential] = exc
    return resolved


def _checked_caller(row: Row[Any] | None, payload: dict[str, Any]) -> Principal:
    """The principal of a verified token's user row, unless the user was disabled or their
    tokens revoked (token_version) since it was issued."""
    if row is None or not row.is_active or payload.get("ver") != row.token_version:
        raise Unauthenticated("invalid or expired token", detail_vi=_BAD_TOKEN_VI)
    return _user_principal(row, row.agency_code)


_BAD_TOKEN_VI = "Phiên đăng nhập không hợp lệ hoặc đã hết hạn"


def _verified_claims(token: str, secret: str) -> dict[str, Any]:
    """The token's claims if its signature holds under `secret` and it has not expired."""
    try:
        claims = _signed_claims(token, secret)
    except jwt.PyJWTError as exc:
        raise Unauthenticated("invalid or expired token", detail_vi=_BAD_TOKEN_VI) from exc
    # As PyJWT decides it (no leeway): expired once `exp` is not after now.
    if int(claims["exp"]) <= time.time():
        raise Unauthenticated("invalid or expired token", detail_vi=_BAD_TOKEN_VI)
    return claims


# The signature check of a given string under a given secret never changes its answer, and
# an agency system sends the same token with every call: PyJWT re-checking it was 4% of the
# API's CPU per create-and-send (py-spy --gil). Only the expiry moves with time, so
# _verified_claims checks it on every call. A failed check raises and is not remembered.
@lru_cache(maxsize=4096)
def _signed_claims(token: str, secret: str) -> dict[str, Any]:
    return jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})


@lru_cache(maxsize=4)
def _caller_query(_caches: int) -> Any:
    """Built once per number of registered caches: one registered later still rides along."""
    return _callers().where(User.__table__.c.id == bindparam("user_id"))  # type: ignore[attr-defined]


@lru_cache(maxsize=4)
def _callers_query(_caches: int) -> Any:
    return _callers().where(
        User.__table__.c.id.in_(bindparam("user_ids", expanding=True)))  # type: ignore[attr-defined]


def _callers() -> Any:
    users, agencies = User.__table__, Agency.__table__  # type: ignore[attr-defined]
    return (sa_select(users.c.id, users.c.username, users.c.full_name, users.c.position,
                      users.c.role, users.c.agency_id, users.c.scope_agency_id,
                      users.c.is_active, users.c.token_version,
                      agencies.c.code.label("agency_code"), *version_columns())
            .select_from(users.outerjoin(agencies, agencies.c.id == users.c.agency_id)))


def _key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(session: Session, *, agency_id: int, name: str, role: str = "clerk",
                   created_by_id: int | None = None) -> tuple[ApiKey, str]:
    """A new key; the plain value is returned once and never stored."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    plain = f"eok_{prefix}_{secret}"
    key = ApiKey(prefix=prefix, key_hash=_key_hash(plain), name=name, agency_id=agency_id,
                 role=role, created_by_id=created_by_id)
    session.add(key)
    session.flush()
    return key, plain


def principal_from_api_key(session: Session, plain: str) -> Principal:
    parts = plain.split("_", 2)
    if len(parts) != 3:
        raise Unauthenticated("malformed API key", detail_vi="Khóa API không hợp lệ")
    key = session.exec(select(ApiKey).where(ApiKey.prefix == parts[1])).first()
    if key is None or key.revoked_at is not None or not secrets.compare_digest(
            key.key_hash, _key_hash(plain)):
        raise Unauthenticated("unknown or revoked API key", detail_vi="Khóa API không hợp lệ")
    agency = session.get(Agency, key.agency_id)
    return Principal(role=key.role, agency_id=key.agency_id, api_key_id=key.id,
                     scope_agency_id=key.agency_id, name=f"apikey:{key.name}",
                     agency_code=agency.code if agency else None)
