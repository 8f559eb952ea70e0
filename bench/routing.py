# Session 13 (2026-11-27, baseline 595-770/s), --seconds 10: a new document sent in its
#   upload request is one statement (rows.insert_family). This commit and the one before
#   (ee60ddd) run in turn, four times each: one agency's clerk 0.267, 0.289, 0.283, 0.276 ->
#   0.332, 0.327, 0.334, 0.295 (target 0.25: met; every round 0.271-0.361), 8 agencies
#   0.248-0.305 -> 0.294-0.339; api 3.2-4.1 -> 2.6-3.5 ms CPU per document, postgres
#   1.3-1.7 -> 1.1-1.4, worker 1.4-1.9 (unchanged), client 0.8-1.0. Fan-out median
#   0.063-0.096 s (met).
# Session 12 (2026-11-27, a slower machine: baseline 312-347/s), --seconds 10, the loads now
#   in alternating bursts (measure_interleaved) and the client threads without the CA bundle:
#   one agency's clerk 0.227, 0.237, 0.242 (target 0.25: NOT met), 8 agencies 0.233-0.243,
#   workers paused 0.26-0.31; api 8.4-9.0 ms CPU per document, worker 5.0-5.5, postgres
#   3.2-3.5, client 2.0-2.1 (baseline app 2.3-2.6, postgres 0.4-0.5, client 1.4-1.6).
#   Fan-out median 0.15-0.17 s (met). --concurrency 1: 0.253, 0.238. Before, with the
#   phases one after the other, the same code read 0.304, 0.270, 0.269 and, twenty minutes
#   later, 0.220.
# Session 11 (2026-11-27), --seconds 10, group commit (deps.UnitBatcher), staged blob writes,
#   deliveries and events in one statement. Final code (34ff362), five runs on a slower
#   phase (baseline 798-953/s): one agency's clerk 228-272 documents/s (0.2496-0.305, target
#   met in 4 of 5: 0.2496 in one), 8 agencies 221-252/s (0.242-0.298, met in 3 of 5); api
#   2.6-3.1 ms CPU per document, postgres 1.0-1.2, worker 1.1-1.3, client 0.7-0.9. 21bf54e,
#   five runs (baseline 1057-1115/s): 284-300/s (0.255-0.283), 8 agencies 0.237-0.273, api
#   2.3-2.4. Fan-out median 0.054-0.062 s (met). The session's start (86f0d49): 160.4/s and
#   181.9/s (0.194, 0.185 of 825.5/s and 985.9/s), api 4.38-4.43, postgres 1.87-2.08.
# Session 10 (2026-11-27), --seconds 10, five runs: baseline 537-663/s; sending 0.203-0.219
#   from one agency's clerk (target 0.25: NOT met), 0.208-0.233 from 8 agencies; with the
#   workers paused 0.223-0.249 (API 6.8-7.0 ms CPU per document, 93-96% of a core: the API
#   process bounds the figure). Drains (now until the workers are idle): 0.22-0.35 s after
#   sending, 2.0-2.5 s after the paused phase. Fan-out median 0.07-0.08 s (met).
# Session 9 (2026-11-27, a slower day: baseline 284-617/s), --seconds 10 (one run 30):
#   sending 60-132/s from one agency's clerk (0.17-0.23, target 0.25: NOT met), 65-132/s
#   from the clerks of 8 agencies (0.19-0.29; 0.25 or more in 1 run of 9). CPU ms per
#   document: api 6.0-13.0, worker 2.5-6.1, postgres 2.4-4.9, client 1.5-3.5 (all scale
#   with the machine's speed). Fan-out 0.083-0.143 s (met). At the session's start: 605/s against
#   132/s (0.218) and 136/s (0.225).
# Session 8 (2026-11-27, same machine), --seconds 10: units of work on the event loop and
#   the bench's blob store kept between runs (see bench_blob_dir): baseline 850-1146/s;
#   sending 141-247/s from one agency's clerk (0.16-0.22, target 0.25: NOT met), 178-250/s
#   from the clerks of 8 agencies (0.20-0.22). CPU ms per document: api 3.3-5.7, worker
#   1.3-1.9, postgres 1.4-2.3, client 0.7-1.3. Fan-out 0.054-0.075 s (met). At the session's
#   start: 1023/s against 183/s (0.179) and 179/s (0.175). bench/api_ab.py, thread unit
#   against loop unit (five runs): API CPU 0.88-0.96, PostgreSQL 0.88-0.93.
# Session 7 (2026-11-27, another machine: baseline 915-1180 inserts/s), --seconds 8-10:
#   sending 155-230 documents/s from one agency's clerk (0.14-0.20, target 0.25: NOT met),
#   180-245/s from the clerks of 8 agencies (0.17-0.24), 106-154/s in two requests. CPU ms
#   per document: api 3.7-5.0, worker 1.3-1.65, postgres 1.5-2.0, client 0.75-1.1. Fan-out
#   0.054-0.058 s (met). The session's first commit (ac30095) and c831038, run after one
#   another twice: one agency 0.177-0.179 -> 0.184-0.194, eight 0.168-0.174 -> 0.203-0.204.
#   bench/api_ab.py (alternating bursts): API CPU per send 5.70 -> 4.78 ms.
#   bench/request_cost.py: 18.7M -> 15.9M instructions per send request.
#   --api-processes 2 (API and baseline alike): baseline 1190-1210/s, sending 177-203/s
#   (0.15-0.17): the baseline gains more from a second process than sending does.
# Session 6 (2026-11-27), .venv/bin/python bench/routing.py --seconds 10 --rounds 5 (or 3):
#   baseline 650-764 inserts/s; sending 104-130 documents/s from one agency's clerk
#   (0.16-0.19, target 0.25: NOT met), 113-137/s from the clerks of 8 agencies (0.17-0.20),
#   68-83/s in two requests; upload floor 0.84-0.91 of the baseline. CPU ms per document:
#   api 6.1-7.4, worker 2.2-2.7, postgres 2.4-2.8, client 1.1-1.4. 100-receiver fan-out
#   0.07-0.23 s (met). The session's first commit (baff44d), run just before the last
#   figures: 82.1/s against 631.5/s (0.130), api 10.2 ms, worker 3.8, postgres 3.1.
#   bench/request_cost.py: 25.0M -> 19.4-19.7M instructions per send request (5.3M baseline).
# Session 5 (2026-11-27, the same box running at roughly half its earlier speed):
#   baseline 646-654 inserts/s; sending 73.3-82.1 documents/s in one request (0.112-0.127,
#   target 0.25: NOT met), 48.8-56.5/s in two; upload floor (the same multipart request
#   into a bare one-insert endpoint) 455-461/s = 0.70-0.71 of the baseline at 1.7 ms app
#   CPU. CPU ms per document: api 9.7-11.3, worker 3.8-4.6, postgres 3.0-3.5, client
#   1.5-1.8. 100-receiver fan-out 0.116-0.349 s (met). At the start of that session:
#   30.3-35.5/s against 412-438/s (0.069-0.086), api 19-24 ms. bench/request_cost.py:
#   36.8M -> 25.5-26.2M instructions per send request (5.3M per baseline request).
# Measured on the 2-core dev box, idle apart from this run (2026-11-27, session 4):
#   cd /work/main && .venv/bin/python bench/routing.py --seconds 10 --rounds 5
#   baseline 1006-1104 inserts/s; sending 76.2-95.0 documents/s in one request each (upload,
#   issue and send), 55-68/s in two requests: 0.076-0.086 of the baseline (target 0.25: NOT
#   met). CPU ms per document: api 9.7-12.0, worker 2.6-2.7, postgres 2.4-2.9, client
#   1.1-1.4; per baseline insert: app 0.7-0.8, postgres 0.2, client 0.4-0.5. 100-receiver
#   fan-out visible in every inbox after 0.095-0.31 s (target < 1 s: met).
# At the start of that session, same machine and command: 57.5/s against 952/s (0.060);
#   api 14.6 ms, worker 11.0 ms, postgres 5.0 ms. The machine's speed moves by +-20% within
#   minutes: compare runs made one after the other.
# Session 3: 42.6-59.9/s against 940-1010/s (0.045-0.060). Session 2 (a slower machine):
#   34.4-38.0/s against 637-674/s (0.051-0.060).
"""Routing throughput on the production path: PostgreSQL, Redis, Celery workers, uvicorn.

    .venv/bin/python bench/routing.py [--seconds 8] [--bursts 4] [--clients 8] [--receivers 100]

Measures, in one run and against the same PostgreSQL server (the baseline and the two
sending loads in alternating bursts, see measure_interleaved):
  * baseline: a bare FastAPI endpoint (uvicorn subprocess) inserting one row per request;
  * sending: documents sent per second through the real API (uvicorn subprocess), each a
    small PDF of its own sent to one receiver: first in one request (POST /documents with
    recipients) by one agency's clerk, then the same by the clerks of `--clients`
    agencies (one per client thread), then in two requests (upload a draft, send it); the
    fan-out runs in the worker. CPU per document of the api, worker, PostgreSQL and
    client processes is printed too;
  * upload floor (a diagnostic): the sending request, unchanged, into a bare endpoint that
    inserts one row: what the request's shape and form parsing cost by themselves;
  * workers paused (a diagnostic): one agency's sending again with the worker processes
    stopped (SIGSTOP) and their tasks left in the broker, then resumed and drained: the
    rate the API, PostgreSQL and the client reach on the two cores without the workers'
    share, which bounds what cheaper tasks could add to the sending figure;
  * fan-out latency: from the start of a send to 100 receivers until all 100 deliveries are in
    the receivers' inboxes (status 01), several rounds.
Targets: sending >= 25% of the baseline rate; a 100-receiver send visible in < 1 s.

Environment: EOFFICE_BENCH_DATABASE_URL (a PostgreSQL server; a scratch database is created
and dropped, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres),
EOFFICE_BENCH_BROKER_URL (default redis://127.0.0.1:6379/14, flushed) and
EOFFICE_BENCH_BLOB_DIR (the blob store, kept between runs; see bench_blob_dir).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from fastapi import File, Form, UploadFile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# --- the baseline app (imported by its own uvicorn process) --------------------------------

def baseline_factory() -> Any:
    """A bare FastAPI app whose one endpoint inserts one row (the floor of any write API)."""
    from fastapi import FastAPI
    from sqlalchemy import create_engine, text

    engine = create_engine(os.environ["BENCH_BASELINE_URL"], pool_size=10, max_overflow=20,
                           pool_pre_ping=True)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS bench_baseline "
                          "(id bigserial PRIMARY KEY, payload text, at timestamptz)"))
    app = FastAPI()

    @app.post("/insert")
    def insert(body: dict[str, Any]) -> dict[str, Any]:
        with engine.begin() as conn:
            new_id = conn.execute(text("INSERT INTO bench_baseline (payload, at) "
                                       "VALUES (:p, now()) RETURNING id"),
                                  {"p": json.dumps(body)}).scalar()
        return {"id": new_id}

    @app.post("/upload")
    def upload(metadata: Annotated[str, Form()], recipients: Annotated[str, Form()],
               file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        """The request shape of a sent document (multipart: metadata, recipients, a PDF)
        into one insert: the framework's floor for this request, a diagnostic."""
        digest = hashlib.sha256(file.file.read()).hexdigest()
        with engine.begin() as conn:
            new_id = conn.execute(text("INSERT INTO bench_baseline (payload, at) "
                                       "VALUES (:p, now()) RETURNING id"),
                                  {"p": json.dumps([metadata, recipients, digest])}).scalar()
        return {"id": new_id}

    return app


