"""Jinja2 rendering with the request's language, user and CSRF token in every page."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlmodel import Session

from eoffice.timeutil import VIETNAM
from eoffice.users.service import Principal
from eoffice.web.i18n import N_, gettext_for
from eoffice.web.security import web_session

TEMPLATES = Path(__file__).resolve().parent / "templates"
ENV = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                  autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)

STATUS_LABELS = {
    "01": N_("Arrived, not yet handled"), "02": N_("Rejected"),
    "03": N_("Accepted and registered"), "04": N_("Assigned"), "05": N_("Being processed"),
    "06": N_("Completed"), "13": N_("Recall requested"), "15": N_("Agreed to the request"),
    "16": N_("Refused the request"),
}
TRANSPORT_LABELS = {
    "queued": N_("Queued"), "sent": N_("Sent"), "delivered": N_("Delivered"),
    "failed": N_("Failed"), "retried": N_("Retrying"), "recalled": N_("Withdrawn"),
}
PRIORITY_LABELS = {0: N_("Normal"), 1: N_("Urgent"), 2: N_("Very urgent"), 3: N_("Flash"),
                   4: N_("Flash, timed")}
ROLE_LABELS = {"clerk": N_("Clerk"), "leader": N_("Leader"), "officer": N_("Officer"),
               "auditor": N_("Auditor"), "admin": N_("Administrator")}
DOCUMENT_STATUS_LABELS = {"draft": N_("Draft"), "issued": N_("Issued"), "sent": N_("Sent"),
                          "recalled": N_("Recall requested")}
REQUEST_LABELS = {"recall": N_("recall"), "update": N_("update"), "replace": N_("replace")}


def fmt_dt(value: datetime | str | None) -> str:
    """Vietnam local time, day first (as Vietnamese users read dates)."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(VIETNAM).strftime("%d/%m/%Y %H:%M")


def fmt_date(value: date | str | None) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    return value.strftime("%d/%m/%Y")


def base_context(request: Request, session: Session | None = None,
                 principal: Principal | None = None, fragment: bool = False) -> dict[str, Any]:
    """What every page needs: language, `_`, the user and their agency, CSRF, messages."""
    web = web_session(request)
    lang = web.lang
    _ = gettext_for(lang)
    if principal is None:
        principal = getattr(request.state, "principal", None)
    return {
        "request": request, "_": _, "lang": lang, "principal": principal,
        "who": getattr(request.state, "who", None) if principal else None,
        "csrf": web.csrf, "flashes": [] if fragment else web.take_flashes(),
        "path": request.url.path,
        "status_label": lambda code: _(STATUS_LABELS[code]) if code in STATUS_LABELS else "",
        "transport_label": lambda s: _(TRANSPORT_LABELS[s]) if s in TRANSPORT_LABELS else s,
        "priority_label": lambda p: _(PRIORITY_LABELS.get(int(p or 0), PRIORITY_LABELS[0])),
        "role_label": lambda r: _(ROLE_LABELS[r]) if r in ROLE_LABELS else r,
        "doc_status_label": lambda s: _(DOCUMENT_STATUS_LABELS[s])
        if s in DOCUMENT_STATUS_LABELS else s,
        "request_label": lambda k: _(REQUEST_LABELS[k]) if k in REQUEST_LABELS else k,
        "fmt_dt": fmt_dt, "fmt_date": fmt_date,
    }


def render(request: Request, template: str, context: dict[str, Any] | None = None, *,
           session: Session | None = None, principal: Principal | None = None,
           status_code: int = 200, headers: dict[str, str] | None = None,
           fragment: bool = False) -> HTMLResponse:
    """A page (or an HTMX fragment, which leaves pending messages for the next page)."""
    data = base_context(request, session, principal, fragment)
    data.update(context or {})
    html = ENV.get_template(template).render(**data)
    return HTMLResponse(html, status_code=status_code, headers=headers)
