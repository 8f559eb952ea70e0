"""Quality gate: the lint and type checks CI relies on must pass on the whole code base."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # The venv's own tools, from the repository root so pyproject.toml settings apply.
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


def test_ruff_is_clean() -> None:
    """`ruff check eoffice workers tests bench` reports nothing."""
    result = _run("ruff", "check", "eoffice", "workers", "tests", "bench")
    assert result.returncode == 0, f"ruff found problems:\n{result.stdout}{result.stderr}"


def test_mypy_is_clean() -> None:
    """`mypy eoffice workers` reports no errors (incremental cache in .mypy_cache)."""
    result = _run("mypy", "eoffice", "workers")
    assert result.returncode == 0, f"mypy found errors:\n{result.stdout}{result.stderr}"
