"""Browser sessions (a signed cookie, idle expiry), CSRF tokens and the signed-in principal."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlmodel import Session
from starlette.responses import Response

from eoffice.errors import Forbidden, Unauthenticated
from eoffice.models import Agency, User
from eoffice.settings import get_settings
from eoffice.users.service import Principal, principal_for_user
from eoffice.web.i18n import DEFAULT_LANGUAGE, LANGUAGES

COOKIE = "eoffice_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
# Polling requests (live statuses, job progress) must not keep an idle session alive.
POLL_HEADER = "x-poll"


class LoginRequired(Unauthenticated):
    """No (or an expired) browser session: the page sends the user to sign-in."""


class CsrfFailed(Forbidden):
    """A form came without this session's token (cross-site or stale page)."""

    type_slug = "csrf"
    title = "Form expired"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(get_settings().signing_secret(), salt="eoffice.web.session")


class WebSession:
    """The cookie's content for one request; written back only when it should be."""

    def __init__(self, data: dict[str, Any], expired: bool = False) -> None:
        self.data = data
        self.expired = expired
        self.modified = False
        if "csrf" not in self.data:
            self.data["csrf"] = secrets.token_urlsafe(32)
            self.modified = True

    @property
    def csrf(self) -> str:
        return str(self.data["csrf"])

    @property
    def lang(self) -> str:
        lang = self.data.get("lang")
        return lang if lang in LANGUAGES else DEFAULT_LANGUAGE

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.modified = True

    def pop(self, key: str) -> Any:
        self.modified = True
        return self.data.pop(key, None)

    def start(self, user: User) -> None:
        """A fresh session for a signed-in user (new CSRF token against fixation)."""
        self.data = {"uid": user.id, "ver": user.token_version, "lang": self.lang,
                     "csrf": secrets.token_urlsafe(32)}
        self.modified = True

    def clear(self) -> None:
        self.data = {"lang": self.lang, "csrf": secrets.token_urlsafe(32)}
        self.modified = True

    def flash(self, message: str, kind: str = "info") -> None:
        """A message for the next page (already translated)."""
        self.data.setdefault("flash", []).append([kind, message])
        self.modified = True

    def take_flashes(self) -> list[tuple[str, str]]:
        messages = self.data.pop("flash", None) or []
        if messages:
            self.modified = True
        return [(str(k), str(m)) for k, m in messages]


def load_session(request: Request) -> WebSession:
    """Decode the cookie; a bad or idle-expired one gives an empty session."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return WebSession({})
    max_age = get_settings().web_session_idle_minutes * 60
    try:
        data = _serializer().loads(raw, max_age=max_age)
    except SignatureExpired:
        # Keep only the language: the rest belonged to a session that timed out.
        _ok, payload = _serializer().loads_unsafe(raw)
        lang = payload.get("lang") if isinstance(payload, dict) else None
        return WebSession({"lang": lang} if lang in LANGUAGES else {}, expired=True)
    except BadSignature:
        return WebSession({})
    return WebSession(data if isinstance(data, dict) else {})


def cookie_secure(request: Request) -> bool:
    mode = get_settings().web_cookie_secure
    if mode == "auto":
        forwarded = request.headers.get("x-forwarded-proto", "")
        return request.url.scheme == "https" or forwarded == "https"
    return mode == "always"


def save_session(request: Request, response: Response, web: WebSession) -> None:
    """Re-sign the cookie (sliding idle expiry) unless this was a background poll."""
    if request.headers.get(POLL_HEADER) and not web.modified:
        return
    response.set_cookie(COOKIE, _serializer().dumps(web.data),
                        max_age=get_settings().web_session_idle_minutes * 60,
                        httponly=True, samesite="lax", secure=cookie_secure(request), path="/")


def web_session(request: Request) -> WebSession:
    """The session the middleware attached to this request."""
    web = getattr(request.state, "web", None)
    if web is None:
        web = load_session(request)
        request.state.web = web
    return web


def current_principal(request: Request, session: Session) -> Principal:
    """The signed-in user, or LoginRequired (the error page redirects to sign-in)."""
    web = web_session(request)
    uid = web.data.get("uid")
    if not uid:
        raise LoginRequired("sign in first", detail_vi="Vui lòng đăng nhập")
    user = session.get(User, int(uid))
    if user is None or not user.is_active or web.data.get("ver") != user.token_version:
        web.clear()
        raise LoginRequired("sign in again", detail_vi="Vui lòng đăng nhập lại")
    principal = principal_for_user(session, user)
    agency = session.get(Agency, user.agency_id) if user.agency_id else None
    request.state.principal = principal
    # Plain values for the page header: an error page may render after a rollback, when
    # the ORM objects are expired and detached.
    request.state.who = {"name": user.full_name, "username": user.username,
                         "role": user.role, "agency_name": agency.name if agency else None}
    return principal


async def check_csrf(request: Request) -> None:
    """Every state-changing request carries the session's token (form field or header)."""
    web = web_session(request)
    sent = request.headers.get(CSRF_HEADER)
    if not sent:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
    if not sent or not secrets.compare_digest(sent, web.csrf):
        raise CsrfFailed("the form has expired or did not come from this site; "
                         "reload the page and try again",
                         detail_vi="Biểu mẫu đã hết hạn hoặc không xuất phát từ trang này; "
                                   "hãy tải lại trang và thử lại")


def safe_next(target: str | None, default: str = "/") -> str:
    """Only a local path may follow sign-in (no open redirect)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") \
            or "\\" in target:
        return default
    return target


def login_url(request: Request) -> str:
    """Sign-in, coming back to the page the user was on (an HTMX call's page, not itself)."""
    current = request.headers.get("hx-current-url")
    if current:
        parts = urlsplit(current)
        here = parts.path + (f"?{parts.query}" if parts.query else "")
    else:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET" and not current:
        here = request.headers.get("referer", "") and urlsplit(
            request.headers["referer"]).path or "/"
    return f"/login?next={quote(safe_next(here), safe='/')}"
