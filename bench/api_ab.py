"""The API's CPU per sent document, two checkouts side by side (A/B).

    .venv/bin/python bench/api_ab.py --a ../other-checkout [--b .] [--bursts 12]

Starts one API process (uvicorn) from each checkout on one scratch PostgreSQL database and
loads them in alternating short bursts (bench/routing.py's create-and-send request from the
clerks of --clients agencies, one receiver, unique PDFs), so that the machine's drift in
speed (+-20% within minutes here) falls on both alike; bench/routing.py's phases run
minutes apart and cannot tell a 5-10% change from noise. Prints, for each side, the API
process's CPU (user + system, /proc) per request, PostgreSQL's (it serves one side at a
time) and the rate. Two runs of one checkout against itself differ by up to ~4%. No
Celery worker runs: the tasks wait in the (flushed) broker, which the API does not notice.

Both checkouts must share this one's database schema (no migration in between); the other
checkout needs no environment of its own (it runs on this one's virtualenv, its own code
first on the path). Environment: as bench/routing.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from routing import (  # noqa: E402
    cpu_seconds,
    free_port,
    hammer,
    scratch_installation,
    stop,
    unique_pdfs,
    wait_http,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="checkout A")
    parser.add_argument("--b", type=Path, default=ROOT, help="checkout B (default: this one)")
    parser.add_argument("--bursts", type=int, default=12, help="bursts per side")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of a burst")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    sides = {"A": args.a.resolve(), "B": args.b.resolve()}
    with scratch_installation() as scratch:
        results = compare(sides, scratch, args)
    print(json.dumps(results, indent=2))
    return 0


def compare(sides: dict[str, Path], scratch: Any, args: argparse.Namespace
            ) -> dict[str, Any]:
    import httpx

    from eoffice.agencies.demo import read_demo_users
    from tests.helpers import metadata

    ports = {name: free_port() for name in sides}
    processes = {name: subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--log-level", "warning",
         "--no-access-log", "--factory", "eoffice.app:app_factory", "--port",
         str(ports[name])], cwd=root, env={**scratch.env, "PYTHONPATH": str(root)},
        stdout=open(scratch.workdir / f"api-{name}.log", "ab"), stderr=subprocess.STDOUT,
        start_new_session=True) for name, root in sides.items()}
    try:
        apps = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for app in apps.values():
            wait_http(f"{app}/healthz")
        users = {u["username"]: u for u in read_demo_users(scratch.data_dir)}
        receiver = json.dumps([users["clerk.vuthu"]["agency_code"]])
        clerks = [name for name in sorted(users) if name.startswith("clerk.")
                  and name != "clerk.vuthu"][:args.clients]
        unique_pdf = unique_pdfs()
        form = {"metadata": json.dumps(metadata()), "recipients": receiver}

        def sender(app: str) -> Any:
            tokens = [{"Authorization": "Bearer " + httpx.post(
                f"{app}/api/v1/auth/token", data={
                    "username": name, "password": users[name]["password"]}).json()[
                "access_token"]} for name in clerks]
            assigned = threading.local()
            turn = itertools.count()

            def one(client: httpx.Client) -> None:
                if not hasattr(assigned, "headers"):
                    assigned.headers = tokens[next(turn) % len(tokens)]
                pdf = unique_pdf()
                client.post(f"{app}/api/v1/documents", headers=assigned.headers, data=form,
                            files={"file": ("a.pdf", pdf, "application/pdf")}
                            ).raise_for_status()
            return one

        senders = {name: sender(app) for name, app in apps.items()}
        groups = {name: process.pid for name, process in processes.items()}
        for one in senders.values():  # warm-up: pools, caches, prepared statements
            hammer(1.0, args.clients, one)
        totals = {name: [0, 0.0, 0.0] for name in sides}
        for burst in range(args.bursts):
            for name in ("A", "B") if burst % 2 == 0 else ("B", "A"):
                before = cpu_seconds(groups)
                done, _ = hammer(args.seconds, args.clients, senders[name])
                after = cpu_seconds(groups)
                totals[name][0] += done
                totals[name][1] += after[name] - before[name]
                # PostgreSQL serves one side at a time: its CPU in a burst is that side's.
                totals[name][2] += after["postgres"] - before["postgres"]
        report: dict[str, Any] = {}
        for name, (done, cpu, database) in totals.items():
            report[name] = {"checkout": str(sides[name]), "sends": done,
                            "api_cpu_ms_per_send": round(cpu / max(done, 1) * 1000, 3),
                            "postgres_cpu_ms_per_send": round(database / max(done, 1) * 1000,
                                                              3),
                            "sends_per_s": round(done / (args.bursts * args.seconds), 1)}
        for measure in ("api", "postgres"):
            key = f"{measure}_cpu_ms_per_send"
            report[f"b_vs_a_{measure}_cpu"] = round(report["B"][key] / report["A"][key], 3)
        return report
    finally:
        for process in processes.values():
            stop(process)


if __name__ == "__main__":
    raise SystemExit(main())