# --- harness ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def admin_exec(server_url: str, sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


def prepare_database(server_url: str, data_dir: Path, extra_communes: int) -> str:
    """A scratch database with the schema, the demo province and extra communes."""
    from sqlalchemy.engine import make_url

    name = f"eoffice_bench_{uuid.uuid4().hex[:8]}"
    admin_exec(server_url, f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    os.environ.update({"EOFFICE_DATABASE_URL": url, "EOFFICE_DATA_DIR": str(data_dir),
                       "EOFFICE_ENVIRONMENT": "test"})
    from sqlmodel import Session, create_engine, select

    from eoffice.agencies.demo import seed
    from eoffice.migrate import upgrade
    from eoffice.models import Agency

    upgrade(url)
    engine = create_engine(url)
    with Session(engine) as session:
        seed(session, data_dir)
        session.commit()
        district = session.exec(select(Agency).where(Agency.code == "000.00.11.H58")).one()
        for n in range(extra_communes):
            session.add(Agency(code=f"000.{10 + n:02d}.11.H58", name=f"UBND xã đo {n}",
                               level="commune", parent_id=district.id))
        session.commit()
    engine.dispose()
    return url


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)


def cpu_seconds(groups: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) so far of each named process group, of every PostgreSQL
    backend, and of this client: where each document's cost goes (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    totals = dict.fromkeys([*groups, "postgres"], 0.0)
    by_group = {pgid: name for name, pgid in groups.items()}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        command = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        used = (int(fields[11]) + int(fields[12])) / tick
        if command.startswith("postgres"):
            totals["postgres"] += used
        elif int(fields[2]) in by_group:
            totals[by_group[int(fields[2])]] += used
    own = os.times()
    totals["client"] = own.user + own.system
    return totals


