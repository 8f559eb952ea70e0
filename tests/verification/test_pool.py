"""Worker pool: files queued behind a hanging one are re-run, reports stay in input order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eoffice.verification import VerifyOptions, verify_files
from eoffice.verification.testing import SigningPKI, make_pdf, make_pki, sign


@pytest.fixture(scope="module")
def pki() -> SigningPKI:
    return make_pki()


@pytest.mark.parametrize("workers", [1, 2])
def test_files_queued_behind_a_hanging_file_are_still_verified(
    tmp_path: Path, pki: SigningPKI, workers: int
) -> None:
    good = tmp_path / "good.pdf"
    good.write_bytes(sign(make_pdf(), pki.leaves["leader"], pki.root))
    # Opening a FIFO without a writer blocks forever: the worker must be killed, and the
    # file already queued on it must be handed to its replacement.
    hang = tmp_path / "hang.pdf"
    os.mkfifo(hang)
    # Generous for a ~3 ms file: the machine may be loaded by other test runs.
    opts = VerifyOptions(trust_roots=[pki.root.asn1], revocation="off", time_limit_s=2.5)
    # Worker 1 holds files 0 and 1; once 0 is done, file 4 waits behind the hanging file 1
    # (with two workers, 2 and 3 go to worker 2).
    files = [good, hang, good, good, good]
    reports = list(verify_files(files, opts, workers=workers))
    assert [Path(r["file"]).name for r in reports] == [p.name for p in files]
    expected = ["INDETERMINATE" if p == hang else "TOTAL_PASSED" for p in files]
    assert [r["indication"] for r in reports] == expected
    assert all("time limit" in r["errors"][0] for r in reports if r["file"] == str(hang))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_sandbox_processes_exit_when_their_parent_is_killed(tmp_path: Path,
                                                            pki: SigningPKI) -> None:
    """A Celery pool process that is recycled or killed must not leave verifiers behind."""
    import signal
    import subprocess
    import sys
    import time

    good = tmp_path / "good.pdf"
    good.write_bytes(sign(make_pdf(), pki.leaves["leader"], pki.root))
    script = (
        "import os, sys, time\n"
        "from eoffice.verification import VerifyOptions\n"
        "from eoffice.verification.engine import verify_file\n"
        f"verify_file({str(good)!r}, VerifyOptions(revocation='off'))\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        parent_pid = int(parent.stdout.readline())

        def children() -> list[int]:
            found = []
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    text = stat.read_text()
                except OSError:
                    continue
                if int(text[text.rindex(")") + 2:].split()[1]) == parent_pid:
                    found.append(int(stat.parent.name))
            return found

        sandbox = children()
        assert sandbox, "verification ran without a sandbox process"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 30  # hang guard: they check every 2 s
        while any(Path(f"/proc/{pid}").exists() and "(Z)" not in _state(pid)
                  for pid in sandbox):
            assert time.monotonic() < deadline, f"sandbox processes {sandbox} outlived parent"
            time.sleep(0.2)
    finally:
        parent.kill()


def _state(pid: int) -> str:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "(Z)"
    return f"({text[text.rindex(')') + 2]})"
