"""A real Celery worker (embedded SQLite broker, or Redis + PostgreSQL) keeps the figures
current: the API changes after a send, an acknowledgement and a recall."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env
from tests.stats.helpers import send

ROOT = Path(__file__).resolve().parents[2]
COMMUNE, DISTRICT = "clerk.minhlang", "clerk.vuthu"


def _wait(check: Callable[[], Any], what: str, timeout: float = 40) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}: {last}")


@contextmanager
def _worker(env_vars: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app:celery_app", "worker",
         "-Q", "fast,crypto,stats", "--pool", "solo", "--without-gossip", "--without-mingle",
         "--loglevel", "WARNING"], cwd=ROOT, env={**os.environ, **env_vars})
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _drive(env: Env, broker: str) -> None:
    from eoffice.settings import get_settings
    from tests.helpers import point_producer_at, restore_producer

    values = {"EOFFICE_TASKS_EAGER": "false", "EOFFICE_BROKER_URL": broker,
              "EOFFICE_BROKER_POLLING_INTERVAL": "0.1"}
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    get_settings.cache_clear()
    point_producer_at(broker)
    try:
        _run(env, values)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        restore_producer()


def _run(env: Env, values: dict[str, str]) -> None:
    from fastapi.testclient import TestClient

    from eoffice.app import create_app
    from tests.helpers import login

    with _worker(values) as worker:
        with TestClient(create_app()) as client:
            def headers(name: str) -> dict[str, str]:
                return login(client, name, env.password(name))

            auditor, district = headers("auditor"), headers(DISTRICT)

            def figures() -> dict[str, Any]:
                response = client.get("/api/v1/stats/exchange", headers=auditor)
                assert response.status_code == 200, response.text
                return response.json()

            assert figures()["total"] == 0
            sent = send(client, headers(COMMUNE), [env.user(DISTRICT)["agency_code"]])
            body = _wait(lambda: (b := figures())["electronic"] == 2 and b, "send + delivery")
            assert body["outgoing"]["electronic"] == 1 and body["incoming"]["electronic"] == 1
            delivery = sent["deliveries"][0]["id"]
            _wait(lambda: client.get(f"/api/v1/deliveries/{delivery}",
                                     headers=district).json().get("status_code") == "01",
                  "arrival")
            ok = client.post(f"/api/v1/deliveries/{delivery}/status", headers=district,
                             json={"code": "03"})
            assert ok.status_code == 200, ok.text
            _wait(lambda: figures()["acknowledgement"]["on_time"] == 1, "acknowledgement")
            recall = client.post(f"/api/v1/documents/{sent['document_id']}/recall",
                                 headers=headers(COMMUNE), json={"reason": "Nhầm nơi nhận"})
            assert recall.status_code == 200, recall.text
            body = _wait(lambda: (b := figures())["outgoing"]["recalled"] == 1 and b, "recall")
            assert body["outgoing"]["electronic"] == 0
            assert worker.poll() is None


def test_sqlite_broker_and_worker(sqlite_env: Env) -> None:
    _drive(sqlite_env, f"sqla+sqlite:///{sqlite_env.data_dir / 'broker.db'}")


@pytest.mark.integration
def test_redis_broker_and_postgres(pg_env: Env) -> None:
    # A Redis database of its own, flushed: tasks other tests left behind must not be consumed.
    from tests.integration.conftest import redis_url

    _drive(pg_env, redis_url())
