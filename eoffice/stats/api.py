"""Statistics: GET /stats/exchange (JSON, CSV, XLSX), charts, the signed monthly report."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from sqlmodel import col, select

from eoffice.deps import CurrentPrincipal, SessionDep
from eoffice.models import StatsReconcileRun
from eoffice.registers.api import router as registers_router
from eoffice.stats import charts, report, service
from eoffice.stats.schemas import flat_rows
from eoffice.timeutil import local_today

router = APIRouter(tags=["stats"])
router.include_router(registers_router)

FromDate = Annotated[date | None, Query(alias="from", description="first day (YYYY-MM-DD)")]
ToDate = Annotated[date | None, Query(alias="to", description="last day, inclusive")]
Period = Annotated[str | None, Query(max_length=10,
                                     description="YYYY, YYYY-Qn, YYYY-MM or YYYY-MM-DD")]
Level = Annotated[str | None, Query(max_length=16)]
AgencyCode = Annotated[str | None, Query(max_length=35)]
GroupBy = Annotated[str, Query(max_length=16, description="agency|tier|month|agency-month|none")]
Format = Annotated[Literal["json", "csv", "xlsx"], Query()]


def resolve_range(start: date | None, end: date | None, period: str | None
                  ) -> tuple[date, date]:
    """from/to, or a named period; the current year to date when neither is given."""
    if period:
        return service.parse_period(period)
    today = local_today()
    return start or date(today.year, 1, 1), end or today


def _query(session: SessionDep, principal: CurrentPrincipal, start: date | None,
           end: date | None, period: str | None, level: str | None, agency: str | None,
           group_by: str) -> dict[str, Any]:
    first, last = resolve_range(start, end, period)
    return service.exchange_stats(session, principal, start=first, end=last, agency=agency,
                                  level=level, group_by=group_by)


def _csv(body: dict[str, Any]) -> Response:
    header, rows = flat_rows(body)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    name = f"exchange-{body['from']}-{body['to']}.csv"
    return Response("\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _xlsx(body: dict[str, Any]) -> Response:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    header, rows = flat_rows(body)
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "exchange"
    sheet.append(header)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in rows:
        sheet.append(row)
    info = book.create_sheet("definition")
    info.append(["from", body["from"]])
    info.append(["to", body["to"]])
    info.append(["định nghĩa (vi)", body["definition"]["vi"]])
    info.append(["definition (en)", body["definition"]["en"]])
    info.append(["histogram buckets (minutes)",
                 ", ".join(str(v) for v in body["histogram_buckets_minutes"])])
    out = io.BytesIO()
    book.save(out)
    name = f"exchange-{body['from']}-{body['to']}.xlsx"
    return Response(out.getvalue(), media_type="application/vnd.openxmlformats-officedocument."
                    "spreadsheetml.sheet",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/stats/exchange")
def exchange(session: SessionDep, principal: CurrentPrincipal, start: FromDate = None,
             end: ToDate = None, period: Period = None, level: Level = None,
             agency: AgencyCode = None, group_by: GroupBy = "agency",
             format: Format = "json") -> Response:
    """Electronic-exchange rate and companion KPIs, rows per agency, tier or month."""
    body = _query(session, principal, start, end, period, level, agency, group_by)
    if format == "csv":
        return _csv(body)
    if format == "xlsx":
        return _xlsx(body)
    return JSONResponse(body)


@router.get("/stats/exchange.csv")
def exchange_csv(session: SessionDep, principal: CurrentPrincipal, start: FromDate = None,
                 end: ToDate = None, period: Period = None, level: Level = None,
                 agency: AgencyCode = None, group_by: GroupBy = "agency") -> Response:
    """The same rows as CSV (UTF-8 with BOM so spreadsheet programs show Vietnamese)."""
    return _csv(_query(session, principal, start, end, period, level, agency, group_by))


@router.get("/stats/exchange.xlsx")
def exchange_xlsx(session: SessionDep, principal: CurrentPrincipal, start: FromDate = None,
                  end: ToDate = None, period: Period = None, level: Level = None,
                  agency: AgencyCode = None, group_by: GroupBy = "agency") -> Response:
    """The same rows as an Excel workbook, with the definition on a second sheet."""
    return _xlsx(_query(session, principal, start, end, period, level, agency, group_by))


@router.get("/stats/charts/trend.svg")
def trend_chart(session: SessionDep, principal: CurrentPrincipal, start: FromDate = None,
                end: ToDate = None, period: Period = None, agency: AgencyCode = None,
                lang: Literal["vi", "en"] = "vi") -> Response:
    """Monthly electronic-exchange rate per tier, as SVG."""
    first, last = resolve_range(start, end, period)
    svg = charts.trend_svg(session, principal, first, last, agency=agency, lang=lang)
    return Response(svg, media_type="image/svg+xml")


@router.get("/stats/charts/ranking.svg")
def ranking_chart(session: SessionDep, principal: CurrentPrincipal, start: FromDate = None,
                  end: ToDate = None, period: Period = None, level: Level = None,
                  agency: AgencyCode = None, lang: Literal["vi", "en"] = "vi") -> Response:
    """Agencies ranked by electronic-exchange rate, as SVG."""
    first, last = resolve_range(start, end, period)
    svg = charts.ranking_svg(session, principal, first, last, agency=agency, level=level,
                             lang=lang)
    return Response(svg, media_type="image/svg+xml")


@router.get("/stats/reports/monthly.pdf")
def monthly_report(session: SessionDep, principal: CurrentPrincipal,
                   month: Annotated[str, Query(pattern=r"^\d{4}-\d{2}$")],
                   agency: AgencyCode = None) -> Response:
    """The province's monthly report, signed with the province seal (PAdES B-B)."""
    pdf = report.monthly_report(session, principal, month, agency=agency)
    return Response(pdf, media_type="application/pdf", headers={
        "Content-Disposition": f'inline; filename="bao-cao-trao-doi-{month}.pdf"'})


@router.get("/stats/reconcile-runs")
def reconcile_runs(session: SessionDep, principal: CurrentPrincipal,
                   limit: Annotated[int, Query(ge=1, le=100)] = 20) -> list[dict[str, Any]]:
    """The latest reconciliations with the drift they found (auditors and admins)."""
    principal.require_role("auditor", "admin")
    runs = session.exec(select(StatsReconcileRun).order_by(col(StatsReconcileRun.id).desc())
                        .limit(limit)).all()
    return [run.model_dump(mode="json") for run in runs]
