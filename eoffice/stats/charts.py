"""Server-side SVG charts: the monthly trend per tier and the ranking of agencies.

Hand-written SVG (no chart library): axes with labels, grid, legend, Vietnamese text. The same
SVG is embedded as vector graphics in the monthly PDF report.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any
from xml.sax.saxutils import escape

from sqlmodel import Session

from eoffice.stats import service

FONT = "TeX Gyre Termes, Times New Roman, serif"
TIER_COLORS = {"all": "#1f2937", "province": "#b91c1c", "department": "#1d4ed8",
               "district": "#047857", "commune": "#c2410c"}
TIER_LABELS = {
    "vi": {"all": "Toàn tỉnh", "province": "Cấp tỉnh (UBND tỉnh)", "department": "Sở, ngành",
           "district": "Cấp huyện", "commune": "Cấp xã"},
    "en": {"all": "Whole province", "province": "Province", "department": "Departments",
           "district": "Districts", "commune": "Communes"},
}
TEXT = {
    "vi": {"trend": "Tỷ lệ trao đổi văn bản điện tử theo tháng",
           "ranking": "Xếp hạng cơ quan theo tỷ lệ văn bản điện tử",
           "rate": "Tỷ lệ điện tử (%)", "month": "Tháng", "empty": "Chưa có số liệu",
           "items": "văn bản"},
    "en": {"trend": "Electronic-exchange rate by month",
           "ranking": "Agencies ranked by electronic-exchange rate",
           "rate": "Electronic rate (%)", "month": "Month", "empty": "No data yet",
           "items": "items"},
}


def _text(x: float, y: float, content: str, *, size: float = 12, anchor: str = "start",
          weight: str = "normal", fill: str = "#111827", rotate: float | None = None) -> str:
    transform = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate is not None else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-family="{FONT}" font-size="{size}" '
            f'text-anchor="{anchor}" font-weight="{weight}" fill="{fill}"{transform}>'
            f"{escape(content)}</text>")


def _month_label(month: str, lang: str) -> str:
    year, number = month.split("-")
    return f"T{int(number)}/{year}" if lang == "vi" else month


def _months(start: date, end: date) -> list[str]:
    months, year, month = [], start.year, start.month
    while (year, month) <= (end.year, end.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def trend_series(session: Session, principal: Any, start: date, end: date,
                 agency: str | None = None) -> tuple[list[str], dict[str, list[float | None]]]:
    """Months and, per tier (plus "all"), the rate of each month (None when nothing moved)."""
    body = service.exchange_stats(session, principal, start=start, end=end, agency=agency,
                                  group_by="agency-month")
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in body["rows"]:
        for tier in (row["level"], "all"):
            sums[(tier, row["month"])][0] += row["electronic"]
            sums[(tier, row["month"])][1] += row["total"]
    months = _months(start, end)
    series: dict[str, list[float | None]] = {}
    for tier in ("all",) + service.TIERS:
        values = [sums[(tier, m)][0] / sums[(tier, m)][1] if sums[(tier, m)][1] else None
                  for m in months]
        if any(v is not None for v in values):
            series[tier] = values
    return months, series


def trend_svg(session: Session, principal: Any, start: date, end: date, *,
              agency: str | None = None, lang: str = "vi") -> str:
    """A line chart of the monthly rate per tier."""
    months, series = trend_series(session, principal, start, end, agency)
    return render_trend(months, series, lang, subtitle=f"{start.isoformat()} – {end.isoformat()}")


def render_trend(months: list[str], series: dict[str, list[float | None]], lang: str,
                 subtitle: str = "") -> str:
    """The SVG of a trend (pure function of the data: testable and reused by the PDF)."""
    words, labels = TEXT[lang], TIER_LABELS[lang]
    width, height = 820, 420
    left, right, top, bottom = 70, 190, 64, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
             _text(left, 28, words["trend"], size=18, weight="bold"),
             _text(left, 48, subtitle, size=12, fill="#4b5563")]
    for step in range(0, 101, 20):
        y = top + plot_h * (1 - step / 100)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                     f'stroke="#e5e7eb" stroke-width="1"/>')
        parts.append(_text(left - 8, y + 4, f"{step}%", size=11, anchor="end",
                           fill="#374151"))
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" '
                 f'stroke="#374151" stroke-width="1.2"/>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" '
                 f'y2="{top + plot_h}" stroke="#374151" stroke-width="1.2"/>')
    parts.append(_text(18, top + plot_h / 2, words["rate"], size=12, anchor="middle",
                       rotate=-90))
    parts.append(_text(left + plot_w / 2, height - 14, words["month"], size=12,
                       anchor="middle"))
    count = max(len(months), 1)
    step_x = plot_w / count
    every = max(1, -(-count // 7))  # at most 7 labels: they never overlap
    for index, month in enumerate(months):
        x = left + step_x * (index + 0.5)
        if index % every == 0:
            parts.append(_text(x, top + plot_h + 18, _month_label(month, lang), size=11,
                               anchor="middle", fill="#374151"))
    if not series:
        parts.append(_text(left + plot_w / 2, top + plot_h / 2, words["empty"], size=16,
                           anchor="middle", fill="#6b7280"))
    for legend_index, (tier, values) in enumerate(series.items()):
        color = TIER_COLORS[tier]
        width_line = 3 if tier == "all" else 2
        points = [(left + step_x * (i + 0.5), top + plot_h * (1 - v))
                  for i, v in enumerate(values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}"
                            for i, (x, y) in enumerate(points))
            dash = ' stroke-dasharray="6 3"' if tier == "all" else ""
            parts.append(f'<path d="{path}" fill="none" stroke="{color}" '
                         f'stroke-width="{width_line}"{dash}/>')
        for x, y in points:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/>')
        ly = top + 10 + legend_index * 24
        lx = left + plot_w + 20
        parts.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="{color}" '
                     f'stroke-width="{width_line}"/>')
        parts.append(_text(lx + 30, ly + 4, labels[tier], size=12))
    parts.append("</svg>")
    return "\n".join(parts)


def ranking_rows(session: Session, principal: Any, start: date, end: date,
                 agency: str | None = None, level: str | None = None
                 ) -> list[tuple[str, str, float, int]]:
    """(name, level, rate, total) of every agency with exchanges, best rate first."""
    body = service.exchange_stats(session, principal, start=start, end=end, agency=agency,
                                  level=level, group_by="agency")
    rows = [(r["agency_name"], r["level"], r["electronic_rate"], r["total"])
            for r in body["rows"] if r["total"]]
    rows.sort(key=lambda r: (-r[2], -r[3], r[0]))
    return rows


def ranking_svg(session: Session, principal: Any, start: date, end: date, *,
                agency: str | None = None, level: str | None = None, lang: str = "vi",
                limit: int = 60) -> str:
    """A horizontal bar chart of agencies by rate."""
    rows = ranking_rows(session, principal, start, end, agency, level)[:limit]
    return render_ranking(rows, lang, subtitle=f"{start.isoformat()} – {end.isoformat()}")


def render_ranking(rows: list[tuple[str, str, float, int]], lang: str,
                   subtitle: str = "") -> str:
    """The SVG of a ranking (pure function of the data)."""
    words, labels = TEXT[lang], TIER_LABELS[lang]
    bar_h, gap = 16, 6
    left, right, top = 300, 150, 84
    width = 900
    plot_w = width - left - right
    height = top + max(len(rows), 1) * (bar_h + gap) + 50
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
             _text(20, 28, words["ranking"], size=18, weight="bold"),
             _text(20, 48, subtitle, size=12, fill="#4b5563")]
    bottom = top + max(len(rows), 1) * (bar_h + gap)
    for step in range(0, 101, 25):
        x = left + plot_w * step / 100
        parts.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{bottom}" '
                     f'stroke="#e5e7eb" stroke-width="1"/>')
        parts.append(_text(x, bottom + 16, f"{step}%", size=11, anchor="middle",
                           fill="#374151"))
    parts.append(_text(left + plot_w / 2, bottom + 36, words["rate"], size=12,
                       anchor="middle"))
    if not rows:
        parts.append(_text(left + plot_w / 2, top + 12, words["empty"], size=14,
                           anchor="middle", fill="#6b7280"))
    for index, (name, level, rate, total) in enumerate(rows):
        y = top + index * (bar_h + gap)
        short = name.replace("Ủy ban nhân dân", "UBND")
        short = short if len(short) <= 44 else short[:43] + "…"
        parts.append(_text(left - 8, y + bar_h - 4, short, size=11, anchor="end"))
        color = TIER_COLORS.get(level, "#6b7280")
        parts.append(f'<rect x="{left}" y="{y}" width="{plot_w * rate:.1f}" height="{bar_h}" '
                     f'fill="{color}" fill-opacity="0.85"/>')
        parts.append(_text(left + plot_w * rate + 6, y + bar_h - 4,
                           f"{rate * 100:.1f}% ({total} {words['items']})", size=10,
                           fill="#374151"))
    present = [t for t in service.TIERS if any(r[1] == t for r in rows)]
    for index, tier in enumerate(present):
        lx, ly = 20 + index * 170, 68
        parts.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" '
                     f'fill="{TIER_COLORS[tier]}"/>')
        parts.append(_text(lx + 18, ly, labels[tier], size=12))
    parts.append("</svg>")
    return "\n".join(parts)
