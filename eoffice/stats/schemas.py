"""Flat export columns of the /stats/exchange rows (CSV and XLSX share them)."""

from __future__ import annotations

from typing import Any

KEY_COLUMNS = ("agency", "agency_name", "level", "tier", "month")
FIGURE_COLUMNS = (
    ("electronic", lambda r: r["electronic"]),
    ("paper", lambda r: r["paper"]),
    ("total", lambda r: r["total"]),
    ("electronic_rate", lambda r: r["electronic_rate"]),
    ("out_electronic", lambda r: r["outgoing"]["electronic"]),
    ("out_paper", lambda r: r["outgoing"]["paper"]),
    ("out_rate", lambda r: r["outgoing"]["electronic_rate"]),
    ("in_electronic", lambda r: r["incoming"]["electronic"]),
    ("in_paper", lambda r: r["incoming"]["paper"]),
    ("in_rate", lambda r: r["incoming"]["electronic_rate"]),
    ("recalled", lambda r: r["recalled"]),
    ("also_on_paper", lambda r: r["also_on_paper"]),
    ("signatures_valid_share", lambda r: r["signatures"]["share"]),
    ("ack_on_time_share", lambda r: r["acknowledgement"]["on_time_share"]),
    ("ack_median_max_minutes", lambda r: _upper(r["acknowledgement"]["median"])),
    ("ack_p90_max_minutes", lambda r: _upper(r["acknowledgement"]["p90"])),
    ("completed_by_due_share", lambda r: r["completion"]["by_due_share"]),
    ("completion_median_max_minutes", lambda r: _upper(r["completion"]["median"])),
    ("completion_p90_max_minutes", lambda r: _upper(r["completion"]["p90"])),
)


def _upper(value: dict[str, Any] | None) -> Any:
    if value is None:
        return None
    return value["to_minutes"] if value["to_minutes"] is not None else f">={value['from_minutes']}"


def flat_rows(body: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows (plus a TOTAL row carrying the definition) of a stats response."""
    keys = [k for k in KEY_COLUMNS if any(k in row for row in body["rows"])] or ["agency"]
    header = keys + [name for name, _ in FIGURE_COLUMNS] + ["definition"]
    rows = [[row.get(k) for k in keys] + [get(row) for _, get in FIGURE_COLUMNS] + [None]
            for row in body["rows"]]
    total = ["TOTAL"] + [None] * (len(keys) - 1)
    rows.append(total + [get(body) for _, get in FIGURE_COLUMNS]
                + [f"{body['definition']['vi']} / {body['definition']['en']}"])
    return header, rows
