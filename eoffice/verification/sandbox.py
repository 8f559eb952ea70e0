"""Reusable pool of sandboxed worker processes (time limit per file, address-space cap).

Hostile PDFs can loop forever or balloon in memory inside pyHanko; each file is therefore
analysed in a child process with RLIMIT_AS, and the parent enforces the wall-clock limit by
killing the child. Children are reused across files (forking per file costs throughput) and
replaced when they time out or die.

Each worker holds up to two files at a time (the one it verifies and the next), so it never
idles while the parent wakes up to hand out work; the time limit of the queued file starts
when the worker reports the previous one. If a worker is killed, the file queued behind the
culprit goes back to the queue and is verified by a replacement (so a hanging file can delay
the one queued behind it by up to one time limit, never change its verdict).
"""

from __future__ import annotations

import gc
import importlib
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

from .report import INDETERMINATE, failure_report

_PRELOAD = ["eoffice.verification.core"]


def _virtual_size_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[0])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return float("inf")


def _fork_is_safe(memory_limit_mb: int) -> bool:
    """Plain fork only from a single-threaded, small parent (CLI, bench, Celery child).

    A thread holding a lock at fork time would leave it locked forever in the child, and
    RLIMIT_AS counts the address space the child inherits.
    """
    return (threading.active_count() == 1
            and _virtual_size_mb() < memory_limit_mb / 2
            and os.environ.get("EOFFICE_VERIFY_START", "auto") != "forkserver")


