"""`eoffice audit verify|anchor` and `eoffice trust add|list|remove|sync|history`."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

audit_app = typer.Typer(help="Audit trail: check the hash chain, anchor it with a timestamp",
                        no_args_is_help=True)
trust_app = typer.Typer(help="Trust store: the certificates signatures must chain to",
                        no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False
                 ) -> None:
    """Check every link and anchor; exit 1 naming the first broken entry."""
    from eoffice.audit.service import describe, verify_chain
    from eoffice.db import new_session

    with new_session() as session:
        check = verify_chain(session)
    if as_json:
        typer.echo(json.dumps({**check.as_dict(), "message": describe(check)}))
    else:
        typer.echo(describe(check), err=not check.ok)
    raise typer.Exit(0 if check.ok else 1)


@audit_app.command("anchor")
def audit_anchor() -> None:
    """Take an RFC 3161 timestamp over the newest entry now (as the beat task does)."""
    from pyhanko.sign.timestamps.common_utils import TimestampRequestError

    from eoffice.audit import service
    from eoffice.db import task_session

    with task_session() as session:
        head = service.chain_head(session)
    if head is None:
        typer.echo("the audit trail is empty: nothing to anchor")
        return
    url = service.anchor_tsa_url()
    try:
        token = service.request_timestamp(head[1], url)
    except (TimestampRequestError, OSError) as exc:
        typer.echo(f"TSA {url} unreachable: {exc}", err=True)
        raise typer.Exit(1) from exc
    with task_session() as session:
        anchor = service.store_anchor(session, head[0], head[1], token, url)
        typer.echo(f"anchored entry {head[0]} (timestamp {anchor.gen_time})")


def _print_anchor(row: dict[str, object]) -> None:
    state = "active " if row["active"] else "removed"
    typer.echo(f"{state} {row['fingerprint']} {row['kind']:12} {row['source']:24} "
               f"{row['subject']}")


@trust_app.command("list")
def trust_list(include_removed: Annotated[bool, typer.Option("--all",
                                                             help="also removed anchors")]
               = False) -> None:
    """Print the trust anchors and the store's state hash."""
    from sqlmodel import col, select

    from eoffice.db import task_session
    from eoffice.models import TrustAnchor
    from eoffice.trust import service

    with task_session() as session:
        service.ensure_synced(session)
        query = select(TrustAnchor).order_by(col(TrustAnchor.added_at))
        if not include_removed:
            query = query.where(col(TrustAnchor.removed_at).is_(None))
        for anchor in session.exec(query).all():
            _print_anchor(service.anchor_out(anchor))
        typer.echo(f"state {service.current_state(session)}")


@trust_app.command("add")
def trust_add(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                                   readable=True)]) -> None:
    """Trust the certificate(s) in a PEM or DER file."""
    from eoffice.db import task_session
    from eoffice.errors import AppError
    from eoffice.trust import service

    try:
        with task_session() as session:
            results = service.add_from_bytes(session, file.read_bytes(), actor="cli",
                                             source="cli", name=file.name)
            for anchor, changed in results:
                typer.echo(f"{'added' if changed else 'already trusted'}: "
                           f"{anchor.fingerprint} {anchor.subject}")
    except AppError as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(2) from exc


@trust_app.command("remove")
def trust_remove(fingerprint: str) -> None:
    """Stop trusting the anchor with this SHA-256 fingerprint."""
    from eoffice.db import task_session
    from eoffice.errors import AppError
    from eoffice.trust import service

    try:
        with task_session() as session:
            anchor = service.remove(session, fingerprint, actor="cli", source="cli")
            typer.echo(f"removed: {anchor.fingerprint} {anchor.subject}")
    except AppError as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(1) from exc


@trust_app.command("sync")
def trust_sync() -> None:
    """Load the trust folder (EOFFICE_TRUST_DIR) and the development root into the store."""
    from eoffice.db import task_session
    from eoffice.trust import service

    with task_session() as session:
        result = service.sync(session, actor="cli")
    for fp in result.added:
        typer.echo(f"added: {fp}")
    for fp in result.removed:
        typer.echo(f"removed: {fp}")
    for error in result.errors:
        typer.echo(f"skipped: {error}", err=True)
    typer.echo(f"{len(result.added)} added, {len(result.removed)} removed")


@trust_app.command("history")
def trust_history(fingerprint: str,
                  at: Annotated[str | None, typer.Option(help="ISO 8601 moment")] = None
                  ) -> None:
    """Was this certificate trusted at a moment (default: now)?"""
    from eoffice.db import task_session
    from eoffice.errors import AppError
    from eoffice.models import utcnow
    from eoffice.trust import service

    try:
        moment = datetime.fromisoformat(at) if at else utcnow()
    except ValueError as exc:
        raise typer.BadParameter("use ISO 8601, e.g. 2026-01-31T12:00:00+07:00",
                                 param_hint="--at") from exc
    try:
        with task_session() as session:
            answer = service.trusted_at(session, fingerprint, moment)
    except AppError as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(answer, default=str, ensure_ascii=False))


def register(app: typer.Typer) -> None:
    """Add the `audit` and `trust` command groups."""
    app.add_typer(audit_app, name="audit")
    app.add_typer(trust_app, name="trust")
