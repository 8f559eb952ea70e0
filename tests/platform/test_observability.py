"""/metrics (task outcomes from every worker, queue depths, webhooks), JSON logs and the
request id that follows a document from the API into the tasks it causes."""

from __future__ import annotations

import io
import json
import logging

from tests.conftest import Clients, Env
from tests.helpers import create_document


def _json_handler() -> tuple[logging.Handler, io.StringIO]:
    from eoffice.observability import JsonFormatter, RequestIdFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    return handler, stream


def test_request_id_reaches_outbox_and_task_logs(env: Env, as_user: Clients) -> None:
    from sqlmodel import select

    from eoffice.db import new_session
    from eoffice.models import OutboxMessage

    client = as_user.client
    headers = as_user.headers("clerk.minhlang")
    document = create_document(client, headers)
    handler, stream = _json_handler()
    tasks_log = logging.getLogger("eoffice.tasks")
    tasks_log.addHandler(handler)
    previous = tasks_log.level
    tasks_log.setLevel(logging.INFO)
    try:
        sent = client.post(f"/api/v1/documents/{document['id']}/send",
                           headers={**headers, "X-Request-ID": "req-7d1f-obs"},
                           json={"recipients": [env.user("clerk.vuthu")["agency_code"]]})
    finally:
        tasks_log.removeHandler(handler)
        tasks_log.setLevel(previous)
    assert sent.status_code == 202 and sent.headers["X-Request-ID"] == "req-7d1f-obs"
    with new_session() as session:
        rows = session.exec(select(OutboxMessage)).all()
    caused = {row.task for row in rows if row.request_id == "req-7d1f-obs"}
    # One receiver is delivered in the request; the arrival check and the statistics follow
    # through the outbox.
    assert {"verification.verify_arrivals", "stats.apply"} <= caused
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    by_task = {r["task"]: r for r in records}
    assert {"verification.verify_arrivals", "stats.apply"} <= set(by_task)
    for record in records:
        assert record["request_id"] == "req-7d1f-obs", record
        assert record["outcome"] == "success" and record["level"] == "INFO"


def test_metrics_export_task_outcomes_and_webhooks(env: Env, as_user: Clients) -> None:
    client = as_user.client
    headers = as_user.headers("clerk.minhlang")
    document = create_document(client, headers)
    client.post(f"/api/v1/documents/{document['id']}/send", headers=headers,
                json={"recipients": [env.user("clerk.vuthu")["agency_code"]]})
    # An endpoint nobody listens on: the push fails and is counted as pending.
    from tests.platform.conftest import free_port

    client.post("/api/v1/webhooks", headers=as_user.headers("clerk.minhlang"),
                json={"url": f"http://127.0.0.1:{free_port()}/hook"})
    accepted = client.get("/api/v1/inbox", headers=as_user.headers("clerk.vuthu")).json()
    client.post(f"/api/v1/deliveries/{accepted['items'][0]['delivery_id']}/status",
                headers=as_user.headers("clerk.vuthu"), json={"code": "03"})
    body = client.get("/metrics").text
    lines = body.splitlines()

    def value(prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))

    assert value('eoffice_task_runs_total{outcome="success",'
                 'task="verification.verify_arrivals"}') == 1
    # One status package task: the acceptance (03); the arrival went out with the fan-out.
    assert value('eoffice_task_runs_total{outcome="success",task="exchange.notify_status"}') == 1
    assert value('eoffice_task_duration_seconds_count{outcome="success",'
                 'task="verification.verify_arrivals"}') == 1
    assert value('eoffice_task_duration_seconds_sum{outcome="success",'
                 'task="verification.verify_arrivals"}') > 0
    assert value('eoffice_webhook_deliveries{status="pending"}') == 1
    assert value('eoffice_deliveries{status_code="03"') == 1
    assert value('eoffice_document_revisions{reason="upload"}') >= 1
    assert "eoffice_http_requests_total" in body


def test_json_formatter_and_queue_depths(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from eoffice.metrics import _queue_depths
    from eoffice.observability import JsonFormatter, set_request_id

    record = logging.LogRecord("eoffice.x", logging.WARNING, __file__, 1, "sở %s", ("Tư pháp",),
                               None)
    record.request_id = "abc"
    record.task = "exchange.deliver"
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "sở Tư pháp" and out["task"] == "exchange.deliver"
    assert out["request_id"] == "abc"
    set_request_id(None)

    # Queue depths on the embedded kombu SQL broker: publish two messages, count them.
    import workers.celery_app as celery_module
    from tests.helpers import point_producer_at, restore_producer

    point_producer_at(f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    try:
        for _ in range(2):
            celery_module.celery_app.send_task("exchange.deliver", args=[0], queue="stats")
        depths = _queue_depths()
        assert depths["stats"] == 2 and depths["fast"] == 0
    finally:
        restore_producer()