def hammer(seconds: float, clients: int, one: Any) -> tuple[int, float]:
    """Run `one(client)` from N threads for a while; returns (completed, elapsed)."""
    import httpx

    done = [0] * clients
    errors: list[str] = []
    stop_at = time.monotonic() + seconds

    def loop(index: int) -> None:
        # Plain HTTP on this machine: verify=False skips loading the CA bundle, 58 ms of
        # CPU per client that every burst's start paid on the cores under test.
        with httpx.Client(timeout=30, verify=False) as client:
            while time.monotonic() < stop_at:
                try:
                    one(client)
                    done[index] += 1
                except Exception as exc:  # report, do not hide
                    errors.append(repr(exc))
                    return

    started = time.monotonic()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} client errors, first: {errors[0]}")
    return sum(done), time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--receivers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="fan-out sends")
    parser.add_argument("--bursts", type=int, default=4,
                        help="rounds of alternating baseline and sending bursts")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--api-processes", type=int, default=1,
                        help="uvicorn processes of the API and, alike, of the baseline")
    args = parser.parse_args()
    if args.bursts < 1 or args.seconds <= 0:
        parser.error("--bursts must be at least 1 and --seconds above 0")

    with scratch_installation(extra_communes=max(0, args.receivers - 50)) as scratch:
        results = run_processes(args, scratch)
    print(json.dumps(results, indent=2))
    return 0


