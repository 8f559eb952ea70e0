"""Celery configuration: JSON only, late acks, queues by speed, the outbox relay on beat."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from eoffice.settings import get_settings

# Every domain's tasks module; a domain not present in this tree is skipped. A module may
# define BEAT_SCHEDULE (a Celery beat_schedule fragment) for its periodic work.
TASK_MODULES = [
    "eoffice.exchange.tasks",
    "eoffice.housekeeping_tasks",
    "eoffice.signing.tasks",
    "eoffice.verification.tasks",
    "eoffice.audit.tasks",
    "eoffice.stats.tasks",
    "eoffice.webhooks.tasks",
]

QUEUES = ("fast", "crypto", "stats")


def _route(name: str, args: Any, kwargs: Any, options: Any, task: Any = None,
           **kw: Any) -> dict[str, str]:
    prefix = name.split(".", 1)[0]
    if prefix in ("signing", "verification"):
        return {"queue": "crypto"}
    if prefix == "stats":
        return {"queue": "stats"}
    return {"queue": "fast"}


def transport_options(broker_url: str, polling_interval: float,
                      visibility_timeout: int = 3600) -> dict[str, Any]:
    """Broker options; kombu's SQLAlchemy transport hands its options to create_engine."""
    if broker_url.startswith("sqla+"):
        from kombu.transport import sqlalchemy as sqla_transport

        # The embedded broker polls the database: the class attribute is its only knob.
        sqla_transport.Transport.polling_interval = polling_interval
        return {}
    return {"visibility_timeout": visibility_timeout}


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("eoffice", broker=settings.broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="fast",
        task_routes=(_route,),
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(settings.broker_url,
                                                   settings.broker_polling_interval,
                                                   settings.broker_visibility_timeout),
        worker_hijack_root_logger=False,
        timezone="UTC",
        beat_schedule={
            "outbox-relay": {"task": "housekeeping.relay_outbox",
                             "schedule": settings.outbox_relay_seconds},
            "requeue-stuck-deliveries": {"task": "housekeeping.requeue_stuck_deliveries",
                                         "schedule": 60.0},
        },
    )
    return app


celery_app = make_celery()


def run_eagerly() -> bool:
    """Unit tests run tasks in-process; everything else goes through the broker."""
    return get_settings().tasks_eager


def import_task_modules() -> None:
    """Import every present tasks module and merge their beat schedules."""
    from eoffice.plugins import optional_import

    for name in TASK_MODULES:
        module = optional_import(name)
        if module is not None:
            celery_app.conf.beat_schedule.update(getattr(module, "BEAT_SCHEDULE", {}))


import_task_modules()


@signals.worker_process_init.connect
def _reset_connections(**_: Any) -> None:
    # A forked child must not share the parent's database sockets.
    from eoffice.audit.service import seal_in_this_process
    from eoffice.db import dispose_engines
    from eoffice.outbox import publish_in_committing_thread

    dispose_engines()
    publish_in_committing_thread()
    seal_in_this_process()
    # Prefork pool processes are daemonic, and multiprocessing refuses children to daemonic
    # processes; the verification engine needs its own sandbox processes (time and memory
    # limits per file), which it terminates itself.
    import multiprocessing

    multiprocessing.current_process().daemon = False


@signals.task_prerun.connect
def _bind_request_id(task: Any = None, **_: Any) -> None:
    from eoffice.observability import set_request_id

    request_id = getattr(task.request, "request_id", None) if task else None
    batch_ids = getattr(task.request, "request_ids", None) if task else None
    if task is not None and (request_id is None or batch_ids is None):
        headers = getattr(task.request, "headers", None) or {}
        request_id = request_id or headers.get("request_id")
        batch_ids = batch_ids or headers.get("request_ids")
    if batch_ids:
        # A batch task (see eoffice.outbox) works for several requests: its log lines name
        # them all, so a search for any one request id still finds it.
        request_id = ",".join(dict.fromkeys(str(r) for r in batch_ids if r)) or request_id
    set_request_id(request_id)
