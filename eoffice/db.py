"""Engine and sessions. Only the request or task boundary commits; services only flush."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Generic, TypeVar

import anyio.to_thread
from sqlalchemy import event, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_only
from sqlalchemy.util.concurrency import in_greenlet
from sqlmodel import Session, create_engine

from eoffice.rows import insert_from_recordset, json_rows, same_columns
from eoffice.settings import get_settings

T = TypeVar("T")


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine per database URL per process (workers reset it after fork)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets the worker read while the API writes; foreign keys are off by default.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            # pysqlite's own transaction handling defers BEGIN; take control so that
            # write transactions start with BEGIN IMMEDIATE and cannot deadlock on upgrade.
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, **_pool_options())


def _pool_options() -> dict[str, Any]:
    settings = get_settings()
    return {"pool_pre_ping": True, "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_max_overflow}


def unit_engine_for(url: str) -> AsyncEngine | None:
    """An asyncio engine on the same PostgreSQL database (psycopg), for the units of work
    that run on the event loop (deps.UnitOfWork); None for other databases.

    Made and disposed by the application's lifespan, on its event loop: its connections
    belong to that loop. The sync engine stays for everything else: an API process holds
    at most twice EOFFICE_DB_POOL_SIZE + EOFFICE_DB_MAX_OVERFLOW connections.
    """
    if make_url(url).drivername != "postgresql+psycopg":
        return None
    return create_async_engine(url, **_pool_options())


def offload_blocking(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `function` (blocking I/O: files, fsync, a blob store's network) from code that
    may run in a unit of work on the event loop: there in a worker thread, so the loop
    serves other requests meanwhile; anywhere else (request threads, tasks, CLI) directly.
    """
    if in_greenlet():
        call = functools.partial(function, *args, **kwargs)
        return await_only(anyio.to_thread.run_sync(call))  # type: ignore[no-any-return]
    return function(*args, **kwargs)


def start_blocking(function: Callable[..., T], *args: Any) -> Callable[[], T]:
    """Start blocking I/O and return what waits for its result: in a unit of work on the
    event loop, the call runs in a worker thread meanwhile (the unit's statements go on);
    anywhere else it runs at once."""
    if in_greenlet():
        import asyncio

        future = asyncio.get_running_loop().run_in_executor(
            None, functools.partial(function, *args))
        return lambda: await_only(future)  # type: ignore[no-any-return]
    result = function(*args)
    return lambda: result


def get_engine() -> Engine:
    """The engine for the configured database."""
    return engine_for(get_settings().database_url)


def new_session() -> Session:
    """A session that does not expire objects on commit (responses read them afterwards)."""
    return Session(get_engine(), expire_on_commit=False)


@contextmanager
def task_session() -> Iterator[Session]:
    """The task boundary: commit on success, roll back on error."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Drop inherited connections (called in each forked worker process)."""
    for url in list(_cached_urls()):
        engine_for(url).dispose(close=False)
    engine_for.cache_clear()


def _cached_urls() -> list[str]:
    settings = get_settings()
    return [settings.database_url]


# --- rows written at commit --------------------------------------------------------------

_DEFERRED = "eoffice_deferred_rows"
# Run at the outermost commit, in this order, before the deferred rows are written: steps
# that add rows of their own (the statistics enqueue theirs) register here rather than
# listening to before_commit themselves, whose order between modules is import order.
BEFORE_COMMIT_STEPS: list[Callable[[Session], None]] = []
_COMMIT_WAITS = "eoffice_commit_waits"


def wait_before_commit(session: Session, wait: Callable[[], None]) -> None:
    """A step's work that runs while the deferred rows are written (start_blocking) and
    must be done before the database commits: `wait` is called last, after them."""
    session.info.setdefault(_COMMIT_WAITS, []).append(wait)


def defer_insert(session: Session, model: Any, row: dict[str, Any]) -> None:
    """Insert `row` when the transaction commits, with every other deferred row of its
    table in one statement.

    For append-only rows nobody reads back in the same transaction (audit entries, outbox
    messages): a request's entries cost one INSERT instead of one per flush, and no ORM
    object. Rolled back with the transaction like any other write.
    """
    tables: dict[Any, list[dict[str, Any]]] = session.info.setdefault(_DEFERRED, {})
    tables.setdefault(model, []).append(row)


