"""The production compose file, checked structurally (no Docker engine on test machines)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _known_settings() -> set[str]:
    from eoffice.settings import Settings

    return {f"EOFFICE_{name.upper()}" for name in Settings.model_fields}


def _ours(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith("${EOFFICE_IMAGE")


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    expected = {"api", "proxy", "worker-fast", "worker-crypto", "worker-stats", "beat",
                "postgres", "redis", "minio", "flower", "migrate"}
    assert expected <= set(compose["services"])
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_environment_uses_only_known_settings(compose: dict[str, Any], tmp_path: Path) -> None:
    known = _known_settings()
    for name, service in compose["services"].items():
        env = _env(service)
        for key in env:
            if key.startswith("EOFFICE_") or _ours(service):
                assert key in known, f"{name} sets {key}, which no setting reads"
    example = ROOT / "deploy" / "eoffice.env.example"
    for line in example.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key = line.split("=", 1)[0]
            assert key in known, f"{example.name} sets unknown {key}"


def test_environment_values_parse(compose: dict[str, Any], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The api's environment builds a valid production Settings (secrets from files)."""
    from eoffice.settings import Settings

    env = _env(compose["services"]["api"])
    for key, value in env.items():
        value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
        if value.startswith("/run/secrets/"):
            secret = tmp_path / Path(value).name
            secret.write_text(f"value-of-{secret.name}-0123456789abcdef\n")
            value = str(secret)
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.environment == "production" and settings.blob_backend == "s3"
    assert settings.database_url.startswith("postgresql+psycopg://eoffice:value-of-db_password")
    assert settings.s3_secret_key == "value-of-s3_secret_key-0123456789abcdef"
    assert settings.broker_url.startswith("redis://")


def test_secrets_come_from_files(compose: dict[str, Any]) -> None:
    declared = compose["secrets"]
    for name, secret in declared.items():
        assert secret["file"].startswith("deploy/secrets/"), name
    for name, service in compose["services"].items():
        for secret in service.get("secrets", []):
            assert secret in declared, f"{name} uses undeclared secret {secret}"
        for key, value in _env(service).items():
            # No literal password, key or token in the environment: only *_FILE pointers.
            if re.search(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN", key) and not key.endswith("_FILE"):
                pytest.fail(f"{name} puts a secret in the environment: {key}")
            assert not re.search(r"://[^/@:]+:[^/@]+@", value), f"{name}: password in {key}"
    ignored = (ROOT / "deploy" / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignored


def test_one_worker_per_queue_class_and_one_beat(compose: dict[str, Any]) -> None:
    from workers.celery_app import QUEUES

    consumed: set[str] = set()
    for name, service in compose["services"].items():
        command = service.get("command") or []
        if name.startswith("worker-"):
            assert command[:2] == ["eoffice", "worker"], name
            queues = command[command.index("--queues") + 1].split(",")
            assert queues == [name.removeprefix("worker-")], name
            consumed.update(queues)
            assert _ours(service) and "migrate" in service["depends_on"], name
    assert consumed == set(QUEUES)
    assert compose["services"]["beat"]["command"] == ["eoffice", "beat"]
    assert "deploy" not in compose["services"]["beat"], "beat must never be replicated"
    api = compose["services"]["api"]
    assert "ports" not in api, "api replicas sit behind the proxy (no fixed host port)"
    assert "--workers" not in api["command"]
    redis_cmd = compose["services"]["redis"]["command"]
    assert "--appendonly" in redis_cmd and redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"


def test_dockerfile_is_consistent() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "uv sync --frozen --no-dev" in dockerfile
    assert "python:3.11" in dockerfile
    copied = {word for line in dockerfile.splitlines()
              if line.startswith("COPY ") and "--from" not in line
              for word in shlex.split(line)[1:-1]}
    for needed in ("eoffice", "workers", "migrations", "alembic.ini", "uv.lock",
                   "pyproject.toml", "certs"):
        assert needed in copied, needed
    for path in ("eoffice", "workers", "migrations", "alembic.ini", "uv.lock", "certs"):
        assert (ROOT / path).exists(), path
    assert "USER eoffice" in dockerfile, "the service does not run as root"


def test_postgres_admits_the_api_replicas_connections(compose: dict[str, Any]) -> None:
    """Each api process holds up to two pools (see eoffice.db.unit_engine_for): PostgreSQL's
    max_connections must admit several replicas of it beside the workers."""
    env = compose["services"]["api"]["environment"]
    per_api = 2 * (int(env["EOFFICE_DB_POOL_SIZE"]) + int(env["EOFFICE_DB_MAX_OVERFLOW"]))
    command = compose["services"]["postgres"]["command"]
    allowed = int(command[command.index("-c") + 1].removeprefix("max_connections="))
    assert allowed >= 4 * per_api + 50, (allowed, per_api)


def test_the_image_installs_what_the_event_loop_units_need() -> None:
    """The image installs the locked runtime dependencies only (--no-dev). The units of work
    on PostgreSQL run in greenlets (SQLAlchemy's asyncio extension), and greenlet came in
    only through a dev tool (playwright) before sqlalchemy[asyncio] was asked for."""
    import tomllib

    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = {package["name"]: package for package in lock["package"]}
    runtime = packages["eoffice"]["dependencies"]
    assert {"name": "sqlalchemy", "extra": ["asyncio"]} in runtime
    greenlet_for = packages["sqlalchemy"]["optional-dependencies"]["asyncio"]
    assert any(dependency["name"] == "greenlet" for dependency in greenlet_for)
