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
