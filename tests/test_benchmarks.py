"""Smoke test of every benchmark script: ``--quick`` exits 0 and ends with the STYLE §10 JSON line.

The scripts are found by glob, so a new ``benchmarks/*.py`` is covered without touching this file
(``_common.py``, the shared helpers, is not a script). Each runs in a subprocess from the repository root with
the caller's environment (``OMP_NUM_THREADS`` and the like unchanged). ``gpu_check.py`` has its own test below, which
also reads what its JSON says (it is the one the device session runs, so a wrong label would cost device time);
``graph_speed.py`` has one in ``tests/methods/test_mirage.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
#: scripts with a test of their own that also reads their JSON: gpu_check below; graph_speed in
#: tests/methods/test_mirage.py::test_benchmark_quick (running it here too would run the same 30-50 s twice)
OWN_TEST = {"gpu_check.py", "graph_speed.py"}
SCRIPTS = sorted(p.name for p in (REPO / "benchmarks").glob("*.py") if p.name != "_common.py")


def _quick(script: str, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``benchmarks/<script> --quick`` and return its last stdout line, checked against STYLE §10."""
    proc = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--quick", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, f"{script} --quick exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{script} --quick printed nothing on stdout"
    out = json.loads(lines[-1])
    assert isinstance(out, dict)
    assert {"benchmark", "metadata", "config", "results"} <= out.keys()
    assert isinstance(out["results"], list) and out["results"], f"{script}: empty results"
    return out


GENERIC = [s for s in SCRIPTS if s not in OWN_TEST]


@pytest.mark.parametrize("script", GENERIC, ids=[s.removesuffix(".py") for s in GENERIC])
def test_benchmark_quick(script: str) -> None:
    _quick(script)


def test_gpu_check_quick(tmp_path: Path) -> None:
    # no --data-root: the generated stand-in, as on CI; TMPDIR keeps its scratch files in tmp_path
    out_file = tmp_path / "gpu_check.json"
    out = _quick("gpu_check.py", "--out", str(out_file), env={**os.environ, "TMPDIR": str(tmp_path)})
    assert out["benchmark"] == "gpu_check" and out["status"] == "complete"
    assert json.loads(out_file.read_text()) == out  # --out holds the same object, written whole
    assert [r["stage"] for r in out["results"]] == [
        "load",
        "experts",
        "eval_init",
        "random_real",
        "distill",
        "eval_final",
    ]
    data = out["data"]
    assert data["real_cifar10"] is False and "stand-in, not CIFAR-10" in data["source"]
    assert data["zca"] is True and data["num_train"] == sum(data["train_per_class"]) > 0
    cfg = out["config"]
    assert cfg["mode"].startswith("quick") and cfg["experts"]["vmapped"] and cfg["experts"]["n"] == 5
    # the learning rates replace the preset's, and the JSON says so
    assert cfg["mtt"]["preset"] == "cifar10-ipc10"
    assert cfg["mtt"]["replaced"]["lr_img"] == {"preset": 100.0, "used": 1000.0}
    assert cfg["mtt"]["replaced"]["lr_student_init"] == {"preset": 0.001, "used": 0.01}
    assert cfg["mtt"]["resolved"]["lr_lr"] == 1e-5
    assert cfg["mtt"]["resolved"].get("check_buffer", False) is False  # the small buffer is reported, not refused
    assert out["errors"] == [] and out["results"][4]["refused"] is None
    s = out["summary"]
    assert s["seconds_per_expert_epoch"] > 0 and s["ms_per_iteration"] > 0 and s["peak_mem_mb"] > 0
    assert "cpu" in s["peak_mem_kind"]
    for key in ("accuracy_iter0", "accuracy_final", "accuracy_random_real"):
        assert 0.0 <= s[key] <= 1.0, key
    assert out["modules_imported"]["kornia"] is False  # the device image has no kornia
    assert out["device_info"]["device"] == "cpu" and out["device_info"]["torch"] == out["metadata"]["torch"]
