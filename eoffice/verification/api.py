"""Verification endpoints: check an uploaded PDF, read stored reports as JSON, HTML or PDF."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, File, Form, Query, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from eoffice.deps import CurrentPrincipal, SessionDep
from eoffice.errors import ValidationFailed
from eoffice.settings import get_settings
from eoffice.verification import service
from eoffice.verification.presentation import present
from eoffice.verification.schemas import VerificationResult

router = APIRouter(tags=["verification"])

_templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=select_autoescape(["html"]))


@router.post("/verify", response_model=VerificationResult,
             responses={200: {"description": "the same report object as `eoffice verify`"}})
def verify(session: SessionDep, principal: CurrentPrincipal,
           file: Annotated[UploadFile, File(description="signed PDF")],
           revocation: Annotated[str | None, Form(pattern="^(require|soft|off)$")] = None,
           decree30: Annotated[bool, Form()] = False) -> JSONResponse:
    """Verify the signatures of an uploaded PDF; the report is stored and returned."""
    service.require_reader(principal)
    row = service.verify_upload(session, principal, file.file, file.filename or "upload.pdf",
                                revocation=revocation, decree30=decree30)
    return JSONResponse(jsonable_encoder(service.report_out(row)),
                        headers={"Location": f"/api/v1/verification-reports/{row.id}"})


def _html(row: Any) -> HTMLResponse:
    links = service.report_links(row.id)
    body = _templates.get_template("report.html").render(
        r=present(row), pdf_url=links["pdf_url"], json_url=links["report_url"])
    return HTMLResponse(body)


def _pdf(session: SessionDep, row: Any, background: BackgroundTasks) -> FileResponse:
    tmp = Path(tempfile.mkdtemp(prefix="report-", dir=_tmp_root()))
    signed = service.signed_pdf(session, row, tmp)
    background.add_task(_cleanup, tmp)
    return FileResponse(signed, media_type="application/pdf",
                        filename=f"bao-cao-kiem-tra-{row.id}.pdf")


def _tmp_root() -> Path:
    root = get_settings().data_dir / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _cleanup(directory: Path) -> None:
    for child in directory.iterdir():
        child.unlink(missing_ok=True)
    directory.rmdir()


def _parse_id(raw: str) -> tuple[int, str | None]:
    stem, dot, suffix = raw.partition(".")
    if not (stem.isascii() and stem.isdigit()) or len(stem) > 18:
        raise ValidationFailed("report id must be a number", field="report_id",
                               detail_vi="Mã báo cáo phải là số")
    return int(stem), (suffix if dot else None)


@router.get("/verification-reports/{report_ref}",
            responses={200: {"content": {"application/json": {}, "text/html": {},
                                         "application/pdf": {}}}})
def get_report(report_ref: str, session: SessionDep, principal: CurrentPrincipal,
               background: BackgroundTasks,
               format: Annotated[str | None, Query(alias="format")] = None) -> Response:
    """A stored report: JSON, or `{id}.html` / `?format=html`, or `{id}.pdf` (sealed)."""
    report_id, suffix = _parse_id(report_ref)
    fmt = service.check_format(suffix or format)
    row = service.get_report(session, principal, report_id)
    if fmt == "html":
        return _html(row)
    if fmt == "pdf":
        return _pdf(session, row, background)
    return JSONResponse(jsonable_encoder(service.report_out(row)))