def unique_pdfs() -> Callable[[], bytes]:
    """Small PDFs of one size, each its own, in this run and against earlier ones (the blob
    store outlives runs): identical files would be stored once and their arrival check
    reused, which flatters the figure."""
    from tests.helpers import make_pdf

    template = make_pdf("Bench " + "X" * 16)
    run = uuid.uuid4().hex[:8]
    serial = itertools.count()
    lock = threading.Lock()

    def unique_pdf() -> bytes:
        with lock:
            number = next(serial)
        return template.replace(b"X" * 16, f"{run}{number:08d}".encode())
    return unique_pdf


def bench_blob_dir() -> Path:
    """The blob store of every bench run: kept between runs, as a real store keeps its files.

    A fresh folder in the temp directory, deleted after each run, measured the file system
    instead: on the development machines (ext4 without a journal) the inode allocator skips
    inodes freed in the last minutes one by one, and after the deletions of a test or bench
    run, creating a file in /tmp cost 0.6-0.9 ms of CPU against 23 us in a folder with no
    recent deletions (a fifth of the API's CPU per sent document, perf: recently_deleted).
    It grows by about 45 MB per routing run on disk (each small PDF takes a 4 KB block),
    plus up to 256 MB of fan-out folders; remove it when you like, then wait a few minutes
    before the next run or point EOFFICE_BENCH_BLOB_DIR at a new folder.
    Environment: EOFFICE_BENCH_BLOB_DIR (default ~/.cache/eoffice-bench/blobs).
    """
    default = Path.home() / ".cache" / "eoffice-bench" / "blobs"
    folder = Path(os.environ.get("EOFFICE_BENCH_BLOB_DIR", str(default)))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Scratch(NamedTuple):
    workdir: Path
    data_dir: Path
    url: str
    env: dict[str, str]


