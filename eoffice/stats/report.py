"""The monthly exchange report of a province: a PDF (fpdf2, TeX Gyre Termes) with the KPIs,
the tier table, the trend and ranking charts as vector graphics, signed with the province seal.
"""

from __future__ import annotations

import calendar
import io
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

from sqlmodel import Session

from eoffice.errors import ServiceUnavailable, ValidationFailed
from eoffice.settings import get_settings
from eoffice.stats import charts, service
from eoffice.timeutil import local_now

FONT_DIRS = (Path("/usr/share/texmf/fonts/opentype/public/tex-gyre"),
             Path("/usr/share/fonts/opentype/texgyre"),
             Path("/usr/share/fonts/opentype/tex-gyre"))
FAMILY = "TeX Gyre Termes"


def _font(name: str) -> Path:
    for folder in FONT_DIRS:
        if (folder / name).exists():
            return folder / name
    raise ServiceUnavailable(f"font {name} not installed (Debian package fonts-texgyre)",
                             detail_vi="Thiếu phông chữ TeX Gyre Termes (gói fonts-texgyre)")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _bucket(value: dict[str, Any] | None) -> str:
    if value is None:
        return "–"
    high = value["to_minutes"]
    return f"≥ {value['from_minutes']} phút" if high is None else f"< {high} phút"


def month_range(month: str) -> tuple[date, date]:
    """The first and last day of YYYY-MM (422 when it is not a month)."""
    try:
        year, number = (int(part) for part in month.split("-"))
        return date(year, number, 1), date(year, number, calendar.monthrange(year, number)[1])
    except ValueError as exc:
        raise ValidationFailed(f"month '{month}' must be YYYY-MM", field="month",
                               detail_vi="Tháng phải có dạng YYYY-MM") from exc


