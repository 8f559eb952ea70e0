"""FastAPI dependencies: the request boundary (the one place that commits) and the caller,
as SessionDep + CurrentPrincipal or, on the exchange's per-document calls, as one UnitOfWork."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar, cast

import anyio
import anyio.to_thread
from fastapi import Depends, Path, Query, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlmodel import Session

from eoffice.db import new_session, unit_engine_for
from eoffice.errors import ServiceUnavailable, Unauthenticated
from eoffice.models import ROW_ID_MAX
from eoffice.settings import get_settings
from eoffice.users.service import Principal, principal_from_token

T = TypeVar("T")

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
    principal = principal_from_token(session, _credential(request, token))
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


class UnitOfWork:
    """The request boundary as one unit: open a session, resolve the caller, do the work,
    commit (or roll back, 503 if the database is gone), close.

    For the calls agency systems make per document (create and send, send, status, inbox).
    On PostgreSQL the unit runs on the event loop: the application's lifespan holds an
    asyncio engine (db.unit_engine_for) and the unit's synchronous code runs in a greenlet
    whose statements await the driver (SQLAlchemy's AsyncSession.run_sync), so no thread
    waits for the interpreter lock; blocking file and blob-store I/O inside it goes to a
    worker thread (db.offload_blocking). Elsewhere (SQLite, an app without its lifespan) the
    unit runs in one worker thread.

    bench/api_ab.py: the worker-thread unit against three hops (SessionDep, CurrentPrincipal,
    a sync handler): API CPU per sent document 4.38 -> 4.01 and 4.30 -> 3.97 ms. The unit on
    the event loop against the worker-thread unit, five runs: API CPU 0.88-0.96, PostgreSQL
    0.88-0.93 (perf had shown a fifth of the API's CPU in futex calls and context switches
    between the loop and the unit threads).
    """

    def __init__(self, request: Request, credential: str) -> None:
        self.request = request
        self.credential = credential

    async def __call__(self, work: Callable[..., T], *args: Any) -> T:
        engine = unit_engine(self.request.app)
        if engine is None:
            return await anyio.to_thread.run_sync(self._run, new_session(), work, args)
        session = AsyncSession(engine, expire_on_commit=False, sync_session_class=Session)
        # Shielded like the thread it replaces: a client hanging up does not stop a unit
        # halfway (the commit or rollback below always runs and the connection goes back).
        with anyio.CancelScope(shield=True):
            try:
                # sync_session_class makes it SQLModel's Session, which services expect.
                result = await session.run_sync(
                    lambda sync_session: self._run(cast(Session, sync_session), work, args))
            finally:
                await session.close()
        return result

    def _run(self, session: Session, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            principal = principal_from_token(session, self.credential)
            self.request.state.principal = principal
            result = work(session, principal, *args)
        except BaseException as exc:
            _discard(session)
            if isinstance(exc, OperationalError):
                raise _database_unavailable() from exc
            raise
        _commit(session)
        return result


def unit_engine(app: Any) -> AsyncEngine | None:
    """The engine serve_units made for the running event loop, if any."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not on asyncio (trio)
        return None
    engines: dict[asyncio.AbstractEventLoop, AsyncEngine] = getattr(
        app.state, "unit_engines", {})
    return engines.get(loop)


def _unit_engines(app: Any) -> dict[asyncio.AbstractEventLoop, AsyncEngine]:
    if not hasattr(app.state, "unit_engines"):
        app.state.unit_engines = {}
    engines: dict[asyncio.AbstractEventLoop, AsyncEngine] = app.state.unit_engines
    return engines


@asynccontextmanager
async def serve_units(app: Any) -> AsyncIterator[None]:
    """The running loop's own engine for the units of work while the app serves (its
    lifespan): made on the loop, whose connections it holds, disposed there at the end.
    Kept per loop: an app served from two loops at once (two test clients) gives each its
    own. No engine where the database has no asyncio driver (SQLite)."""
    engine = unit_engine_for(get_settings().database_url)
    if engine is None:
        yield
        return
    loop = asyncio.get_running_loop()
    engines = _unit_engines(app)
    engines[loop] = engine
    try:
        yield
    finally:
        engines.pop(loop, None)
        await engine.dispose()


async def get_unit_of_work(request: Request,
                           token: Annotated[str | None, Depends(oauth2_scheme)]) -> UnitOfWork:
    return UnitOfWork(request, _credential(request, token))


def _credential(request: Request, token: str | None) -> str:
    """The caller's API key (X-API-Key) or bearer token; 401 without either."""
    credential = request.headers.get("x-api-key") or token
    if not credential:
        raise Unauthenticated("sign in first", detail_vi="Vui lòng đăng nhập")
    return credential


UnitOfWorkDep = Annotated[UnitOfWork, Depends(get_unit_of_work)]

# A number in a path beyond the tables' keys (models.ROW_ID_MAX) names no row: bounded
# here it is a 422 naming the parameter, not the driver's overflow deep in a query
# (SQLite's "Python int too large to convert", a 500; found by Schemathesis).
RowId = Annotated[int, Path(ge=1, le=ROW_ID_MAX, description="a row's key")]
RowIdQuery = Annotated[int | None, Query(ge=1, le=ROW_ID_MAX)]
# Paging, bounded for the same reason: an offset past the rows is an empty page, one past
# 64 bits an overflow in SQLite's driver.
PageOffset = Annotated[int, Query(ge=0, le=10_000_000)]
PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]
