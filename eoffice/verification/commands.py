"""`eoffice verify` command (registered on the main typer app by eoffice/cli.py)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from .certs import CertificateLoadError, configured_trust_store, load_certificates
from .engine import verify_files
from .options import VerifyOptions
from .report import TOTAL_PASSED


class RevocationChoice(StrEnum):
    """Values of --revocation."""

    require = "require"
    soft = "soft"
    off = "off"


class OutputFormat(StrEnum):
    """Values of --format."""

    json = "json"
    text = "text"


def _text(report: dict[str, Any]) -> str:
    lines = [f"{report['file']}: {report['indication']}"
             + (f" / {report['sub_indication']}" if report.get("sub_indication") else "")
             + f"  ({report.get('elapsed_ms', 0)} ms)"]
    for err in report.get("errors") or []:
        lines.append(f"  ! {err}")
    for sig in report.get("signatures", []):
        verdict = sig["indication"] + (f"/{sig['sub_indication']}" if sig["sub_indication"] else "")
        lines.append(f"  - {sig['field']} [{sig.get('type', 'signature')}]: {verdict}")
        lines.append(
            f"      signer: {sig.get('signer')}  signed: {sig.get('signing_time')}"
        )
        lines.append(
            f"      intact={sig.get('intact')} valid={sig.get('valid')} "
            f"trusted={sig.get('trusted')} coverage={sig.get('coverage')} "
            f"changes={sig.get('modification_level')}"
        )
        for err in sig.get("errors") or []:
            lines.append(f"      ! {err}")
    if "decree30" in report:
        d30 = report["decree30"]
        status = "conformant" if d30.get("conformant") else "NOT conformant"
        lines.append(f"  Decree 30: {status} {'; '.join(d30.get('reasons', []))}")
    return "\n".join(lines)


def verify(
    files: Annotated[
        list[Path],
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="Signed PDF files to verify."
        ),
    ],
    trust: Annotated[
        list[Path] | None,
        typer.Option(
            "--trust", help="Extra trust anchor (PEM or DER certificate); repeatable."
        ),
    ] = None,
    revocation: Annotated[
        RevocationChoice,
        typer.Option("--revocation", help="require | soft | off", case_sensitive=False),
    ] = RevocationChoice.require,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="json (one object per line) | text")
    ] = OutputFormat.text,
    decree30: Annotated[
        bool, typer.Option("--decree30", help="Also check Decree 30 signing order.")
    ] = False,
) -> None:
    """Verify PDF signatures; exit 0 only if every file is TOTAL_PASSED."""
    try:
        anchors = (configured_trust_store() + _settings_trust_store()
                   + load_certificates(trust or []))
    except CertificateLoadError as exc:
        raise typer.BadParameter(str(exc), param_hint="--trust") from exc
    options = VerifyOptions(
        trust_roots=anchors, revocation=revocation.value, decree30=decree30
    )
    all_passed = True
    for report in verify_files([str(f) for f in files], options):
        all_passed = all_passed and report.get("indication") == TOTAL_PASSED
        if output is OutputFormat.json:
            typer.echo(json.dumps(report, ensure_ascii=False))
        else:
            typer.echo(_text(report))
    raise typer.Exit(0 if all_passed else 1)


def _settings_trust_store() -> list[Any]:
    """Certificates in the service's trust folder (settings.trust_dir, default certs/trust)."""
    import os

    from eoffice.settings import get_settings
    from eoffice.trust.service import CERT_SUFFIXES

    folder = get_settings().trust_dir
    if not folder.is_dir() or os.environ.get("EOFFICE_TRUST_DIR") is not None:
        return []  # EOFFICE_TRUST_DIR already named this folder (read above)
    return load_certificates(sorted(p for p in folder.iterdir()
                                    if p.suffix.lower() in CERT_SUFFIXES))


def register(app: typer.Typer) -> None:
    """Add the ``verify`` command to ``app``."""
    app.command("verify")(verify)


def _standalone_app() -> typer.Typer:
    app = typer.Typer(add_completion=False)

    @app.callback()
    def _main() -> None:
        """eoffice (verification commands only)."""

    register(app)
    return app


if __name__ == "__main__":
    _standalone_app()()