@event.listens_for(Session, "before_commit")
def _write_deferred(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint: the outermost commit writes them
    for step in BEFORE_COMMIT_STEPS:
        step(session)
    tables = session.info.pop(_DEFERRED, None)
    if tables:
        _insert_deferred(session, [(model.__table__, rows) for model, rows in tables.items()])
    for wait in session.info.pop(_COMMIT_WAITS, ()):
        wait()


def _insert_deferred(session: Session, tables: list[tuple[Any, list[dict[str, Any]]]]) -> None:
    """Every table's rows: on PostgreSQL one statement for all, elsewhere one executemany
    per table.

    The PostgreSQL statement takes each table's rows as one JSON parameter (eoffice.rows),
    so its text depends only on the tables and columns. An executemany per table cost a
    tenth of the API's CPU per create-and-send.
    """
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        for table, rows in tables:
            session.execute(table.insert(), rows)
        return
    shapes = tuple((table, same_columns(table, rows)) for table, rows in tables)
    statement = _recordset_insert(shapes, bind.dialect.identifier_preparer)
    session.execute(statement, {f"rows_{position}": json_rows(rows)
                                for position, (_, rows) in enumerate(tables)})


@lru_cache(maxsize=64)
def _recordset_insert(shapes: tuple[tuple[Any, tuple[str, ...]], ...], quoting: Any) -> Any:
    """INSERT ... SELECT FROM json_populate_recordset per table, all but the last in
    data-modifying CTEs (one statement, one round trip).

    The sub-statements run together and do not see each other's rows, so deferred tables
    must not reference each other; rows of one table get their serial ids in list order.
    """
    from sqlalchemy import text

    inserts = [insert_from_recordset(table, columns, f"rows_{position}", quoting)
               for position, (table, columns) in enumerate(shapes)]
    ctes = ", ".join(f"deferred_{position} AS ({sql})"
                     for position, sql in enumerate(inserts[:-1]))
    return text(f"WITH {ctes} {inserts[-1]}" if ctes else inserts[-1])


@event.listens_for(Session, "after_transaction_end")
def _forget_deferred(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        # The outermost transaction ended: written at its commit, or rolled back with it.
        session.info.pop(_DEFERRED, None)
        session.info.pop(_VERSIONS, None)


# --- versions of cached tables, read along with another query ----------------------------

_VERSIONS = "eoffice_noted_versions"


def note_versions(session: Session, **versions: int | None) -> None:
    """Record version rows a query of this transaction already read, so the caches behind
    them need no read of their own."""
    noted: dict[str, int] = session.info.setdefault(_VERSIONS, {})
    noted.update({name: value for name, value in versions.items() if value is not None})


def version_columns() -> list[Any]:
    """Every cache's version as a labelled scalar subquery, for the query that starts nearly
    every request (the caller's lookup) to read along: one statement fewer per cache.
    Hand its result row to note_versions_from."""
    return [select(cache.version_table.c.version).where(cache.version_table.c.id == 1)
            .scalar_subquery().label(cache.column_label) for cache in VersionedCache.registry]


def note_versions_from(session: Session, row: Any) -> None:
    note_versions(session, **{cache.name: getattr(row, cache.column_label, None)
                              for cache in VersionedCache.registry})


def noted_version(session: Session, name: str) -> int | None:
    return session.info.get(_VERSIONS, {}).get(name)  # type: ignore[no-any-return]


def forget_version(session: Session, name: str) -> None:
    """This transaction moved the version: what was read before no longer holds."""
    session.info.get(_VERSIONS, {}).pop(name, None)


class VersionedCache(Generic[T]):
    """What `load` reads, cached per process and database behind a one-row version table
    that every flush writing a `watched` row moves.

    The version is a random number, not a counter: two databases reached at the same URL (a
    restore, a recreated test database) do not share one. A transaction that wrote watched
    rows reads them itself and leaves the cache alone, so a rollback never reaches it.
    Where a query of the transaction already read the version (version_columns), none more.
    """

    registry: list[VersionedCache[Any]] = []

    def __init__(self, name: str, version_model: Any, watched: type,
                 load: Callable[[Session], T]) -> None:
        self.name = name
        self.column_label = f"{name}_version"
        self.version_table = version_model.__table__
        self.watched = watched
        self.load = load
        self._wrote_key = f"eoffice_wrote_{name}"
        self._by_database: dict[str, tuple[int, T]] = {}
        event.listen(Session, "before_flush", self._bump)
        event.listen(Session, "after_transaction_end", self._forget)
        VersionedCache.registry.append(self)

    def wrote(self, session: Session) -> bool:
        """Whether this transaction has written (or is about to flush) watched rows."""
        return bool(session.info.get(self._wrote_key)) or any(
            isinstance(row, self.watched)
            for row in (*session.new, *session.dirty, *session.deleted))

    def get(self, session: Session) -> T:
        if self.wrote(session):
            return self.load(session)
        version = noted_version(session, self.name)
        if version is None:
            table = self.version_table
            version = session.connection().execute(
                select(table.c.version).where(table.c.id == 1)).scalar()
            if version is None:
                return self.load(session)
            note_versions(session, **{self.name: version})
        key = session.get_bind().engine.url.render_as_string(hide_password=True)
        cached = self._by_database.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        # The version was read first, so what is loaded now is at least that new.
        fresh = self.load(session)
        self._by_database[key] = (version, fresh)
        return fresh

    def _bump(self, session: Session, _context: Any, _instances: Any) -> None:
        if any(isinstance(row, self.watched)
               for row in (*session.new, *session.dirty, *session.deleted)):
            table = self.version_table
            session.connection().execute(table.update().where(table.c.id == 1)
                                         .values(version=secrets.randbits(62)))
            session.info[self._wrote_key] = True
            forget_version(session, self.name)

    def _forget(self, session: Session, transaction: Any) -> None:
        if transaction.parent is None:
            session.info.pop(self._wrote_key, None)
