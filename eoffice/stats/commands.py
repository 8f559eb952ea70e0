"""`eoffice stats ...`: reconcile or rebuild the exchange-rate aggregates."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Attach the `stats` command group to the main CLI."""
    stats_app = typer.Typer(help="Electronic-exchange statistics", no_args_is_help=True)
    app.add_typer(stats_app, name="stats")

    @stats_app.command("reconcile")
    def reconcile(check_only: Annotated[bool, typer.Option(
            "--check-only", help="report drift without fixing it")] = False) -> None:
        """Compare the aggregates with a full recomputation; fix and log any drift."""
        from eoffice.db import task_session
        from eoffice.stats.service import reconcile as run_reconcile

        with task_session() as session:
            run = run_reconcile(session, fix=not check_only)
            result = {"cells_checked": run.cells_checked, "cells_fixed": run.cells_fixed,
                      "items_fixed": run.items_fixed, "fixed": not check_only}
        typer.echo(json.dumps(result))
        if check_only and (result["cells_fixed"] or result["items_fixed"]):
            raise typer.Exit(1)

    @stats_app.command("rebuild")
    def rebuild() -> None:
        """Drop and rebuild every aggregate from the raw rows (bulk)."""
        from eoffice.db import task_session
        from eoffice.stats.service import rebuild as run_rebuild

        with task_session() as session:
            written = run_rebuild(session)
        typer.echo(json.dumps({"items": written}))
