"""FastAPI dependencies: the request boundary (the one place that commits) and the caller,
as SessionDep + CurrentPrincipal or, on the exchange's per-document calls, as one UnitOfWork."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Annotated, Any, NamedTuple, TypeVar, cast

import anyio
import anyio.to_thread
from fastapi import Depends, Path, Query, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlmodel import Session

from eoffice.db import new_session, unit_engine_for
from eoffice.errors import AppError, ServiceUnavailable, Unauthenticated
from eoffice.metrics import UNIT_BATCH_SIZE, UNIT_BATCHES_ROLLED_BACK
from eoffice.models import ROW_ID_MAX
from eoffice.observability import current_request_id, reset_request_id, set_request_id
from eoffice.settings import get_settings
from eoffice.users.service import Principal, principal_from_token, principals_from_tokens

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
        return await in_unit_session(self.request.app,
                                     lambda session: self._run(session, work, args))

    async def batched(self, work: Callable[..., T], *args: Any,
                      exclusive: Hashable | None = None) -> T:
        """As calling the unit, but the work may share its transaction with other requests'
        batched works that are waiting at the same moment (group commit, see UnitBatcher).

        The work must be safe to run again from the start after a rollback: when another
        work of its batch fails, the batch is rolled back and run again without that one.
        Works with the same `exclusive` key never share a batch (an Idempotency-Key's
        twins: the second would see the first's claim, uncommitted, as a stored answer).
        """
        loop = asyncio.get_running_loop()
        batcher = _batcher(self.request.app, loop)
        item = _Queued(self, work, args, exclusive, current_request_id(), loop.create_future())
        batcher.submit(item)
        return cast(T, await item.future)

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


async def in_unit_session(app: Any, run: Callable[[Session], T]) -> T:
    """`run` with a new session, as a unit of work runs: on PostgreSQL on the event loop
    (the loop's asyncio engine, the synchronous code in a greenlet), elsewhere in one
    worker thread. `run` commits or rolls back and closes the session itself."""
    engine = unit_engine(app)
    if engine is None:
        return await anyio.to_thread.run_sync(run, new_session())
    session = AsyncSession(engine, expire_on_commit=False, sync_session_class=Session)
    # Shielded like the thread it replaces: a client hanging up does not stop a unit
    # halfway (the commit or rollback always runs and the connection goes back).
    with anyio.CancelScope(shield=True):
        try:
            # sync_session_class makes it SQLModel's Session, which services expect.
            result = await session.run_sync(
                lambda sync_session: run(cast(Session, sync_session)))
        finally:
            await session.close()
    return result


class _Queued(NamedTuple):
    unit: UnitOfWork
    work: Callable[..., Any]
    args: tuple[Any, ...]
    exclusive: Hashable | None
    request_id: str | None
    future: asyncio.Future[Any]


class _Broken(Exception):
    """A batch that was rolled back: at item `index` (None: at commit), with `cause`."""

    def __init__(self, index: int | None, cause: BaseException) -> None:
        super().__init__(index)
        self.index = index
        self.cause = cause


class _Refused(NamedTuple):
    error: BaseException


class UnitBatcher:
    """Group commit for units of work: the batched works that wait while a batch runs go
    together into the next one, in one transaction on one connection.

    Nothing waits for a batch to fill: a lone request runs at once, alone, and batches only
    form while earlier ones are in flight (under load). What a document's send shares with
    the others of its batch: the connection's checkout and pre-ping, the session, the
    callers' resolution (one query for the batch's signed-in users), the deferred rows
    (one INSERT per table for the whole batch) and the commit.

    A work that raises rolls its batch back; it then runs alone (its own unit, its own
    answer) and the rest of the batch runs again without it. A commit that fails on a lost
    connection is not retried (it may have committed): every item gets the 503 that a
    single unit would give. A caller refused at resolution (a bad token) wrote nothing and
    fails alone.
    """

    def __init__(self, max_items: int, max_running: int) -> None:
        self.max_items = max_items
        self.max_running = max_running
        self.queue: deque[_Queued] = deque()
        self.running = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def submit(self, item: _Queued) -> None:
        self.queue.append(item)
        if self.running < self.max_running:
            self.running += 1
            task = asyncio.get_running_loop().create_task(self._drain(item.unit.request.app))
            self.tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self.tasks.discard)

    def _take(self) -> list[_Queued]:
        batch: list[_Queued] = []
        keys: set[Hashable] = set()
        left: deque[_Queued] = deque()
        while self.queue and len(batch) < self.max_items:
            item = self.queue.popleft()
            if item.exclusive is not None and item.exclusive in keys:
                left.append(item)
                continue
            if item.exclusive is not None:
                keys.add(item.exclusive)
            batch.append(item)
        self.queue.extendleft(reversed(left))
        return batch

    async def _drain(self, app: Any) -> None:
        batch: list[_Queued] = []
        try:
            while self.queue:
                # One turn of the loop first: requests whose parsing ends in this turn join
                # the batch instead of starting one of their own (measured: without it, most
                # batches of eight agencies' clerks held one request).
                await asyncio.sleep(0)
                batch = self._take()
                if batch:  # another drainer may have taken them all meanwhile
                    await self._run(app, batch)
                batch = []
        except BaseException:  # cancelled (the server stops) or a fault of ours
            stopped = ServiceUnavailable("the server is stopping; please retry",
                                         detail_vi="Máy chủ đang dừng; vui lòng thử lại")
            for item in [*batch, *self.queue]:
                _settle(item, error=stopped)
            self.queue.clear()
            raise
        finally:
            self.running -= 1

    async def _run(self, app: Any, batch: list[_Queued]) -> None:
        UNIT_BATCH_SIZE.observe(len(batch))
        if len(batch) == 1:
            await self._alone(batch[0])
            return
        try:
            outcomes = await in_unit_session(app, lambda session: _run_batch(session, batch))
        except _Broken as broken:
            if broken.index is None:
                if isinstance(broken.cause, OperationalError):
                    # The connection went at commit: it may have committed, so nothing
                    # runs again; each caller gets the 503 a unit of its own would give.
                    for item in batch:
                        _settle(item, error=_database_unavailable())
                    return
                for item in batch:  # refused at commit, rolled back: each on its own
                    await self._alone(item)
                return
            UNIT_BATCHES_ROLLED_BACK.inc()
            await self._alone(batch[broken.index])
            rest = batch[:broken.index] + batch[broken.index + 1:]
            if rest:
                await self._run(app, rest)
            return
        for item, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, _Refused):
                _settle(item, error=outcome.error)
            else:
                _settle(item, value=outcome)

    async def _alone(self, item: _Queued) -> None:
        """The item as a unit of its own: the answer it would have had unbatched."""
        token = set_request_id(item.request_id)
        try:
            value = await item.unit(item.work, *item.args)
        except Exception as exc:  # the request's own answer, raised where it awaits
            _settle(item, error=exc)
        else:
            _settle(item, value=value)
        finally:
            reset_request_id(token)


def _run_batch(session: Session, batch: list[_Queued]) -> list[Any]:
    outcomes: list[Any] = []
    try:
        try:  # every caller of the batch in one query
            callers = principals_from_tokens(
                session, list(dict.fromkeys(item.unit.credential for item in batch)))
        except BaseException as exc:
            _discard(session)
            raise _Broken(0, exc) from exc
        for index, item in enumerate(batch):
            set_request_id(item.request_id)
            principal = callers[item.unit.credential]
            if isinstance(principal, AppError):  # refused before it wrote anything
                outcomes.append(_Refused(principal))
                continue
            item.unit.request.state.principal = principal
            try:
                outcomes.append(item.work(session, principal, *item.args))
            except BaseException as exc:
                _discard(session)
                raise _Broken(index, exc) from exc
        try:
            session.commit()
        except BaseException as exc:
            _discard(session)
            raise _Broken(None, exc) from exc
        return outcomes
    finally:
        set_request_id(None)
        session.close()


def _settle(item: _Queued, value: Any = None, error: BaseException | None = None) -> None:
    if item.future.done():  # the request went away; its work's outcome stands
        return
    if error is not None:
        item.future.set_exception(error)
    else:
        item.future.set_result(value)


def _batcher(app: Any, loop: asyncio.AbstractEventLoop) -> UnitBatcher:
    if not hasattr(app.state, "unit_batchers"):
        app.state.unit_batchers = {}
    batchers: dict[asyncio.AbstractEventLoop, UnitBatcher] = app.state.unit_batchers
    batcher = batchers.get(loop)
    if batcher is None:
        settings = get_settings()
        batcher = batchers[loop] = UnitBatcher(settings.unit_batch_max,
                                               settings.unit_batches_running)
    return batcher


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
