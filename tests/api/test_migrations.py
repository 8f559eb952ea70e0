"""Schema changes go through Alembic: every branch applies, reverts and matches the models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlmodel import SQLModel

import eoffice.models  # noqa: F401
from eoffice.migrate import downgrade, upgrade
from tests.conftest import PG_URL, _pg_exec, pg_available


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'schema.db'}"
        return
    if not pg_available():
        pytest.skip("PostgreSQL not configured")
    from sqlalchemy.engine import make_url

    name = f"eoffice_m_{uuid.uuid4().hex[:8]}"
    _pg_exec(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _schema_differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": False})
            diffs = compare_metadata(context, SQLModel.metadata)
    finally:
        engine.dispose()
    # SQLite cannot name or alter some constraints; indexes are compared everywhere.
    return [d for d in diffs if not (isinstance(d, tuple) and d[0] in (
        "add_constraint", "remove_constraint") and url.startswith("sqlite"))]


def test_upgrade_downgrade_upgrade_matches_models(empty_database: str) -> None:
    upgrade(empty_database)
    assert _schema_differences(empty_database) == []
    downgrade(empty_database)
    engine = create_engine(empty_database)
    tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
    engine.dispose()
    assert tables == set()
    upgrade(empty_database)
    assert _schema_differences(empty_database) == []
