"""Real processes for fault-tolerance tests: Redis servers, Celery workers and beat, a TCP
proxy that can cut the database away, and the settings that point the app at them."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import point_producer_at, restore_producer
from tests.integration.conftest import redis_url, wait_for  # noqa: F401 (re-exported)
from tests.platform.conftest import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]


def shared_redis_url() -> str:
    """A database of the machine's Redis for this test, or fail (CI) / skip (laptop)."""
    return redis_url()


class RedisServer:
    """Our own redis-server on a free port (the machine's Redis is never disrupted)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # appendfsync always: a broker killed with -9 keeps every message it acknowledged.
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.workdir), "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--protected-mode", "no"],
            stdout=open(self.workdir / "redis.log", "ab"), stderr=subprocess.STDOUT)
        wait_port(self.port)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class CeleryProcess:
    """A `celery worker` or `celery beat` subprocess with the test's settings."""

    def __init__(self, kind: str, env_vars: dict[str, str], log: Path) -> None:
        self.kind = kind
        self.env_vars = env_vars
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        base = [sys.executable, "-m", "celery", "-A", "workers.celery_app:celery_app"]
        if self.kind == "worker":
            command = base + ["worker", "-Q", "fast,crypto,stats", "--concurrency", "2",
                              "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                              "--without-heartbeat",
                              "-n", f"platform-{random.randint(0, 1 << 30)}@%h"]
        else:
            command = base + ["beat", "--loglevel", "INFO", "--schedule",
                              str(self.log.with_suffix(".schedule"))]
        self.process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **self.env_vars},
                                        stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def children(self) -> list[int]:
        """Pool processes of a prefork worker."""
        assert self.process is not None
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                    found.append(int(entry.name))
        return found

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        # Pool processes and verifiers that outlived their main process go too: a stray
        # worker would consume a later test's tasks.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def point_app_at(monkeypatch: pytest.MonkeyPatch, settings: dict[str, str]) -> None:
    """Set the env for the in-process app and make its Celery producer use this broker."""
    from eoffice.db import engine_for
    from eoffice.settings import get_settings

    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    engine_for.cache_clear()
    point_producer_at(settings["EOFFICE_BROKER_URL"])


def restore_app_broker() -> None:
    """Undo point_app_at for the Celery producer (settings are restored by monkeypatch)."""
    restore_producer()


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; cut() drops every connection and refuses new ones,
    which is what the app sees when its database server goes away."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:  # cut while this accept was pending
                client.close()
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._sockets.clear()

    def restore(self) -> None:
        self.start()
