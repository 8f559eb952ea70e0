"""The batched defaults: audit entries of a burst are sealed by the next seal (beat), and
task outcomes reach the shared counters at the next flush; nothing is lost in between."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import select

from tests.conftest import Clients, Env
from tests.helpers import create_document, override_settings


def test_a_burst_is_sealed_by_the_next_seal(env: Env, as_user: Clients,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from eoffice.audit import service
    from eoffice.audit.tasks import seal
    from eoffice.db import new_session

    override_settings(monkeypatch, audit_seal_interval_seconds=3600)
    monkeypatch.setattr(service, "_last_seal", [float("-inf")])
    headers = as_user.headers("clerk.minhlang")
    create_document(as_user.client, headers)   # seals: first commit in a while
    create_document(as_user.client, headers)   # within the interval: left for beat
    with new_session() as session:
        waiting = service.unsealed_count(session)
        check = service.verify_chain(session)
    assert waiting >= 1
    assert check.ok and f"{waiting} entries committed but not yet sealed" in check.notes
    assert seal.apply().get() == waiting       # what beat runs every audit_seal_beat_seconds
    with new_session() as session:
        assert service.unsealed_count(session) == 0
        check = service.verify_chain(session)
        total = len(session.exec(select(service.AuditEvent.id)).all())
    assert check.ok and check.checked == total


def test_task_outcomes_are_kept_until_the_next_flush(env: Env,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from eoffice import metrics
    from eoffice.db import new_session
    from eoffice.models import TaskStat

    def counted() -> dict[str, Any]:
        with new_session() as session:
            row = session.exec(select(TaskStat).where(TaskStat.task == "demo.task")).first()
            return {"count": row.count if row else 0,
                    "max": row.max_seconds if row else 0.0}

    override_settings(monkeypatch, task_stats_flush_seconds=3600)
    monkeypatch.setattr(metrics, "_last_flush", [float("-inf")])
    monkeypatch.setattr(metrics, "_unflushed", {})
    metrics.record_task_outcome("demo.task", "success", 0.5)   # first: flushed at once
    metrics.record_task_outcome("demo.task", "success", 2.0)   # kept in the process
    metrics.record_task_outcome("demo.task", "success", 1.0)
    assert counted() == {"count": 1, "max": 0.5}
    metrics.flush_task_outcomes()                              # next flush / process exit
    assert counted() == {"count": 3, "max": 2.0}
    metrics.flush_task_outcomes()                              # nothing twice
    assert counted()["count"] == 3
