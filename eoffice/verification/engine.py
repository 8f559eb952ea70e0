"""Public entry points of the PDF signature verification engine."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .options import DEFAULT_WEAK_ALGORITHMS_BEFORE, RevocationMode, VerifyOptions
from .report import INDETERMINATE, failure_report
from .sandbox import WorkerPool

__all__ = [
    "DEFAULT_WEAK_ALGORITHMS_BEFORE",
    "RevocationMode",
    "VerifyOptions",
    "verify_file",
    "verify_files",
]

# One long-lived pool for single-file calls (API/worker code calls verify_file repeatedly).
_shared_lock = threading.Lock()
_shared_pools: dict[int, WorkerPool] = {}


def _close_shared() -> None:
    for pool in _shared_pools.values():
        pool.close()
    _shared_pools.clear()


atexit.register(_close_shared)


def verify_file(path: str | Path, options: VerifyOptions) -> dict[str, Any]:
    """Verify one PDF in a sandboxed worker and return its report; never raises."""
    try:
        with _shared_lock:
            pool = _shared_pools.get(options.memory_limit_mb)
            if pool is None:
                pool = _shared_pools[options.memory_limit_mb] = WorkerPool(
                    size=1, memory_limit_mb=options.memory_limit_mb
                )
            return next(pool.run([str(path)], options.to_wire(), options.time_limit_s))
    except Exception as exc:  # noqa: BLE001 - the contract is a report, not an exception
        return failure_report(str(path), INDETERMINATE, None, f"verification failed: {exc!r}")


def verify_files(
    paths: Iterable[str | Path], options: VerifyOptions, workers: int | None = None
) -> Iterator[dict[str, Any]]:
    """Verify many PDFs with a reused pool of sandboxed workers; reports in input order."""
    items = [str(p) for p in paths]
    if not items:
        return
    done = 0
    try:
        with WorkerPool(size=min(workers or len(items), len(items)) if workers else None,
                        memory_limit_mb=options.memory_limit_mb) as pool:
            for report in pool.run(items, options.to_wire(), options.time_limit_s):
                done += 1
                yield report
    except Exception as exc:  # noqa: BLE001
        for path in items[done:]:
            yield failure_report(path, INDETERMINATE, None, f"verification failed: {exc!r}")
