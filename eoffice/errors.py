"""One exception hierarchy; each class carries its HTTP status and a bilingual message."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base of every error the service reports to a user."""

    status_code = 400
    type_slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, *, detail_vi: str | None = None, field: str | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.detail_vi = detail_vi
        self.field = field
        self.extra = extra or {}

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """RFC 9457 problem details."""
        body: dict[str, Any] = {
            "type": f"https://eoffice.example/problems/{self.type_slug}",
            "title": self.title,
            "status": self.status_code,
            "detail": self.detail,
        }
        if self.detail_vi:
            body["detail_vi"] = self.detail_vi
        if self.field:
            body["field"] = self.field
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class ValidationFailed(AppError):
    status_code = 422
    type_slug = "validation-error"
    title = "Invalid input"


class Unauthenticated(AppError):
    status_code = 401
    type_slug = "unauthenticated"
    title = "Authentication required"


class Forbidden(AppError):
    status_code = 403
    type_slug = "forbidden"
    title = "Forbidden"


class NotFound(AppError):
    status_code = 404
    type_slug = "not-found"
    title = "Not found"


class Conflict(AppError):
    """A state transition that makes no sense from the current state."""

    status_code = 409
    type_slug = "conflict"
    title = "Conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    type_slug = "payload-too-large"
    title = "Payload too large"


class UnsupportedMedia(AppError):
    status_code = 415
    type_slug = "unsupported-media-type"
    title = "Unsupported media type"


class TooManyRequests(AppError):
    status_code = 429
    type_slug = "too-many-requests"
    title = "Too many requests"


class ServiceUnavailable(AppError):
    status_code = 503
    type_slug = "service-unavailable"
    title = "Service unavailable"


def from_pydantic(exc: Any, prefix: str = "") -> ValidationFailed:
    """A pydantic ValidationError as a 422 naming the first bad field."""
    errors = exc.errors(include_url=False, include_context=False)
    first = errors[0]
    location = ".".join(str(p) for p in first["loc"])
    field = f"{prefix}.{location}" if prefix and location else (location or prefix)
    return ValidationFailed(f"{field}: {first['msg']}", field=field,
                            detail_vi=f"Dữ liệu không hợp lệ: {field}",
                            extra={"errors": [{"field": ".".join(str(p) for p in e["loc"]),
                                               "message": e["msg"]} for e in errors]})