def _context(memory_limit_mb: int = 1024) -> Any:
    if sys.platform.startswith("linux"):
        if _fork_is_safe(memory_limit_mb):
            # Starting workers by fork costs milliseconds instead of a fresh interpreter
            # importing pyHanko (~0.7 s): import once here, children inherit it.
            for module in _PRELOAD:
                importlib.import_module(module)
            return multiprocessing.get_context("fork")
        # forkserver: cheap forks of a process that already imported pyHanko, and safe to use
        # from threaded parents (web servers, Celery) unlike plain fork.
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def _limit_memory(memory_limit_mb: int) -> None:
    try:
        import resource

        limit = int(memory_limit_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        # Not available (non-POSIX) or not allowed: the time limit still applies.
        pass


# How often an idle child checks that the process which started it is still there.
_ORPHAN_CHECK_S = 2.0


def _wait_for_message(conn: Connection, parent_pid: int) -> Any:
    """The next message, or None once the parent is gone.

    A forked child inherits the parent's end of its own pipe, so the parent dying (a Celery
    pool process recycled or killed) never shows up as EOF here: without this check every
    such death left verification processes behind, waiting forever.
    """
    while not conn.poll(_ORPHAN_CHECK_S):
        if os.getppid() != parent_pid:
            return None
    return conn.recv()


def _worker_main(conn: Connection, memory_limit_mb: int, expected_parent: int) -> None:
    """Child loop: receive (path, wire options), send back a report, until told to stop."""
    parent_pid = os.getppid()
    if expected_parent and parent_pid != expected_parent:
        return  # the parent died before this child got going
    _limit_memory(memory_limit_mb)
    from . import speedups
    from .core import analyse_file

    speedups.install()
    from .options import VerifyOptions

    cache: tuple[Any, VerifyOptions] | None = None
    while True:
        try:
            msg = _wait_for_message(conn, parent_pid)
        except (EOFError, OSError):
            return
        if msg is None:
            return
        path, wire = msg
        # The parent sends the options only when they change for this worker (None = same).
        if wire is not None and (cache is None or cache[0] != wire):
            cache = (wire, VerifyOptions.from_wire(wire))
        if cache is None:
            conn.send(failure_report(path, INDETERMINATE, None, "no verification options"))
            continue
        try:
            report = analyse_file(path, cache[1])
        except MemoryError:
            report = failure_report(path, INDETERMINATE, None, "memory limit exceeded")
        report["worker"] = {"pid": os.getpid(), "peak_rss_mb": _peak_rss_mb()}
        try:
            conn.send(report)
        except Exception as exc:  # noqa: BLE001 - e.g. unpicklable value: report that instead
            conn.send(failure_report(path, INDETERMINATE, None, f"report not sendable: {exc!r}"))


def _peak_rss_mb() -> float:
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except ImportError:
        return -1.0


# Jobs queued per worker: the next file is already in the pipe when the worker reports the
# current one, so it never idles waiting for the parent to wake up and send more.
_PIPELINE_DEPTH = 2


class _Worker:
    def __init__(self, ctx: Any, memory_limit_mb: int) -> None:
        parent, child = ctx.Pipe()
        # Forkserver children watch the forkserver (their parent), which exits with the
        # process that started it.
        expected_parent = os.getpid() if getattr(ctx, "_name", "") == "fork" else 0
        self.proc = ctx.Process(target=_worker_main,
                                args=(child, memory_limit_mb, expected_parent), daemon=True)
        if getattr(ctx, "_name", "") == "fork":
            # Objects inherited from the parent go to the permanent generation, so the child's
            # collector never walks (and copy-on-write duplicates) the parent's heap.
            gc.freeze()
            try:
                self.proc.start()
            finally:
                gc.unfreeze()
        else:
            self.proc.start()
        child.close()
        self.conn: Connection = parent
        self.jobs: deque[tuple[int, str]] = deque()  # head is the file being verified
        self.started = 0.0  # when the head job started (monotonic)
        self.wire: dict[str, Any] | None = None  # options this worker already holds

    def send(self, index: int, path: str, wire: dict[str, Any]) -> None:
        """Queue one file on this worker (options only when they changed)."""
        self.conn.send((path, None if self.wire is wire else wire))
        self.wire = wire
        if not self.jobs:
            self.started = time.monotonic()
        self.jobs.append((index, path))

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(timeout=5)
        finally:
            self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
            self.proc.join(timeout=2)
        except OSError:
            pass
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


class WorkerPool:
    """A fixed number of reusable sandboxed workers."""

    def __init__(self, size: int | None = None, memory_limit_mb: int = 1024) -> None:
        self.size = max(1, size or os.cpu_count() or 1)
        self.memory_limit_mb = memory_limit_mb
        self._ctx = _context(memory_limit_mb)
        self._workers: list[_Worker] = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker."""
        for worker in self._workers:
            worker.stop()
        self._workers = []

    def run(
        self, paths: Iterable[str], wire: dict[str, Any], time_limit_s: float
    ) -> Iterator[dict[str, Any]]:
        """Verify ``paths``; yield reports in input order, each within ``time_limit_s``."""
        pending = list(enumerate(paths))
        pending.reverse()  # a stack: pop() gives the next file in input order
        results: dict[int, dict[str, Any]] = {}
        next_out = 0
        total = len(pending)
        while len(self._workers) < min(self.size, total):
            self._workers.append(_Worker(self._ctx, self.memory_limit_mb))
        # A worker still busy with an abandoned earlier run (caller stopped iterating) would
        # answer with stale reports: start afresh.
        for position, worker in enumerate(self._workers):
            if worker.jobs:
                worker.kill()
                self._workers[position] = _Worker(self._ctx, self.memory_limit_mb)
        depth = _PIPELINE_DEPTH if total > len(self._workers) else 1
        while next_out < total:
            for worker in self._workers:
                while len(worker.jobs) < depth and pending:
                    index, path = pending.pop()
                    try:
                        worker.send(index, path, wire)
                    except OSError:
                        worker.jobs.append((index, path))
                        self._replace(worker, results, pending, "worker unavailable")
                        break
            busy = [w for w in self._workers if w.jobs]
            if busy:
                timeout = max(0.0, min(w.started for w in busy) + time_limit_s - time.monotonic())
                ready = wait([w.conn for w in busy], timeout=timeout)
                for worker in busy:
                    if worker.conn in ready:
                        try:
                            report = worker.conn.recv()
                        except (EOFError, OSError):
                            self._replace(worker, results, pending, "verification process died")
                            continue
                        index, _ = worker.jobs.popleft()
                        results[index] = report
                        # The worker moved on to its next queued file just now.
                        worker.started = time.monotonic()
                    elif time.monotonic() >= worker.started + time_limit_s:
                        self._replace(
                            worker, results, pending, f"time limit of {time_limit_s:g} s exceeded"
                        )
            while next_out in results:
                yield results.pop(next_out)
                next_out += 1

    def _replace(
        self,
        worker: _Worker,
        results: dict[int, dict[str, Any]],
        pending: list[tuple[int, str]],
        reason: str,
    ) -> None:
        """Kill ``worker``: its current file gets ``reason``, its queued files go back."""
        index, path = worker.jobs.popleft()
        worker.kill()
        elapsed = int((time.monotonic() - worker.started) * 1000)
        results[index] = failure_report(path, INDETERMINATE, None, reason, elapsed)
        while worker.jobs:
            pending.append(worker.jobs.pop())  # back on the stack, input order kept
        position = self._workers.index(worker)
        self._workers[position] = _Worker(self._ctx, self.memory_limit_mb)
