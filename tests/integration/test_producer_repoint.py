"""Tests point the in-process producer at brokers of their own; doing it twice for the same
URL must still publish (kombu keeps pools per URL for the whole process)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import point_producer_at, restore_producer


def test_same_broker_url_twice_still_publishes(tmp_path: Path) -> None:
    from kombu import Connection

    import workers.celery_app as celery_module

    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    try:
        for _ in range(2):
            point_producer_at(broker)
            celery_module.celery_app.send_task("exchange.deliver", args=[0], queue="stats")
            restore_producer()
        with Connection(broker) as connection:
            queue = connection.SimpleQueue("stats")
            assert queue.qsize() == 2
            queue.close()
    finally:
        restore_producer()
