"""The FastAPI application: routers under /api/v1, one JSON and one HTML error handler."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import DataError, OperationalError
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eoffice.errors import AppError, PayloadTooLarge, ServiceUnavailable, ValidationFailed
from eoffice.metrics import HTTP_LATENCY, HTTP_REQUESTS, REGISTRY
from eoffice.observability import new_request_id, set_request_id
from eoffice.settings import get_settings

log = logging.getLogger(__name__)
API = "/api/v1"
PROBLEM = "application/problem+json"

# The web package installs its renderer here so HTML pages get HTML errors.
HtmlErrorRenderer = Callable[[Request, AppError], Response]
html_error_renderer: HtmlErrorRenderer | None = None


def _wants_html(request: Request) -> bool:
    return (not request.url.path.startswith(("/api/", "/pki", "/metrics", "/healthz",
                                              "/readyz", "/openapi"))
            and "text/html" in request.headers.get("accept", ""))


def _problem(request: Request, error: AppError) -> Response:
    if html_error_renderer is not None and _wants_html(request):
        return html_error_renderer(request, error)
    headers = {}
    if error.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error.problem(instance=request.url.path),
                        status_code=error.status_code, media_type=PROBLEM, headers=headers)


def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(loc) or "body"
    message = first.get("msg", "invalid")
    if first.get("type") == "json_invalid":
        message, field = "malformed JSON body", "body"
    return _problem(request, ValidationFailed(
        f"{field}: {message}", field=field, detail_vi=f"Dữ liệu không hợp lệ: {field}",
        extra={"errors": [{"field": ".".join(str(p) for p in e.get("loc", ())),
                           "message": e.get("msg")} for e in errors]}))


class RequestContextMiddleware:
    """Request id (taken from X-Request-ID or made), body-size guard, request metrics.

    Plain ASGI rather than @app.middleware("http"): that wrapper runs every request through
    an extra task and memory streams, which cost each API call more than our own code here.
    """

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = (headers.get("x-request-id") or new_request_id())[:64]
        set_request_id(request_id)
        started = time.perf_counter()
        status = [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            length = headers.get("content-length")
            refused: AppError | None = None
            if length and length.isascii() and length.isdigit() and int(length) > self.max_body:
                refused = PayloadTooLarge(f"request body larger than {self.max_body} bytes",
                                          detail_vi="Dữ liệu gửi lên vượt quá dung lượng cho phép")
            elif b"%00" in scope["query_string"] or b"\x00" in scope["query_string"]:
                refused = _nul_in_query(scope["query_string"])
            if refused is not None:
                await _problem(Request(scope), refused)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            set_request_id(None)
            path = getattr(scope.get("route"), "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], path, str(status[0])).inc()
            HTTP_LATENCY.labels(scope["method"], path).observe(time.perf_counter() - started)


def _nul_in_query(query: bytes) -> ValidationFailed:
    """A NUL character (U+0000) in a query parameter: no text we store or search can hold
    one (PostgreSQL refuses it: a 500 that Schemathesis found), so it is bad input."""
    names = [name for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
             if "\x00" in name or "\x00" in value]
    field = names[0].replace("\x00", "") if names else "query"
    return ValidationFailed(f"{field} contains a NUL character (U+0000)", field=field,
                            detail_vi=f"Tham số {field} chứa ký tự NUL (U+0000)")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    from eoffice.deps import serve_units

    async with serve_units(app):
        yield


def create_app() -> FastAPI:
    """Build the application (routers of every domain, middleware, handlers)."""
    from eoffice.agencies.api import router as agencies_router
    from eoffice.documents.api import router as documents_router
    from eoffice.exchange.api import router as exchange_router
    from eoffice.users.api import router as users_router
    from workers.celery_app import import_task_modules

    import_task_modules()
    settings = get_settings()
    app = FastAPI(title="eoffice", version="0.1.0", lifespan=_lifespan,
                  description="Electronic document exchange for Vietnamese state bodies "
                              "(Decree 30 / edXML), with PAdES signing and verification.")
    for router in (users_router, agencies_router, documents_router, exchange_router):
        app.include_router(router, prefix=API)
    _install_optional_routers(app)

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> Response:
        return _problem(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> Response:
        return _validation_error(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        error = AppError(str(exc.detail))
        error.status_code = exc.status_code
        error.title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code,
                                                                         "HTTP error")
        error.type_slug = f"http-{exc.status_code}"
        return _problem(request, error)

    @app.exception_handler(OperationalError)
    async def _db_down(request: Request, exc: OperationalError) -> Response:
        log.warning("database error: %s", exc.__class__.__name__)
        return _problem(request, ServiceUnavailable(
            "database unavailable", detail_vi="Cơ sở dữ liệu tạm thời không truy cập được"))

    @app.exception_handler(DataError)
    async def _bad_data(request: Request, exc: DataError) -> Response:
        # Text with a NUL character that a check before the database did not catch (a file
        # name, a JSON body): PostgreSQL cannot store it; the transaction is rolled back.
        if "NUL" in str(exc.orig):
            return _problem(request, ValidationFailed(
                "text cannot contain a NUL character (U+0000)",
                detail_vi="Văn bản không được chứa ký tự NUL (U+0000)"))
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        error = AppError("internal error; the incident was logged",
                         detail_vi="Lỗi hệ thống; sự cố đã được ghi lại")
        error.status_code, error.title, error.type_slug = 500, "Internal error", "internal"
        return _problem(request, error)

    max_body = settings.max_upload_mb * 1024 * 1024 * (settings.max_attachments + 1)

    app.add_middleware(RequestContextMiddleware, max_body=max_body)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz() -> Response:
        """Database, broker and blob store reachable."""
        checks = readiness()
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks},
                            status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


def _install_optional_routers(app: FastAPI) -> None:
    """Domains that mount themselves (web UI, signing, verification, stats...)."""
    from eoffice.plugins import optional_import

    for module_name in ("eoffice.signing.api", "eoffice.verification.api", "eoffice.stats.api",
                        "eoffice.audit.api", "eoffice.webhooks.api", "eoffice.trust.api"):
        module = optional_import(module_name)
        if module is not None:
            app.include_router(module.router, prefix=API)
    web = optional_import("eoffice.web.routes")
    if web is not None:
        web.install(app)
    pki = optional_import("eoffice.signing.pki_services")
    if pki is not None:
        settings = get_settings()
        if settings.pki_dir and (settings.pki_dir / "root.pem").exists():
            app.mount("/pki", pki.create_pki_app(settings.pki_dir))


def readiness() -> dict[str, str]:
    from eoffice.blobs.service import get_blob_store
    from eoffice.db import get_engine

    checks: dict[str, str] = {}
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        from workers.celery_app import celery_app

        if get_settings().tasks_eager:
            checks["broker"] = "ok"
        else:
            with celery_app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {exc.__class__.__name__}"
    try:
        get_blob_store().ping()
        checks["blob_store"] = "ok"
    except Exception as exc:
        checks["blob_store"] = f"error: {exc.__class__.__name__}"
    return checks


def app_factory() -> Any:
    """Entry point for `uvicorn --factory eoffice.app:app_factory`."""
    return create_app()