def build_pdf(session: Session, principal: Any, month: str, agency: str | None = None
              ) -> tuple[bytes, str]:
    """The unsigned report and the code of the province whose seal must sign it."""
    from fpdf import FPDF

    start, end = month_range(month)
    service.check_range(start, end)
    scope_body = service.exchange_stats(session, principal, start=start, end=end,
                                        agency=agency, group_by="tier")
    _, tree = service.scope_ids(session, principal)
    chosen, _ = service.selection(session, principal, agency, None)
    roots = [tree.by_id[i] for i in chosen if tree.by_id[i].parent_id not in chosen]
    subject = min(roots, key=lambda a: a.id) if roots else None
    province = tree.root_of(subject) if subject is not None else None
    trend_start = date(start.year - 1, start.month, 1) if start.month < 12 else \
        date(start.year, 1, 1)
    months, series = charts.trend_series(session, principal, trend_start, end, agency)
    ranking = charts.ranking_rows(session, principal, start, end, agency)[:30]

    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_title(f"Báo cáo trao đổi văn bản điện tử tháng {start.month}/{start.year}")
    pdf.set_author("eoffice")
    pdf.add_font(FAMILY, "", str(_font("texgyretermes-regular.otf")))
    pdf.add_font(FAMILY, "B", str(_font("texgyretermes-bold.otf")))
    pdf.add_font(FAMILY, "I", str(_font("texgyretermes-italic.otf")))
    pdf.set_auto_page_break(True, margin=18)
    pdf.add_page()
    pdf.set_font(FAMILY, "B", 12)
    name = subject.name if subject else "—"
    pdf.cell(0, 6, name.upper(), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FAMILY, "I", 11)
    pdf.cell(0, 6, f"Lập ngày {local_now():%d/%m/%Y %H:%M} (giờ Việt Nam)", align="C",
             new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font(FAMILY, "B", 16)
    pdf.multi_cell(0, 8, f"BÁO CÁO TÌNH HÌNH TRAO ĐỔI VĂN BẢN ĐIỆN TỬ\n"
                         f"Tháng {start.month:02d}/{start.year}", align="C",
                   new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FAMILY, "I", 11)
    pdf.multi_cell(0, 6, f"Monthly electronic document exchange report, {month} "
                         f"({start:%d/%m/%Y} – {end:%d/%m/%Y})", align="C",
                   new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    pdf.set_font(FAMILY, "B", 13)
    pdf.cell(0, 7, "1. Các chỉ số chính / Key figures", new_x="LMARGIN", new_y="NEXT")
    body = scope_body
    ack, done = body["acknowledgement"], body["completion"]
    figures = [
        ("Tỷ lệ văn bản điện tử (đi + đến)", _pct(body["electronic_rate"]),
         f"{body['electronic']} / {body['total']}"),
        ("– Văn bản đi (theo văn bản)", _pct(body["outgoing"]["electronic_rate"]),
         f"{body['outgoing']['electronic']} / {body['outgoing']['total']}"),
        ("– Văn bản đến (theo lượt nhận)", _pct(body["incoming"]["electronic_rate"]),
         f"{body['incoming']['electronic']} / {body['incoming']['total']}"),
        ("Văn bản điện tử đủ chữ ký hợp lệ", _pct(body["signatures"]["share"]),
         f"{body['signatures']['both_valid']} / {body['signatures']['electronic']}"),
        ("Tiếp nhận đúng hạn (trong ngày / ngày làm việc kế tiếp)",
         _pct(ack["on_time_share"]), f"{ack['on_time']} / {ack['deliveries']}"),
        ("Thời gian tiếp nhận: trung vị / phân vị 90", _bucket(ack["median"]),
         _bucket(ack["p90"])),
        ("Hoàn thành đúng hạn xử lý", _pct(done["by_due_share"]),
         f"{done['completed_by_due']} / {done['with_due']}"),
        ("Thời gian hoàn thành: trung vị / phân vị 90", _bucket(done["median"]),
         _bucket(done["p90"])),
        ("Văn bản bị thu hồi (thống kê riêng)", str(body["recalled"]), ""),
        ("Văn bản điện tử có gửi kèm bản giấy", str(body["also_on_paper"]), ""),
    ]
    pdf.set_font(FAMILY, "", 11)
    with pdf.table(col_widths=(100, 35, 45), text_align=("LEFT", "RIGHT", "RIGHT"),
                   line_height=6.5) as table:
        head = table.row()
        for label in ("Chỉ số", "Giá trị", "Số lượng"):
            head.cell(label)
        for label, value, count in figures:
            row = table.row()
            row.cell(label)
            row.cell(value)
            row.cell(count)
    pdf.ln(4)
    pdf.set_font(FAMILY, "B", 13)
    pdf.cell(0, 7, "2. Theo cấp / By tier", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FAMILY, "", 11)
    tier_names = charts.TIER_LABELS["vi"]
    with pdf.table(col_widths=(50, 25, 25, 25, 30, 30),
                   text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "RIGHT"),
                   line_height=6.5) as table:
        head = table.row()
        for label in ("Cấp", "Điện tử", "Giấy", "Tổng", "Tỷ lệ", "Tiếp nhận đúng hạn"):
            head.cell(label)
        for row_data in body["rows"]:
            row = table.row()
            row.cell(tier_names.get(row_data["tier"], row_data["tier"]))
            row.cell(str(row_data["electronic"]))
            row.cell(str(row_data["paper"]))
            row.cell(str(row_data["total"]))
            row.cell(_pct(row_data["electronic_rate"]))
            row.cell(_pct(row_data["acknowledgement"]["on_time_share"]))

    pdf.add_page()
    pdf.set_font(FAMILY, "B", 13)
    pdf.cell(0, 7, "3. Xu hướng 12 tháng / 12-month trend", new_x="LMARGIN", new_y="NEXT")
    trend = charts.render_trend(months, series, "vi",
                                subtitle=f"{trend_start:%m/%Y} – {end:%m/%Y}")
    pdf.image(io.BytesIO(trend.encode()), x=10, w=190)
    pdf.ln(2)
    pdf.set_font(FAMILY, "B", 13)
    pdf.cell(0, 7, "4. Xếp hạng cơ quan / Ranking", new_x="LMARGIN", new_y="NEXT")
    rank_svg = charts.render_ranking(ranking, "vi", subtitle=f"Tháng {start:%m/%Y}")
    pdf.image(io.BytesIO(rank_svg.encode()), x=10, w=190)

    pdf.add_page()
    pdf.set_font(FAMILY, "B", 13)
    pdf.cell(0, 7, "5. Định nghĩa / Definition", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FAMILY, "", 11)
    pdf.multi_cell(0, 5.5, service.DEFINITION["vi"], new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font(FAMILY, "I", 10)
    pdf.multi_cell(0, 5, service.DEFINITION["en"], new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font(FAMILY, "", 10)
    pdf.multi_cell(0, 5, "Khoảng thời gian tính (phút) / histogram buckets (minutes): "
                   + ", ".join(str(v) for v in service.BUCKET_EDGES_MINUTES))
    return bytes(pdf.output()), province.code if province else ""


def sign_with_seal(pdf: bytes, agency_code: str) -> bytes:
    """Sign the report with the agency's seal key from the PKI folder (PAdES B-B)."""
    from eoffice.signing.engine import SigningOptions, sign_pdf_file
    from eoffice.signing.keys import load_p12_signer

    pki_dir = get_settings().pki_dir
    key = pki_dir / "seals" / f"{agency_code}.p12" if pki_dir else None
    secret = key.with_suffix(".pass") if key else None
    if key is None or secret is None or not key.exists() or not secret.exists():
        raise ServiceUnavailable(
            f"no seal key for {agency_code}: the report cannot be signed",
            detail_vi=f"Chưa có khóa chữ ký số cơ quan {agency_code}: không thể ký báo cáo")
    signer = load_p12_signer(key, secret.read_text().strip())
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "report.pdf", Path(folder) / "signed.pdf"
        source.write_bytes(pdf)
        sign_pdf_file(source, target, signer, options=SigningOptions(
            level="B-B", reason="Báo cáo thống kê trao đổi văn bản điện tử",  # type: ignore[arg-type]
            location="Việt Nam"))
        return target.read_bytes()


def monthly_report(session: Session, principal: Any, month: str, agency: str | None = None
                   ) -> bytes:
    """The signed monthly report for the caller's scope (or one agency's subtree)."""
    pdf, province_code = build_pdf(session, principal, month, agency)
    return sign_with_seal(pdf, province_code)
