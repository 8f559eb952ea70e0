"""The verification report as a PDF (fpdf2 + TeX Gyre Termes), signed with the service seal.

TeX Gyre Termes (Debian ``fonts-texgyre``) has Times metrics and complete Vietnamese; the
service signs the rendered file with its own seal so an auditor can hand it on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fpdf import FPDF

FONT_DIR = Path("/usr/share/texmf/fonts/opentype/public/tex-gyre")
FONT_FILES = {"": "texgyretermes-regular.otf", "B": "texgyretermes-bold.otf",
              "I": "texgyretermes-italic.otf"}


class FontMissing(RuntimeError):
    """The report font is not installed (Debian package fonts-texgyre)."""


def _rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


class _ReportPdf(FPDF):
    def __init__(self, report_id: int | None) -> None:
        super().__init__(format="A4")
        self.report_id = report_id
        for style, name in FONT_FILES.items():
            path = FONT_DIR / name
            if not path.is_file():
                raise FontMissing(f"{path} not found: install the Debian package fonts-texgyre")
            self.add_font("termes", style, str(path))
        self.set_margins(18, 16, 18)
        self.set_auto_page_break(True, margin=18)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("termes", "I", 8)
        self.set_text_color(100, 100, 100)
        self.cell(0, 5, f"Báo cáo #{self.report_id} / Report #{self.report_id} — "
                        f"trang {self.page_no()} / page {self.page_no()}", align="C")


def _row(pdf: _ReportPdf, label: str, value: str, colour: tuple[int, int, int] | None = None
         ) -> None:
    pdf.set_font("termes", "", 10)
    pdf.set_text_color(70, 70, 70)
    y = pdf.get_y()
    if y > pdf.h - pdf.b_margin - 12:
        pdf.add_page()  # keep a row (label and value) on one page
        y = pdf.get_y()
    pdf.multi_cell(55, 5, label, align="L", new_x="LMARGIN", new_y="NEXT")
    label_bottom = pdf.get_y()
    pdf.set_xy(pdf.l_margin + 57, y)
    pdf.set_text_color(*(colour or (20, 20, 20)))
    pdf.multi_cell(0, 5, value or "—", align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.set_y(max(pdf.get_y(), label_bottom))
    pdf.set_draw_color(220, 220, 220)
    pdf.line(pdf.l_margin, pdf.get_y() + 0.5, pdf.w - pdf.r_margin, pdf.get_y() + 0.5)
    pdf.ln(1.5)


def _yes(value: Any) -> tuple[str, tuple[int, int, int]]:
    return ("có / yes", (27, 127, 59)) if value else ("không / no", (179, 38, 30))


def render_pdf(model: dict[str, Any], output: Path) -> Path:
    """Render the presentation model (see presentation.present) to ``output``."""
    pdf = _ReportPdf(model["id"])
    pdf.set_title(f"Báo cáo kiểm tra chữ ký số #{model['id']}")
    pdf.set_creator("eoffice")
    pdf.add_page()
    pdf.set_font("termes", "B", 16)
    pdf.multi_cell(0, 8, "BÁO CÁO KIỂM TRA CHỮ KÝ SỐ", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("termes", "I", 11)
    pdf.set_text_color(90, 90, 90)
    pdf.multi_cell(0, 6, f"Signature verification report — #{model['id']}",
                   new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    verdict = model["verdict"]
    pdf.set_fill_color(*_rgb(verdict["colour"]))
    pdf.set_text_color(255, 255, 255)
    pdf.set_font("termes", "B", 13)
    pdf.cell(0, 9, f"  {verdict['vi']} / {verdict['en']}   ({verdict['code']})", fill=True,
             new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    if model["reason"]:
        pdf.set_text_color(20, 20, 20)
        pdf.set_font("termes", "", 11)
        pdf.multi_cell(0, 5.5, align="L", text=f"{model['reason']['vi']} / {model['reason']['en']} "
                               f"({model['reason']['code']})", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
    _row(pdf, "Tệp / File", model["file"])
    _row(pdf, "SHA-256", model["blob_sha256"])
    _row(pdf, "Thời điểm kiểm tra / Checked at", model["created_at"] or "")
    _row(pdf, "Kho tin cậy / Trust store state", model["trust_state"])
    _row(pdf, "Số chữ ký / Signatures", str(len(model["signatures"])))
    if model["decree30"]:
        d30 = model["decree30"]
        text = "Đúng quy định / Conformant" if d30["conformant"] else \
            "Chưa đúng quy định / Not conformant"
        if d30["reasons"]:
            text += " — " + "; ".join(d30["reasons"])
        _row(pdf, "Nghị định 30 / Decree 30", text,
             (27, 127, 59) if d30["conformant"] else (179, 38, 30))
    for error in model["errors"]:
        _row(pdf, "Lỗi / Error", error, (179, 38, 30))
    for index, sig in enumerate(model["signatures"], start=1):
        pdf.ln(3)
        colour = _rgb(sig["verdict"]["colour"])
        pdf.set_font("termes", "B", 12)
        pdf.set_text_color(*colour)
        pdf.multi_cell(0, 6.5, f"{index}. {sig['field']} ({sig['type']}) — "
                               f"{sig['verdict']['vi']} / {sig['verdict']['en']}",
                       new_x="LMARGIN", new_y="NEXT")
        pdf.set_draw_color(*colour)
        pdf.set_line_width(0.8)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
        pdf.set_line_width(0.2)
        pdf.ln(1.5)
        if sig["reason"]:
            _row(pdf, "Lý do / Reason", f"{sig['reason']['vi']} / {sig['reason']['en']} "
                                        f"({sig['reason']['code']})", colour)
        signer = sig["signer"] + (f" ({sig['certificate_kind']})"
                                  if sig["certificate_kind"] else "")
        _row(pdf, "Người ký / Signer", signer)
        _row(pdf, "Thời điểm ký / Signing time",
             f"{sig['signing_time'] or '—'} ({sig['signing_time_source'] or '?'})")
        for label, value in sig["checks"]:
            _row(pdf, label, *_yes(value))
        if sig["coverage"]:
            _row(pdf, "Phạm vi ký / Coverage",
                 f"{sig['coverage']['vi']} / {sig['coverage']['en']}")
        if sig["modification"]:
            _row(pdf, "Thay đổi sau ký / Changes after signing",
                 f"{sig['modification']['vi']} / {sig['modification']['en']}")
        _row(pdf, "Chuỗi chứng thư / Chain", "\n".join(sig["chain"]) or "—")
        revocation = sig["revocation"]
        if revocation and revocation["status"]:
            text = (f"{revocation['status']['vi']} / {revocation['status']['en']} "
                    f"(mode: {revocation['mode']})")
            if revocation["revocation_date"]:
                text += f", {revocation['revocation_date']} {revocation['reason'] or ''}"
            _row(pdf, "Thu hồi / Revocation", text)
        timestamp = sig["timestamp"]
        _row(pdf, "Dấu thời gian / Timestamp",
             f"{timestamp['time']} — {timestamp['tsa']}" if timestamp else "Không có / None")
        if sig["algorithms"]:
            _row(pdf, "Thuật toán / Algorithms",
                 f"{sig['algorithms'].get('digest')}, {sig['algorithms'].get('signature')}")
        for error in sig["errors"]:
            _row(pdf, "Ghi chú / Finding", error, (179, 38, 30))
    pdf.ln(4)
    pdf.set_font("termes", "I", 9)
    pdf.set_text_color(90, 90, 90)
    pdf.multi_cell(0, 4.5, "Báo cáo này được hệ thống ký số bằng con dấu của cơ quan vận hành; "
                           "mọi thay đổi nội dung sẽ làm chữ ký không hợp lệ. / This report is "
                           "digitally sealed by the operating agency; any change invalidates "
                           "the seal.", new_x="LMARGIN", new_y="NEXT")
    output.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(output))
    return output
