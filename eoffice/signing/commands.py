"""CLI commands: `eoffice pki init|serve` and `eoffice sign` (registered by eoffice/cli.py)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer

from eoffice.signing.errors import SigningError

pki_app = typer.Typer(help="Development PKI (root, CA for state bodies, seals, users, "
                           "CRL/OCSP/TSA).", no_args_is_help=True)


@pki_app.command("init")
def pki_init(
    directory: Annotated[Path | None, typer.Option("--dir", help="Target directory "
                         "(default $EOFFICE_DATA_DIR/pki or ./var/pki)")] = None,
    base_url: Annotated[str | None, typer.Option(help="Base URL of OCSP/CRL/TSA "
                        "(default $EOFFICE_PKI_BASE_URL or http://127.0.0.1:8000/pki)")] = None,
    key_type: Annotated[str, typer.Option(help="rsa (RSA-2048) or ec (P-256)")] = "rsa",
) -> None:
    """Create the development PKI (layout fixed by DESIGN.md)."""
    from eoffice.signing.pki import default_pki_dir, init_pki

    if key_type not in ("rsa", "ec"):
        raise typer.BadParameter("key type must be rsa or ec")
    target = init_pki(directory or default_pki_dir(), base_url=base_url, key_type=key_type)
    typer.echo(f"PKI written to {target} (trust root: {target / 'root.pem'})")


@pki_app.command("serve")
def pki_serve(
    directory: Annotated[Path | None, typer.Option("--dir")] = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """Serve /pki/ocsp, /pki/crl/<name>.crl and /pki/tsa standalone."""
    import uvicorn

    from eoffice.signing.pki import default_pki_dir
    from eoffice.signing.pki_services import create_standalone_app

    pki_dir = directory or default_pki_dir()
    if not (pki_dir / "index.json").exists():
        typer.echo(f"{pki_dir} is not a PKI directory; run `eoffice pki init` first", err=True)
        raise typer.Exit(2)
    typer.echo(f"PKI services on http://{host}:{port}/pki")
    uvicorn.run(create_standalone_app(pki_dir), host=host, port=port, log_level="warning")


def _read_passphrase(passphrase_file: Path | None) -> str:
    if passphrase_file is not None:
        return passphrase_file.read_text(encoding="utf-8").rstrip("\r\n")
    return typer.prompt("Passphrase", hide_input=True)


def sign_command(
    inputs: Annotated[list[Path], typer.Argument(help="PDF files to sign")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where signed files go")],
    key: Annotated[Path, typer.Option("--key", help="PKCS#12 key file", exists=True,
                                      dir_okay=False)],
    passphrase_file: Annotated[Path | None, typer.Option(
        "--passphrase-file", exists=True, dir_okay=False,
        help="File holding the passphrase (otherwise prompted, hidden)")] = None,
    level: Annotated[str, typer.Option("--level", help="B-B, B-T, B-LT or B-LTA")] = "B-B",
    seal: Annotated[bool, typer.Option("--seal", help="Organisation signature: red seal over "
                                       "the leader's signature, or a text stamp top-right when "
                                       "the file has no leader signature (attachments)")] = False,
    number: Annotated[str | None, typer.Option(help="Number/notation for --seal, "
                                               "e.g. 15/QĐ-UBND")] = None,
    trust: Annotated[list[Path] | None, typer.Option(
        help="Trust roots for B-LT/B-LTA and the leader check (default: the dev PKI root)")] = None,
    tsa_url: Annotated[str | None, typer.Option(help="TSA URL (default from "
                                                "$EOFFICE_PKI_BASE_URL)")] = None,
) -> None:
    """Sign every input in one process with the engine the workers use."""
    from eoffice.signing import engine
    from eoffice.signing.keys import load_p12_signer
    from eoffice.signing.pki import default_pki_dir

    try:
        chosen = engine.Level(level.upper())
    except ValueError:
        typer.echo(f"unknown level {level!r}; use B-B, B-T, B-LT or B-LTA", err=True)
        raise typer.Exit(2) from None
    roots = tuple(trust or [p for p in [default_pki_dir() / "root.pem"] if p.exists()])
    options = engine.SigningOptions(level=chosen, trust_roots=roots, tsa_url=tsa_url)
    try:
        signer = load_p12_signer(key, _read_passphrase(passphrase_file))
    except SigningError as exc:
        typer.echo(f"{key}: {exc}", err=True)
        raise typer.Exit(1) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for source in inputs:
        target = out_dir / f"{source.stem}-signed.pdf"
        try:
            if source.resolve() == target.resolve():
                raise ValueError("output would overwrite the input")
            if seal:
                _seal_one(engine, signer, source, target, number, roots, options)
            else:
                engine.sign_pdf_file(source, target, signer, options=options)
            typer.echo(f"{source} -> {target}")
        except (SigningError, OSError, ValueError) as exc:
            failures += 1
            typer.echo(f"{source}: FAILED: {exc}", err=True)
    raise typer.Exit(1 if failures else 0)


def _seal_one(engine, signer, source: Path, target: Path, number: str | None,  # noqa: ANN001
              roots: tuple[Path, ...], options) -> None:  # noqa: ANN001
    from eoffice.signing.appearance import render_seal_png
    from eoffice.signing.errors import OrderError

    org = signer.signing_cert.subject.native.get("organization_name", "")
    if isinstance(org, list):
        org = org[0]
    try:
        engine.check_leader_signature_present(source, roots)
    except OrderError:
        engine.stamp_attachment(source, target, signer, number_notation=number or "",
                                options=options)
        return
    image_path = target.parent / f".seal-{abs(hash(org))}.png"
    render_seal_png(org, image_path)
    try:
        engine.issue_with_seal(source, target, signer, seal_image=image_path,
                               number_notation=number or "", issued_on=dt.date.today(),
                               trust_roots=roots, options=options)
    finally:
        image_path.unlink(missing_ok=True)


def register(app: typer.Typer) -> None:
    """Add `pki` (sub-app) and `sign` to the main CLI."""
    app.add_typer(pki_app, name="pki")
    app.command("sign")(sign_command)


def main() -> None:  # pragma: no cover - convenience for `python -m eoffice.signing.commands`
    """Run the signing commands standalone."""
    app = typer.Typer()
    register(app)
    app(sys.argv[1:])
