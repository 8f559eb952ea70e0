"""The web UI: server-rendered pages over the same services as the API, HTMX for live parts.

``install(app)`` mounts the static files, the session middleware, the HTML error renderer and
the page routers (sign-in and exchange here; signing, verification, audit and the dashboard in
``eoffice.web.pages_more``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from eoffice import app as app_module
from eoffice.audit.service import record
from eoffice.deps import SessionDep
from eoffice.errors import AppError, TooManyRequests, Unauthenticated
from eoffice.users import service as users_service
from eoffice.users.service import Principal
from eoffice.web.i18n import LANGUAGES, gettext_for
from eoffice.web.render import render
from eoffice.web.security import (
    CsrfFailed,
    LoginRequired,
    check_csrf,
    current_principal,
    load_session,
    login_url,
    safe_next,
    save_session,
    web_session,
)

STATIC = __import__("pathlib").Path(__file__).resolve().parent / "static"
# Paths the browser session does not concern: the API, files, probes.
NOT_WEB = ("/api/", "/pki", "/static/", "/healthz", "/readyz", "/metrics", "/openapi", "/docs",
           "/redoc")
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "frame-src 'self'; object-src 'self'; frame-ancestors 'self'; form-action 'self'; "
       "base-uri 'none'")


def get_principal(request: Request, session: SessionDep) -> Principal:
    """The signed-in user of this browser session."""
    return current_principal(request, session)


WebPrincipal = Annotated[Principal, Depends(get_principal)]
Csrf = Depends(check_csrf)

router = APIRouter(include_in_schema=False)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def redirect(request: Request, url: str) -> Response:
    """See-other for a plain form post; HX-Redirect for an HTMX one."""
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def translate(request: Request, message: str) -> str:
    return gettext_for(web_session(request).lang)(message)


def error_message(request: Request, error: AppError) -> str:
    """The error in the user's language (English detail when no Vietnamese one exists)."""
    lang = web_session(request).lang
    if lang == "vi" and error.detail_vi:
        return error.detail_vi
    return error.detail


def render_error(request: Request, error: AppError) -> Response:
    """HTML errors: sign-in redirect for 401, a message in the page otherwise, never a trace."""
    web = web_session(request)
    if error.status_code == 401:
        if web.expired:
            web.flash(translate(request, "Your session has expired. Please sign in again."),
                      "warning")
        sign_in = redirect(request, login_url(request))
        save_session(request, sign_in, web)
        return sign_in
    message = error_message(request, error)
    if is_htmx(request):
        response: Response = render(request, "_alert.html",
                                    {"kind": "error", "message": message}, fragment=True,
                                    status_code=error.status_code,
                                    headers={"HX-Retarget": "#messages",
                                             "HX-Reswap": "innerHTML"})
    else:
        response = render(request, "error.html", {"error": error, "message": message},
                          status_code=error.status_code)
    save_session(request, response, web)
    return response


async def _session_middleware(request: Request,
                              call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    if request.url.path.startswith(NOT_WEB):
        return await call_next(request)
    web = load_session(request)
    lang = request.query_params.get("lang")
    if lang in LANGUAGES and lang != web.data.get("lang"):
        web.set("lang", lang)  # remembered for the session
    request.state.web = web
    response = await call_next(request)
    save_session(request, response, request.state.web)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if "text/html" in response.headers.get("content-type", ""):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


class WebSessionMiddleware:
    """The web session and security headers, for pages only: API calls skip the
    BaseHTTPMiddleware machinery entirely (it costs every request an extra task)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.pages = BaseHTTPMiddleware(app, dispatch=_session_middleware)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(NOT_WEB):
            await self.pages(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    """Mount the web UI on the application."""
    from eoffice.web import pages_exchange, pages_more

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="web-static")
    app.include_router(router)
    app.include_router(pages_exchange.router)
    app.include_router(pages_more.router)
    app.add_middleware(WebSessionMiddleware)
    app_module.html_error_renderer = render_error


# --- sign-in -------------------------------------------------------------------------------

def home_for(principal: Principal) -> str:
    if principal.role == "auditor":
        return "/verify"
    if principal.role == "admin":
        return "/dashboard"
    return "/inbox"


@router.get("/", response_class=HTMLResponse)
def home(request: Request, session: SessionDep) -> Response:
    """Sign-in when not signed in, the user's main page otherwise."""
    try:
        principal = current_principal(request, session)
    except LoginRequired:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(home_for(principal), status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, session: SessionDep, next: str | None = None) -> Response:
    """The sign-in form."""
    return render(request, "login.html", {"next": safe_next(next, ""), "username": ""},
                  session=session)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, session: SessionDep, username: Annotated[str, Form()] = "",
          password: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "",
          _csrf: None = Csrf) -> Response:
    """Check the password (failures count towards the lock-out) and start a session."""
    web = web_session(request)
    ip = request.client.host if request.client else ""
    try:
        user = users_service.authenticate(session, username, password, ip)
    except TooManyRequests as exc:
        message = translate(request, "Too many failed sign-ins. The account is locked for "
                                     "%(minutes)s minutes; try again later.") % {
            "minutes": max(1, int(exc.extra.get("retry_after", 900)) // 60)}
        return render(request, "login.html", {"next": safe_next(next, ""), "error": message,
                                              "username": username}, status_code=429)
    except Unauthenticated:
        # The failure row must be committed although sign-in failed: return, not raise.
        return render(request, "login.html",
                      {"next": safe_next(next, ""), "username": username,
                       "error": translate(request, "Incorrect username or password.")},
                      status_code=401)
    web.start(user)
    record(session, actor=user.username, action="user.signed_in", object_type="user",
           object_id=user.id, agency_id=user.agency_id, data={"via": "web"})
    principal = users_service.principal_for_user(session, user)
    return RedirectResponse(safe_next(next, home_for(principal)), status_code=303)


@router.post("/logout")
def logout(request: Request, _csrf: None = Csrf) -> Response:
    """End the browser session."""
    web = web_session(request)
    web.clear()
    web.flash(translate(request, "You have signed out."), "info")
    return redirect(request, "/login")


def flash(request: Request, message: str, kind: str = "success", **values: Any) -> None:
    """Translate and queue a message for the next page."""
    text = translate(request, message)
    web_session(request).flash(text % values if values else text, kind)


__all__ = ["CsrfFailed", "Csrf", "WebPrincipal", "flash", "install", "redirect", "router"]