@contextmanager
def scratch_installation(extra_communes: int = 0) -> Iterator[Scratch]:
    """A scratch database (schema, demo province, extra communes) on the bench's PostgreSQL,
    a flushed broker database, and the environment the app's processes need; dropped after.

    Environment: EOFFICE_BENCH_DATABASE_URL, EOFFICE_BENCH_BROKER_URL (see the docstring).
    """
    import redis

    server = os.environ.get("EOFFICE_BENCH_DATABASE_URL",
                            "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    broker = bench_broker_url()
    redis.Redis.from_url(broker).flushdb()
    workdir = Path(tempfile.mkdtemp(prefix="eoffice-bench-"))
    data_dir = workdir / "data"
    data_dir.mkdir()
    url = prepare_database(server, data_dir, extra_communes=extra_communes)
    env = {**os.environ, "EOFFICE_DATABASE_URL": url, "EOFFICE_DATA_DIR": str(data_dir),
           "EOFFICE_BROKER_URL": broker, "EOFFICE_TASKS_EAGER": "false",
           "EOFFICE_ENVIRONMENT": "test", "EOFFICE_SEED_DEMO": "false",
           "EOFFICE_LOG_JSON": "true", "BENCH_BASELINE_URL": url,
           "EOFFICE_BLOB_DIR": str(bench_blob_dir())}
    try:
        yield Scratch(workdir, data_dir, url, env)
    finally:
        from sqlalchemy.engine import make_url

        admin_exec(server, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
        redis.Redis.from_url(broker).flushdb()
        shutil.rmtree(workdir, ignore_errors=True)


def run_processes(args: argparse.Namespace, scratch: Scratch) -> dict[str, Any]:
    """The api, baseline and worker processes around `run`."""
    workdir, data_dir, url, env = scratch
    app_port, base_port = free_port(), free_port()
    uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--log-level", "warning",
               "--no-access-log", "--workers", str(args.api_processes)]
    processes = [
        start(uvicorn + ["--factory", "eoffice.app:app_factory", "--port", str(app_port)], env,
              workdir / "app.log"),
        start(uvicorn + ["--factory", "routing:baseline_factory", "--app-dir", "bench",
                         "--port", str(base_port)], env, workdir / "baseline.log"),
        start([sys.executable, "-m", "celery", "-A", "workers.celery_app:celery_app", "worker",
               "-Q", "fast,crypto,stats", "--concurrency", str(args.concurrency),
               "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
               "--without-heartbeat", "-n", f"bench-{os.getpid()}@%h"], env,
              workdir / "worker.log"),
    ]
    try:
        app, base = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{base_port}"
        wait_http(f"{app}/healthz")
        wait_http(f"{base}/docs")
        groups = {"api": processes[0].pid, "baseline": processes[1].pid,
                  "worker": processes[2].pid}
        return run(app, base, url, data_dir, args, groups)
    finally:
        for process in processes:
            stop(process)


def bench_broker_url() -> str:
    return os.environ.get("EOFFICE_BENCH_BROKER_URL", "redis://127.0.0.1:6379/14")


def broker_backlog(client: Any) -> int:
    """Messages waiting in the broker's queues or taken by a worker and not yet acknowledged
    (tasks acknowledge late, after they ran): zero once the workers are idle."""
    waiting = sum(int(client.llen(key)) for key in client.scan_iter(match="*", _type="list"))
    return waiting + int(client.hlen("unacked"))


def drain_queues(url: str, limit: float = 600.0) -> float:
    """Wait until the workers have caught up with earlier sends: fan-outs and their status
    notifications done, every outbox row published, no task waiting in the broker or
    running (arrival checks, statistics and audit sealing included); returns how long that
    took."""
    import redis
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    broker = redis.Redis.from_url(bench_broker_url())
    began = time.monotonic()
    idle_since: float | None = None
    try:
        while time.monotonic() - began < limit:
            with engine.connect() as conn:
                busy = conn.execute(text(
                    "SELECT (SELECT count(*) FROM deliveries WHERE transport_status <> "
                    "'delivered') + (SELECT count(*) FROM delivery_events WHERE code IS NOT "
                    "NULL AND notified_at IS NULL) + (SELECT count(*) FROM outbox WHERE "
                    "published_at IS NULL)")).scalar()
            busy = int(busy or 0) + broker_backlog(broker)
            now = time.monotonic()
            if busy:
                idle_since = None
            elif idle_since is None:
                idle_since = now
            # Idle for 0.2 s: a task that has just finished may still publish a follow-up.
            elif now - idle_since >= 0.2:
                return idle_since - began
            time.sleep(0.1)
    finally:
        engine.dispose()
        broker.close()
    raise RuntimeError(f"queues did not drain in {limit:.0f} s")


class Phase:
    """One measured load's totals over its bursts: requests done, seconds (a sending burst's
    includes the workers' drain after it), CPU seconds by process group, per-burst rates."""

    def __init__(self) -> None:
        self.done = 0
        self.seconds = 0.0
        self.cpu: dict[str, float] = {}
        self.rates: list[float] = []
        self.drains: list[float] = []

    def add(self, done: int, seconds: float, before: dict[str, float],
            after: dict[str, float]) -> None:
        self.done += done
        self.seconds += seconds
        self.rates.append(done / seconds)
        for name in after:
            self.cpu[name] = self.cpu.get(name, 0.0) + after[name] - before[name]

    def cpu_per_item(self) -> dict[str, float]:
        return {name: round(used / max(self.done, 1) * 1000, 2)
                for name, used in self.cpu.items() if used > 0}

    def ratios(self, baseline: Phase) -> list[float]:
        """This load's rate over the baseline's, burst by burst (same round)."""
        return [round(mine / base, 3) for mine, base in zip(self.rates, baseline.rates,
                                                            strict=True)]


def measure_interleaved(loads: dict[str, Callable[[Any], None]], url: str,
                        args: argparse.Namespace, groups: dict[str, int]) -> dict[str, Phase]:
    """The baseline and the sending loads in alternating bursts, each load `--seconds` in
    all over `--bursts` rounds, the order rotated every round.

    This machine's speed moves by +-20% within minutes, and a baseline measured in the ten
    seconds before the sending phase could meet another machine than the sending did (one
    agency's ratio read 0.22 and 0.30 in two runs of the same code twenty minutes apart).
    Bursts of each load in every round meet the same machines alike. After a sending burst
    the workers finish its tasks before the next burst starts (none runs during a baseline
    burst), and the burst is charged for the tasks it left behind at the
    machine's full capacity (their CPU time over the number of cores), not for the drain's
    wall time, most of which is the outbox waiting out its batch window
    (outbox_batch_task_seconds) with the cores idle.
    """
    phases = {name: Phase() for name in loads}
    names = list(loads)
    burst = args.seconds / args.bursts
    for round_ in range(args.bursts):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            before = cpu_seconds(groups)
            done, seconds = hammer(burst, args.clients, loads[name])
            after = cpu_seconds(groups)
            if name != "baseline":
                phases[name].drains.append(drain_queues(url))
                drained = cpu_seconds(groups)
                # The burst's leftover tasks, run after it ended, charged at the machine's
                # full capacity: their CPU time spread over every core. The client's own
                # (polling for the drain) is not the installation's.
                leftover = {group: drained[group] - after[group] for group in drained
                            if group != "client"}
                seconds += sum(leftover.values()) / (os.cpu_count() or 1)
                after = {group: after[group] + leftover.get(group, 0.0) for group in after}
            phases[name].add(done, seconds, before, after)
    return phases


def run(app: str, base: str, url: str, data_dir: Path, args: argparse.Namespace,
        groups: dict[str, int]) -> dict[str, Any]:
    import httpx
    from sqlalchemy import create_engine, text

    from eoffice.agencies.demo import read_demo_users
    from tests.helpers import metadata

    users = {u["username"]: u for u in read_demo_users(data_dir)}
    sender = "clerk.tinh"
    token = httpx.post(f"{app}/api/v1/auth/token", data={
        "username": sender, "password": users[sender]["password"]}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    unique_pdf = unique_pdfs()

    form = {"metadata": json.dumps(metadata())}
    one_receiver = [users["clerk.vuthu"]["agency_code"]]

    def baseline(client: httpx.Client) -> None:
        client.post(f"{base}/insert", json={"subject": "x" * 60}).raise_for_status()

    def send_one(client: httpx.Client) -> None:
        """One request: upload, issue and send (POST /documents with recipients)."""
        client.post(f"{app}/api/v1/documents", headers=headers,
                    data={**form, "recipients": json.dumps(one_receiver)},
                    files={"file": ("a.pdf", unique_pdf(), "application/pdf")}
                    ).raise_for_status()

    # Many senders: each client thread is the clerk of another agency, as across a
    # province. One agency's documents are numbered one at a time (its register's counter
    # row is locked from numbering to commit, Decree 30 numbers have no gaps), so the
    # one-sender figure above is also the rate of one agency's register.
    clerks = [name for name in sorted(users) if name.startswith("clerk.")
              and users[name]["agency_code"] not in (one_receiver[0],)][:args.clients]
    sender_headers = [{"Authorization": "Bearer " + httpx.post(
        f"{app}/api/v1/auth/token", data={"username": name, "password": users[name][
            "password"]}).json()["access_token"]} for name in clerks]
    assigned = threading.local()
    next_sender = itertools.count()

    def send_many(client: httpx.Client) -> None:
        """send_one, each client thread as its own agency's clerk."""
        if not hasattr(assigned, "headers"):
            assigned.headers = sender_headers[next(next_sender) % len(sender_headers)]
        client.post(f"{app}/api/v1/documents", headers=assigned.headers,
                    data={**form, "recipients": json.dumps(one_receiver)},
                    files={"file": ("a.pdf", unique_pdf(), "application/pdf")}
                    ).raise_for_status()

    def upload_floor(client: httpx.Client) -> None:
        """send_one's request into the bare app: multipart parsing and one insert."""
        client.post(f"{base}/upload", data={**form, "recipients": json.dumps(one_receiver)},
                    files={"file": ("a.pdf", unique_pdf(), "application/pdf")}
                    ).raise_for_status()

    def send_two(client: httpx.Client) -> None:
        """Two requests: upload a draft, then send it."""
        created = client.post(f"{app}/api/v1/documents", headers=headers, data=form,
                              files={"file": ("a.pdf", unique_pdf(), "application/pdf")})
        created.raise_for_status()
        client.post(f"{app}/api/v1/documents/{created.json()['id']}/send", headers=headers,
                    json={"recipients": one_receiver}).raise_for_status()

    def per_item(start: dict[str, float], end: dict[str, float], count: int
                 ) -> dict[str, float]:
        return {name: round((end[name] - start[name]) / max(count, 1) * 1000, 2)
                for name in end if end[name] - start[name] > 0}

    # Warm both (connection pools, imports) before measuring.
    hammer(1.0, 2, baseline)
    hammer(1.0, 2, send_one)
    hammer(1.0, 2, upload_floor)
    drain_queues(url)
    interleaved = measure_interleaved(
        {"baseline": baseline, "send": send_one, "many": send_many}, url, args, groups)
    base_n, base_t = interleaved["baseline"].done, interleaved["baseline"].seconds
    base_rate = base_n / base_t
    send_rate = interleaved["send"].done / interleaved["send"].seconds
    many_rate = interleaved["many"].done / interleaved["many"].seconds
    backlog_s = statistics.median(interleaved["send"].drains)
    drain_queues(url)
    two_n, two_t = hammer(args.seconds, args.clients, send_two)
    two_rate = two_n / two_t
    floor_before = cpu_seconds(groups)
    floor_n, floor_t = hammer(args.seconds, args.clients, upload_floor)
    floor_rate = floor_n / floor_t
    floor_cpu = per_item(floor_before, cpu_seconds(groups), floor_n)
    # Workers paused (a diagnostic): send_one while the worker processes are stopped, their
    # tasks waiting in the broker. What the API, PostgreSQL and the client reach without the
    # workers' share of the two cores: the most that making the workers cheaper could give.
    drain_queues(url)
    os.killpg(groups["worker"], signal.SIGSTOP)
    try:
        paused_before = cpu_seconds(groups)
        paused_n, paused_t = hammer(args.seconds, args.clients, send_one)
        paused_cpu = per_item(paused_before, cpu_seconds(groups), paused_n)
    finally:
        os.killpg(groups["worker"], signal.SIGCONT)
    paused_rate = paused_n / paused_t
    paused_drain_s = drain_queues(url)
    print(f"baseline {base_rate:.1f}/s, sending {send_rate:.1f} documents/s (one request), "
          f"{two_rate:.1f}/s (two requests); CPU ms per item: "
          f"baseline {interleaved['baseline'].cpu_per_item()}, "
          f"sending {interleaved['send'].cpu_per_item()}; {many_rate:.1f}/s from "
          f"{len(clerks)} agencies", file=sys.stderr, flush=True)
    drain_queues(url)

    engine = create_engine(url)
    with engine.connect() as conn:
        codes = [c for (c,) in conn.execute(text(
            "SELECT code FROM agencies WHERE code <> :me ORDER BY id"),
            {"me": users[sender]["agency_code"]}).all()][:args.receivers]
    latencies: list[float] = []
    drains: list[float] = []
    with httpx.Client(timeout=30) as client:
        for _ in range(args.rounds):
            created = client.post(f"{app}/api/v1/documents", headers=headers, data=form,
                                  files={"file": ("a.pdf", unique_pdf(), "application/pdf")}
                                  ).json()
            started = time.monotonic()
            client.post(f"{app}/api/v1/documents/{created['id']}/send", headers=headers,
                        json={"recipients": codes}).raise_for_status()
            while True:
                with engine.connect() as conn:
                    visible = conn.execute(text(
                        "SELECT count(*) FROM deliveries WHERE document_id = :d "
                        "AND transport_status = 'delivered' AND status_code = '01'"),
                        {"d": created["id"]}).scalar()
                if visible == len(codes):
                    break
                if time.monotonic() - started > 30:
                    raise RuntimeError(f"fan-out stuck at {visible}/{len(codes)}")
                time.sleep(0.005)
            latencies.append(time.monotonic() - started)
            drains.append(drain_queues(url))
    engine.dispose()
    ratio = send_rate / base_rate
    return {
        "baseline_inserts_per_s": round(base_rate, 1),
        "documents_sent_per_s": round(send_rate, 1),
        "documents_sent_per_s_two_requests": round(two_rate, 1),
        "documents_sent_per_s_many_senders": round(many_rate, 1),
        "many_senders_vs_baseline": round(many_rate / base_rate, 3),
        "many_senders": len(clerks),
        "cpu_ms_per_document_many_senders": interleaved["many"].cpu_per_item(),
        "send_vs_baseline": round(ratio, 3),
        "send_vs_baseline_per_round": interleaved["send"].ratios(interleaved["baseline"]),
        "many_senders_vs_baseline_per_round": interleaved["many"].ratios(
            interleaved["baseline"]),
        "send_target_met (>=0.25)": ratio >= 0.25,
        "fanout_receivers": len(codes),
        "fanout_seconds": [round(x, 3) for x in latencies],
        "fanout_median_s": round(statistics.median(latencies), 3),
        "fanout_target_met (<1 s)": max(latencies) < 1.0,
        "cpu_ms_per_baseline_insert": interleaved["baseline"].cpu_per_item(),
        "cpu_ms_per_document_during_send": interleaved["send"].cpu_per_item(),
        "upload_floor_per_s": round(floor_rate, 1),
        "upload_floor_vs_baseline": round(floor_rate / base_rate, 3),
        "cpu_ms_per_upload_floor": floor_cpu,
        "send_backlog_drain_s": round(backlog_s, 2),
        "rounds_interleaved": args.bursts, "burst_seconds": round(args.seconds / args.bursts, 2),
        "workers_paused_sent_per_s": round(paused_rate, 1),
        "workers_paused_vs_baseline": round(paused_rate / base_rate, 3),
        "cpu_ms_per_document_workers_paused": paused_cpu,
        "workers_paused_backlog_drain_s": round(paused_drain_s, 2),
        "fanout_notifications_drain_s": [round(x, 2) for x in drains],
        "clients": args.clients, "seconds": args.seconds, "worker_processes": args.concurrency,
        "api_processes": args.api_processes,
    }


if __name__ == "__main__":
    sys.exit(main())
