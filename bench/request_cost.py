"""Instructions per API request, counted by callgrind: a measure that does not move with the
machine's speed (wall-clock and CPU time here move by +-20% within minutes).

    .venv/bin/python bench/request_cost.py [--requests 40]

In-process (FastAPI's TestClient, so the client's share is in both figures), against
PostgreSQL and Redis as in bench/routing.py:
  * baseline: bench/routing.py's bare FastAPI endpoint inserting one row;
  * send: POST /documents with recipients (upload, issue, send to one receiver), each
    document its own PDF; tasks are published to Redis, not run (no worker here);
  * worker (--worker-documents N, default 100): what the Celery pool process spends per sent
    document. The documents are sent first (not counted) in groups of --batch (25: what the
    outbox gathers in its 0.25 s window at ~100 documents/s), then every task they caused
    is taken from Redis and run in this process, as a pool process runs it (its outbox
    publishes in the committing thread, its commits seal the audit chain), until the queues
    are empty; the follow-up tasks they publish are run too. The verification sandbox runs
    outside valgrind (a forkserver child is not traced): its analysis of the files is not in
    this figure, the pool process's side of it (planning, IPC, storing) is.
Each phase runs in its own process under `valgrind --tool=callgrind`, with instrumentation
switched on only around the measured requests (set-up, imports and warm-up are not counted),
and prints instructions per request and the ratio send / baseline. Repeat runs agree within
about 3%; compare revisions with the same command. Needs valgrind (Debian package).

    .venv/bin/python bench/request_cost.py --only worker   # one phase (repeatable)

Session 13 (2026-11-27): send 18.08M -> 16.16M and 16.37M with a new document's row,
number, deliveries and events in one statement; baseline 5.29M; worker 4.74M and 4.90M.

Session 12 (2026-11-27): baseline 5.29M, send 19.8M instructions per request; worker 5.87M
and 6.07M per document (two runs): arrival checks 3.25M, statistics 1.88M, audit sealing
0.93M (BENCH_WORKER_TASK). Passing the batch's files to the sandbox down one pipe with the
options sent once (instead of one round trip per file) gave 3.21M: not kept.

Environment: EOFFICE_BENCH_DATABASE_URL and EOFFICE_BENCH_BROKER_URL as bench/routing.py;
BENCH_WORKER_TASK (a task name: count only its runs), BENCH_CALLGRIND_DIR (keep the
profiles there), BENCH_NO_VALGRIND and BENCH_CPROFILE (a phase run without valgrind, its
counted tasks profiled by cProfile into that file).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def _instrument(on: bool) -> None:
    if os.environ.get("BENCH_NO_VALGRIND"):  # a dry run of a phase, outside valgrind
        return
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
                   check=True, capture_output=True)


def run_phase(phase: str, requests: int, data_dir: Path) -> None:
    """Inside valgrind: warm up, then count `requests` requests of one kind."""
    from fastapi.testclient import TestClient

    if phase == "baseline":
        import routing

        with TestClient(routing.baseline_factory()) as client:
            def one() -> None:
                client.post("/insert", json={"subject": "x" * 60}).raise_for_status()

            _measure(one, requests)
        return

    with api_sender(data_dir) as send:
        _measure(send, requests)


@contextmanager
def api_sender(data_dir: Path) -> Iterator[Callable[[], None]]:
    """The app in this process (FastAPI's TestClient) and a function that sends one document
    as bench/routing.py does: POST /documents with recipients, one receiver, its own PDF."""
    import routing
    from fastapi.testclient import TestClient

    from eoffice.agencies.demo import read_demo_users
    from eoffice.app import create_app
    from tests.helpers import metadata

    users = {u["username"]: u for u in read_demo_users(data_dir)}
    unique_pdf = routing.unique_pdfs()
    with TestClient(create_app()) as client:
        token = client.post("/api/v1/auth/token", data={
            "username": "clerk.tinh", "password": users["clerk.tinh"]["password"]}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        form = {"metadata": json.dumps(metadata()),
                "recipients": json.dumps([users["clerk.vuthu"]["agency_code"]])}

        def send() -> None:
            client.post("/api/v1/documents", headers=headers, data=form,
                        files={"file": ("a.pdf", unique_pdf(), "application/pdf")}
                        ).raise_for_status()

        yield send


def feed_documents(groups: int, batch: int, data_dir: Path) -> None:
    """Send groups of documents through the API in this process (not counted); each
    group's tasks leave as the threaded publisher sends them under load: one batch task
    per kind for the group."""
    from eoffice import outbox

    with api_sender(data_dir) as send:
        for _ in range(groups):
            for _ in range(batch):
                send()
            outbox.flush_publisher()


def run_worker_phase() -> None:
    """Inside valgrind, as a Celery pool process: run the queued tasks (warm-up), tell the
    parent, wait for it to queue the measured documents' tasks, run them counted."""
    import base64

    import redis
    import routing

    from eoffice.audit.service import seal_in_this_process
    from eoffice.outbox import flush_publisher, publish_in_committing_thread
    from workers.celery_app import QUEUES, celery_app

    publish_in_committing_thread()
    seal_in_this_process()
    broker = redis.Redis.from_url(routing.bench_broker_url())

    only = os.environ.get("BENCH_WORKER_TASK")  # count one task's instructions only
    profile = None
    if os.environ.get("BENCH_CPROFILE"):  # a dry run's profile of the counted tasks
        import cProfile

        profile = cProfile.Profile()

    def run_queued_tasks(counted: bool = False) -> int:
        ran = 0
        while True:
            flush_publisher()
            raw = next((m for q in QUEUES if (m := broker.rpop(q)) is not None), None)
            if raw is None:
                return ran
            message = json.loads(raw)
            args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
            name = message["headers"]["task"]
            if counted and only:
                _instrument(name == only)
            if counted and profile is not None and (not only or name == only):
                profile.runcall(celery_app.tasks[name], *args, **kwargs)
            else:
                celery_app.tasks[name](*args, **kwargs)
            ran += 1

    run_queued_tasks()  # warm: imports, compiled-statement caches, the sandbox
    print("ready", flush=True)
    sys.stdin.readline()
    _instrument(True)
    ran = run_queued_tasks(True)
    if profile is not None:
        profile.dump_stats(os.environ["BENCH_CPROFILE"])
    _instrument(False)
    print(f"tasks run: {ran}", file=sys.stderr)


def count_worker(documents: int, batch: int, env: dict[str, str], data_dir: Path) -> int:
    """Instructions per document of the worker phase (see the module's docstring)."""
    def feed(groups: int) -> None:
        subprocess.run([sys.executable, __file__, "--phase", "feed", "--worker-documents",
                        str(groups * batch), "--batch", str(batch), "--data-dir",
                        str(data_dir)], env=env, check=True, capture_output=True)

    feed(1)
    with tempfile.TemporaryDirectory() as scratch_out:
        out = os.environ.get("BENCH_CALLGRIND_DIR") or scratch_out
        valgrind = [] if os.environ.get("BENCH_NO_VALGRIND") else [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out}/callgrind.%p"]
        worker = subprocess.Popen([*valgrind, sys.executable, __file__, "--phase", "worker"],
                                  env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        assert worker.stdin is not None and worker.stdout is not None
        if worker.stdout.readline().strip() != "ready":
            raise RuntimeError(f"worker phase failed:\n{worker.communicate()[1][-3000:]}")
        feed(documents // batch)
        worker.stdin.write("go\n")
        worker.stdin.flush()
        _, errors = worker.communicate(timeout=3600)
    found = re.findall(r"Collected : (\d+)", errors)
    if worker.returncode != 0 or (valgrind and not found):
        raise RuntimeError(f"worker phase failed:\n{errors[-3000:]}")
    return int(found[-1]) // documents if found else 0


def _measure(one: Any, requests: int) -> None:
    for _ in range(max(10, requests // 4)):
        one()  # warm: connection pools, compiled-statement caches, imports
    _instrument(True)
    for _ in range(requests):
        one()
    _instrument(False)


def count(phase: str, requests: int, env: dict[str, str], data_dir: Path) -> int:
    """Instructions per request of one phase, in a fresh process under callgrind."""
    with tempfile.TemporaryDirectory() as scratch_out:
        # BENCH_CALLGRIND_DIR keeps the profiles (callgrind_annotate --inclusive=yes).
        out = os.environ.get("BENCH_CALLGRIND_DIR") or scratch_out
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={out}/callgrind.%p", sys.executable, __file__,
             "--phase", phase, "--requests", str(requests), "--data-dir", str(data_dir)],
            env=env, capture_output=True, text=True, timeout=3600)
    found = re.findall(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"{phase} failed:\n{done.stderr[-3000:]}")
    return int(found[-1]) // requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--worker-documents", type=int, default=100)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--only", choices=["baseline", "send", "worker"], action="append",
                        help="run only these phases (repeatable)")
    parser.add_argument("--phase", choices=["baseline", "send", "worker", "feed"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.requests, args.batch, args.worker_documents) < 1:
        parser.error("--requests, --batch and --worker-documents must be at least 1")
    if args.phase == "worker":
        run_worker_phase()
        return 0
    if args.phase == "feed":
        feed_documents(args.worker_documents // args.batch, args.batch, args.data_dir)
        return 0
    if args.phase:
        run_phase(args.phase, args.requests, args.data_dir)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2

    import routing

    phases = args.only or ["baseline", "send", "worker"]
    out: dict[str, Any] = {}
    with routing.scratch_installation() as scratch:
        if "baseline" in phases:
            out["instructions_per_baseline_request"] = count(
                "baseline", args.requests, scratch.env, scratch.data_dir)
        if "send" in phases:
            out["instructions_per_send_request"] = count(
                "send", args.requests, scratch.env, scratch.data_dir)
        if "worker" in phases:
            documents = max(1, args.worker_documents // args.batch) * args.batch
            out["instructions_per_document_in_worker"] = count_worker(
                documents, args.batch, scratch.env, scratch.data_dir)
    if "instructions_per_baseline_request" in out and "instructions_per_send_request" in out:
        out["send_vs_baseline_cost"] = round(out["instructions_per_send_request"]
                                             / out["instructions_per_baseline_request"], 2)
    out["requests"] = args.requests
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
