"""FastAPI dependencies: the request boundary (the one place that commits) and the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from eoffice.db import new_session
from eoffice.errors import ServiceUnavailable, Unauthenticated
from eoffice.users.service import Principal, principal_from_token

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


async def get_session() -> AsyncIterator[Session]:
    """Commit when the handler returns, roll back when it raises: nothing partial is stored.

    Async so that opening costs no hop to a worker thread (a Session connects at its first
    statement, in the handler's thread); the commit or rollback runs in one, shielded from
    cancellation so that a client hanging up cannot leave a connection checked out.
    """
    session = new_session()
    try:
        yield session
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_discard, session)
        if isinstance(exc, OperationalError):
            raise _database_unavailable() from exc
        raise
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(_commit, session)


def _database_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("database unavailable",
                              detail_vi="Cơ sở dữ liệu tạm thời không truy cập được")


def _commit(session: Session) -> None:
    try:
        session.commit()
    except OperationalError as exc:
        session.rollback()
        raise _database_unavailable() from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _discard(session: Session) -> None:
    try:
        session.rollback()
    finally:
        session.close()


# scope="function" ends the dependency (and so commits) before the response is sent.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_principal(request: Request, session: SessionDep,
                  token: Annotated[str | None, Depends(oauth2_scheme)]) -> Principal:
    api_key = request.headers.get("x-api-key")
    credential = api_key or token
    if not credential:
        raise Unauthenticated("sign in first", detail_vi="Vui lòng đăng nhập")
    principal = principal_from_token(session, credential)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
