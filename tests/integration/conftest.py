"""A real Celery worker process beside the app: embedded SQLite broker, or Redis in CI."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, REDIS_URL, Env
from tests.helpers import point_producer_at, restore_producer

ROOT = Path(__file__).resolve().parents[2]


def redis_url() -> str:
    """A Redis database for this test run, or a failure (CI) / skip (laptop)."""
    if not REDIS_URL:
        if IN_CI:
            pytest.fail("CI=true but EOFFICE_TEST_BROKER_URL is not set")
        pytest.skip("Redis not configured (set EOFFICE_TEST_BROKER_URL)")
    import redis

    base = REDIS_URL.rsplit("/", 1)[0] if REDIS_URL.count("/") > 2 else REDIS_URL
    url = f"{base}/{random.randint(1, 15)}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"Redis unreachable in CI: {exc}")
        pytest.skip(f"Redis unreachable: {exc}")
    redis.Redis.from_url(url).flushdb()
    return url


class Worker:
    """A `celery worker` subprocess with the test's settings; kill() and start() again."""

    def __init__(self, env_vars: dict[str, str], log: Path) -> None:
        self.env_vars = env_vars
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        environment = {**os.environ, **self.env_vars}
        handle = open(self.log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app:celery_app", "worker",
             "-Q", "fast,crypto,stats", "--concurrency", "2", "--loglevel", "INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-n", f"test-{random.randint(0, 1 << 30)}@%h"],
            cwd=ROOT, env=environment, stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        # The pool processes and their verifiers too, even after a kill -9 of the main
        # process: a stray worker would consume a later test's tasks.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_for(predicate: Callable[[], Any], timeout: float = 45.0, interval: float = 0.2,
             message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")


def start_worker(env: Env, broker_url: str, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    from eoffice.settings import get_settings

    settings = {"EOFFICE_DATA_DIR": str(env.data_dir), "EOFFICE_DATABASE_URL": env.database_url,
                "EOFFICE_BROKER_URL": broker_url, "EOFFICE_TASKS_EAGER": "false",
                "EOFFICE_BROKER_POLLING_INTERVAL": "0.1", "EOFFICE_ENVIRONMENT": "test"}
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    point_producer_at(broker_url)
    worker = Worker(settings, tmp_path / "worker.log")
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        restore_producer()


@pytest.fixture
def embedded_worker(sqlite_env: Env, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    """SQLite database + kombu's SQLAlchemy broker on SQLite: the embedded default."""
    broker = f"sqla+sqlite:///{sqlite_env.data_dir / 'broker.db'}"
    yield from start_worker(sqlite_env, broker, tmp_path, monkeypatch)


@pytest.fixture
def redis_worker(pg_env: Env, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    """PostgreSQL + Redis: the production path."""
    yield from start_worker(pg_env, redis_url(), tmp_path, monkeypatch)
