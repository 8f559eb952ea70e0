"""Instructions per API request, counted by callgrind: a measure that does not move with the
machine's speed (wall-clock and CPU time here move by +-20% within minutes).

    .venv/bin/python bench/request_cost.py [--requests 40]

In-process (FastAPI's TestClient, so the client's share is in both figures), against
PostgreSQL and Redis as in bench/routing.py:
  * baseline: bench/routing.py's bare FastAPI endpoint inserting one row;
  * send: POST /documents with recipients (upload, issue, send to one receiver), each
    document its own PDF; tasks are published to Redis, not run (no worker here).
Each phase runs in its own process under `valgrind --tool=callgrind`, with instrumentation
switched on only around the measured requests (set-up, imports and warm-up are not counted),
and prints instructions per request and the ratio send / baseline. Repeat runs agree within
about 3%; compare revisions with the same command. Needs valgrind (Debian package).

Environment: EOFFICE_BENCH_DATABASE_URL and EOFFICE_BENCH_BROKER_URL as bench/routing.py.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def _instrument(on: bool) -> None:
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

    import routing

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
            pdf = unique_pdf()
            client.post("/api/v1/documents", headers=headers, data=form,
                        files={"file": ("a.pdf", pdf, "application/pdf")}).raise_for_status()

        _measure(send, requests)


def _measure(one: Any, requests: int) -> None:
    for _ in range(max(10, requests // 4)):
        one()  # warm: connection pools, compiled-statement caches, imports
    _instrument(True)
    for _ in range(requests):
        one()
    _instrument(False)


def count(phase: str, requests: int, env: dict[str, str], data_dir: Path) -> int:
    """Instructions per request of one phase, in a fresh process under callgrind."""
    with tempfile.TemporaryDirectory() as out:
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
    parser.add_argument("--phase", choices=["baseline", "send"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_phase(args.phase, args.requests, args.data_dir)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2

    import routing

    with routing.scratch_installation() as scratch:
        baseline = count("baseline", args.requests, scratch.env, scratch.data_dir)
        send = count("send", args.requests, scratch.env, scratch.data_dir)
    print(json.dumps({"instructions_per_baseline_request": baseline,
                      "instructions_per_send_request": send,
                      "send_vs_baseline_cost": round(send / baseline, 2),
                      "requests": args.requests}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
