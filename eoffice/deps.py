"""FastAPI dependencies: the request boundary (the one place that commits) and the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from eoffice.db import new_session
from eoffice.errors import ServiceUnavailable, Unauthenticated
from eoffice.users.service import Principal, principal_from_token

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


def get_session() -> Iterator[Session]:
    """Commit when the handler returns, roll back when it raises: nothing partial is stored."""
    session = new_session()
    try:
        yield session
        session.commit()
    except OperationalError as exc:
        session.rollback()
        raise ServiceUnavailable("database unavailable",
                                 detail_vi="Cơ sở dữ liệu tạm thời không truy cập được") from exc
    except BaseException:
        session.rollback()
        raise
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
