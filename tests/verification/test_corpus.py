"""The shared signed-PDF corpus, judged exactly as /work/shared/corpus/README.md says."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner
from verification_helpers import anchors_for

from eoffice.verification.commands import _standalone_app
from eoffice.verification.report import TRUST_OR_TIME_SUBINDICATIONS

REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS = REPO_ROOT.parent / "shared" / "corpus"
EXPECTED = CORPUS / "expected.csv"


def _rows() -> list[dict[str, str]]:
    if not EXPECTED.is_file():
        return []
    with EXPECTED.open(newline="") as fh:
        return list(csv.DictReader(fh))


ROWS = _rows()


def test_corpus_present() -> None:
    """Without the corpus the suite must not silently pass in CI."""
    if not EXPECTED.is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"signed-PDF corpus missing at {CORPUS}")
        pytest.skip(f"signed-PDF corpus missing at {CORPUS}")
    assert len(ROWS) == 63


def _explains_rejection(report: dict) -> bool:
    """The README's list of acceptable reasons for a not_passed file."""
    if report["indication"] in ("TOTAL_FAILED", "NO_SIGNATURE_FOUND"):
        return True
    for sig in report["signatures"]:
        if not sig["intact"] or not sig["valid"]:
            return True
        if sig["coverage"] not in ("ENTIRE_FILE", "ENTIRE_REVISION"):
            return True
        if sig["modification_level"] not in ("NONE", "LTA_UPDATES"):
            return True
        sub = sig["sub_indication"]
        if sub is not None and sub not in TRUST_OR_TIME_SUBINDICATIONS:
            return True
    return False


@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_corpus_file(row: dict[str, str], tmp_path: Path) -> None:
    pdf = CORPUS / row["file"]
    args = ["verify", str(pdf), "--revocation", "off", "--format", "json"]
    for i, cert in enumerate(anchors_for(pdf)):
        anchor = tmp_path / f"anchor{i}.der"
        anchor.write_bytes(cert.dump())
        args += ["--trust", str(anchor)]

    started = time.monotonic()
    result = CliRunner().invoke(_standalone_app(), args)
    elapsed = time.monotonic() - started

    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    report = json.loads(lines[0])
    assert elapsed <= float(row["time_limit_s"]), f"answered after {elapsed:.1f} s"
    assert result.exit_code == (0 if report["indication"] == "TOTAL_PASSED" else 1)

    rule = row["rule"]
    if rule == "not_passed":
        assert report["indication"] != "TOTAL_PASSED", report
        assert _explains_rejection(report), json.dumps(report, indent=1)
    elif rule == "not_failed":
        assert report["indication"] != "TOTAL_FAILED", json.dumps(report, indent=1)
    else:
        assert rule == "any", rule
