"""Smoke test of every benchmark script: ``--quick`` exits 0 and ends with the STYLE §10 JSON line.

The scripts are found by glob, so a new ``benchmarks/*.py`` is covered without touching this file
(``_common.py``, the shared helpers, is not a script). Each runs in a subprocess from the repository root with
the caller's environment (``OMP_NUM_THREADS`` and the like unchanged).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (REPO / "benchmarks").glob("*.py") if p.name != "_common.py")


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.removesuffix(".py") for s in SCRIPTS])
def test_benchmark_quick(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{script} --quick exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{script} --quick printed nothing on stdout"
    out = json.loads(lines[-1])
    assert isinstance(out, dict)
    assert {"benchmark", "metadata", "config", "results"} <= out.keys()
    assert isinstance(out["results"], list) and out["results"], f"{script}: empty results"
