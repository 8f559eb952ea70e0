"""Request ids that follow a document from the API into every task it causes."""

from __future__ import annotations

import contextvars
import json
import logging
import uuid

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                         default=None)


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str | None) -> contextvars.Token[str | None]:
    return _request_id.set(value)


def reset_request_id(token: contextvars.Token[str | None]) -> None:
    _request_id.reset(token)


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id() or "-"
        return True


# Structured fields a log call may pass with `extra=` (task signals, webhook pushes...).
EXTRA_FIELDS = ("task", "task_id", "outcome", "document_id", "delivery_id", "queue")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; secrets never reach a log because none are logged."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key in EXTRA_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


def configure_logging(json_logs: bool) -> None:
    """One stderr handler on the root logger, carrying the request id on every line."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if json_logs else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def install_worker_logging() -> None:
    """Make Celery workers log through our handler (JSON when EOFFICE_LOG_JSON=true)."""
    from celery import signals

    from eoffice.settings import get_settings

    def _setup(**_: object) -> None:
        configure_logging(get_settings().log_json)

    # A receiver on setup_logging tells Celery not to install its own handlers.
    if not signals.setup_logging.receivers:
        signals.setup_logging.connect(_setup, weak=False)
