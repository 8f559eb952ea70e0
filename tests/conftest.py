"""Test databases are built by running the migrations once; each test gets its own copy.

SQLite always; PostgreSQL too when EOFFICE_TEST_DATABASE_URL is set (CI sets it, and under
CI=true a missing or unreachable PostgreSQL fails the run instead of skipping).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

os.environ.setdefault("EOFFICE_ENVIRONMENT", "test")
os.environ["EOFFICE_ENVIRONMENT"] = "test"
# Tests read the audit chain and task counters right after acting: seal and count at once
# (test_audit_batching covers the batched defaults).
os.environ.setdefault("EOFFICE_AUDIT_SEAL_INTERVAL_SECONDS", "0")
os.environ.setdefault("EOFFICE_TASK_STATS_FLUSH_SECONDS", "0")

from tests.helpers import login  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_URL = os.environ.get("EOFFICE_TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("EOFFICE_TEST_BROKER_URL", "")
SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def _reset_settings() -> None:
    from eoffice.db import engine_for
    from eoffice.settings import get_settings

    get_settings.cache_clear()
    engine_for.cache_clear()


def _set_env(values: dict[str, str]) -> dict[str, str | None]:
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    _reset_settings()
    return previous


def _restore_env(previous: dict[str, str | None]) -> None:
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _reset_settings()


def _seed(data_dir: Path, url: str) -> None:
    from eoffice.agencies.demo import seed
    from eoffice.db import new_session
    from eoffice.migrate import upgrade

    previous = _set_env({"EOFFICE_DATA_DIR": str(data_dir), "EOFFICE_DATABASE_URL": url})
    try:
        upgrade(url)
        with new_session() as session:
            seed(session, data_dir)
            session.commit()
    finally:
        from eoffice.db import get_engine

        get_engine().dispose()
        _restore_env(previous)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    template = tmp_path_factory.mktemp("template")
    _seed(template, f"sqlite:///{template / 'eoffice.db'}")
    return template


def _pg_admin_url() -> str:
    from sqlalchemy.engine import make_url

    return make_url(PG_URL).set(database="postgres").render_as_string(hide_password=False)


def _pg_exec(sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


class _Dropper:
    """Drops finished test databases on a background thread: DROP DATABASE waits for a
    checkpoint, which need not hold up the next test."""

    def __init__(self) -> None:
        import queue
        import threading

        self.jobs: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (name := self.jobs.get()) is not None:
            try:
                _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception:  # a leftover test database is harmless
                pass

    def drop(self, name: str) -> None:
        self.jobs.put(name)

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=600)


_dropper: _Dropper | None = None


def drop_later(name: str) -> None:
    global _dropper
    if _dropper is None:
        _dropper = _Dropper()
    _dropper.drop(name)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _dropper is not None:
        _dropper.close()


def pg_available() -> bool:
    if not PG_URL:
        if IN_CI:
            pytest.fail("CI=true but EOFFICE_TEST_DATABASE_URL is not set")
        return False
    try:
        _pg_exec("SELECT 1")
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL unreachable in CI: {exc}")
        return False
    return True


@pytest.fixture(scope="session")
def pg_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if not pg_available():
        pytest.skip("PostgreSQL not configured (set EOFFICE_TEST_DATABASE_URL)")
    from sqlalchemy.engine import make_url

    name = f"eoffice_tmpl_{uuid.uuid4().hex[:8]}"
    _pg_exec(f'CREATE DATABASE "{name}"')
    data_dir = tmp_path_factory.mktemp("pg-template")
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    _seed(data_dir, url)
    yield name, data_dir
    _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Env:
    """One test's installation: its own database, blob folder and demo accounts."""

    backend: str
    data_dir: Path
    database_url: str
    users: list[dict[str, Any]]

    def user(self, username: str) -> dict[str, Any]:
        return next(u for u in self.users if u["username"] == username)

    def password(self, username: str) -> str:
        return str(self.user(username)["password"])


def _make_env(backend: str, request: pytest.FixtureRequest, tmp_path: Path,
              extra_env: dict[str, str]) -> Iterator[Env]:
    from eoffice.agencies.demo import read_demo_users

    data_dir = tmp_path / "data"
    cleanup: str | None = None
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copytree(template, data_dir)
        url = f"sqlite:///{data_dir / 'eoffice.db'}"
    else:
        from sqlalchemy.engine import make_url

        template_name, template_dir = request.getfixturevalue("pg_template")
        name = f"eoffice_t_{uuid.uuid4().hex[:10]}"
        _pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
        cleanup = name
        shutil.copytree(template_dir, data_dir)
        url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    env = {"EOFFICE_DATA_DIR": str(data_dir), "EOFFICE_DATABASE_URL": url,
           "EOFFICE_TASKS_EAGER": "true", "EOFFICE_SEED_DEMO": "false"}
    env.update(extra_env)
    previous = _set_env(env)
    try:
        yield Env(backend, data_dir, url, read_demo_users(data_dir))
    finally:
        from eoffice.db import get_engine

        get_engine().dispose()
        _restore_env(previous)
        if cleanup:
            drop_later(cleanup)


def _backends() -> list[Any]:
    return ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=_backends())
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """A fresh installation on each database backend."""
    yield from _make_env(request.param, request, tmp_path, {})


@pytest.fixture
def sqlite_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    yield from _make_env("sqlite", request, tmp_path, {})


@pytest.fixture
def pg_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    yield from _make_env("postgres", request, tmp_path, {})


@pytest.fixture
def client(env: Env) -> Iterator[TestClient]:
    from eoffice.app import create_app

    with TestClient(create_app()) as test_client:
        yield test_client


class Clients:
    """Signed-in API callers by username."""

    def __init__(self, client: TestClient, env: Env) -> None:
        self.client = client
        self.env = env
        self._headers: dict[str, dict[str, str]] = {}

    def headers(self, username: str) -> dict[str, str]:
        if username not in self._headers:
            self._headers[username] = login(self.client, username, self.env.password(username))
        return self._headers[username]


@pytest.fixture
def as_user(client: TestClient, env: Env) -> Clients:
    return Clients(client, env)
