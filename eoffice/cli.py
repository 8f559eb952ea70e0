"""The `eoffice` command: serve, worker, beat, demo, migrate and the domain commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from eoffice.plugins import optional_import

app = typer.Typer(help="eoffice: electronic document exchange for Vietnamese state bodies",
                  no_args_is_help=True, add_completion=False)
demo_app = typer.Typer(help="Demo data of this installation", no_args_is_help=True)
app.add_typer(demo_app, name="demo")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="data folder (EOFFICE_DATA_DIR)")]


def _apply_flags(data_dir: Path | None = None, **values: object) -> None:
    """A flag wins over the environment: write it there before settings are read."""
    from eoffice.settings import get_settings

    if data_dir is not None:
        os.environ["EOFFICE_DATA_DIR"] = str(data_dir)
    for key, value in values.items():
        if value is not None:
            os.environ[f"EOFFICE_{key.upper()}"] = str(value)
    get_settings.cache_clear()


def prepare_database() -> bool:
    """Migrate, then seed the demo province on first start; True if it seeded."""
    from eoffice.agencies.demo import seed
    from eoffice.db import new_session
    from eoffice.migrate import upgrade
    from eoffice.settings import get_settings

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    if not settings.seed_demo:
        return False
    with new_session() as session:
        seeded = seed(session, settings.data_dir)
        session.commit()
    return seeded


def sync_trust_store() -> None:
    """Load the trust-store folder (and the dev PKI root outside production) at start."""
    from eoffice.db import new_session

    trust = optional_import("eoffice.trust.service")
    if trust is None:
        return
    with new_session() as session:
        trust.ensure_synced(session)
        session.commit()


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Apply database migrations."""
    _apply_flags(data_dir)
    from eoffice.migrate import upgrade
    from eoffice.settings import get_settings

    get_settings().data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(get_settings().database_url)
    typer.echo("database is up to date")


def _worker_command(queues: str, beat: bool, concurrency: int) -> list[str]:
    command = [sys.executable, "-m", "celery", "-A", "workers.celery_app:celery_app", "worker",
               "-Q", queues, "--concurrency", str(concurrency), "--loglevel", "INFO",
               "--without-gossip", "--without-mingle", "-n", f"eoffice-{os.getpid()}@%h"]
    if beat:
        command += ["-B", "--schedule", str(_beat_schedule_path())]
    return command


def _beat_schedule_path() -> Path:
    from eoffice.settings import get_settings

    return get_settings().data_dir / "celerybeat-schedule"


@app.command()
def serve(host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="port")] = 8000,
          data_dir: DataDir = None,
          worker: Annotated[bool, typer.Option(help="start the embedded Celery worker")] = True,
          ) -> None:
    """Migrate, seed demo data on first start, start the app and an embedded worker."""
    _apply_flags(data_dir, pki_base_url=None)
    if "EOFFICE_PKI_BASE_URL" not in os.environ:
        os.environ["EOFFICE_PKI_BASE_URL"] = f"http://{host}:{port}/pki"
    from eoffice.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    seeded = prepare_database()
    _init_dev_pki_if_possible(settings.pki_dir)
    sync_trust_store()
    process = None
    if worker:
        process = subprocess.Popen(_worker_command("fast,crypto,stats", True, 2),
                                   env=os.environ.copy())
    url = f"http://{host}:{port}/"
    typer.echo(f"eoffice is running at {url}  (data: {settings.data_dir.resolve()})")
    if seeded:
        typer.echo("demo accounts: eoffice demo users --format json"
                   f" --data-dir {settings.data_dir}")
    try:
        import uvicorn

        uvicorn.run("eoffice.app:app_factory", factory=True, host=host, port=port,
                    log_level="info")
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _init_dev_pki_if_possible(pki_dir: Path | None) -> None:
    """Give the embedded demo a development PKI so signing works out of the box."""
    if pki_dir is None or (pki_dir / "root.pem").exists():
        return
    pki = optional_import("eoffice.signing.pki")
    if pki is None:
        return
    init = getattr(pki, "init_pki", None)
    if init is not None:
        init(pki_dir)
        typer.echo(f"development PKI created in {pki_dir}")


@app.command("worker")
def worker_command(queues: Annotated[str, typer.Option(help="queues to consume")]
                   = "fast,crypto,stats",
                   concurrency: Annotated[int, typer.Option(help="processes")] = 2) -> None:
    """Run a Celery worker (production)."""
    os.execv(sys.executable, _worker_command(queues, False, concurrency))


@app.command()
def beat() -> None:
    """Run Celery beat (outbox relay, reconciliation, re-verification)."""
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A",
                              "workers.celery_app:celery_app", "beat", "--loglevel", "INFO",
                              "--schedule", str(_beat_schedule_path())])


@demo_app.command("users")
def demo_users(fmt: Annotated[str, typer.Option("--format", help="json or text")] = "text",
               data_dir: DataDir = None) -> None:
    """The demo accounts of this installation."""
    _apply_flags(data_dir)
    from eoffice.agencies.demo import read_demo_users
    from eoffice.settings import get_settings

    users = read_demo_users(get_settings().data_dir)
    if not users:
        typer.echo("no demo data here: run `eoffice serve` first", err=True)
        raise typer.Exit(1)
    if fmt == "json":
        typer.echo(json.dumps(users, ensure_ascii=False))
    elif fmt == "text":
        for user in users:
            typer.echo(f"{user['username']:28} {user['password']:16} {user['role']:8} "
                       f"{user['agency_code']} ({user['agency_level']})")
    else:
        typer.echo("--format must be json or text", err=True)
        raise typer.Exit(2)


def _register_domain_commands() -> None:
    for module_name in ("eoffice.signing.commands", "eoffice.verification.commands",
                        "eoffice.audit.commands", "eoffice.stats.commands"):
        module = optional_import(module_name)
        if module is not None:
            module.register(app)


_register_domain_commands()

if __name__ == "__main__":
    app()
