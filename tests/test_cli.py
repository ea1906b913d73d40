"""The command line contract: help, listings, JSON output, clear one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from condense.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_commands():
    res = subprocess.run([sys.executable, "-m", "condense", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("run", "experts", "distill", "eval", "baseline", "show", "export", "datasets", "models", "methods"):
        assert cmd in res.stdout


def test_listings(capsys):
    code, out, _ = _run(capsys, "datasets")
    assert code == 0 and "digits" in out and "cifar10" in out
    code, out, _ = _run(capsys, "models", "convnet*")
    assert code == 0 and "convnetd3" in out
    code, out, _ = _run(capsys, "methods")
    assert code == 0 and "random_real" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["baseline", "random", "--dataset", "digitz", "--ipc", "1"], "did you mean 'digits'"),
        (["baseline", "random", "--dataset", "cifar10", "--data-root", "/nonexistent", "--ipc", "1"], "/nonexistent"),
        (["eval", "/nonexistent/x.safetensors", "--dataset", "digits"], "not found"),
        (["distill", "--method", "mtd", "--dataset", "digits", "--ipc", "1", "--out", "x"], "unknown method"),
        (["baseline", "random", "--dataset", "digits", "--ipc", "1", "--models", "convnett"], "did you mean"),
    ],
)
def test_user_errors_are_one_line(capsys, argv, needle):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_distill_eval_show_export_json(tmp_path, capsys):
    art = tmp_path / "rr.safetensors"
    code, _, err = _run(
        capsys, "distill", "--method", "random_real", "--dataset", "digits", "--ipc", "2", "--out", str(art), "--quiet"
    )
    assert code == 0, err
    code, out, _ = _run(
        capsys, "eval", str(art), "--dataset", "digits", "--seeds", "2", "--epochs", "3", "--json", "--quiet"
    )
    assert code == 0
    row = json.loads(out.strip().splitlines()[-1])
    assert row["dataset"] == "digits" and row["ipc"] == 2
    acc = row["accuracy"]["convnet"]
    assert set(acc) >= {"mean", "std", "runs"} and len(acc["runs"]) == 2
    assert all(0.0 <= r <= 1.0 for r in acc["runs"])
    code, out, _ = _run(capsys, "show", str(art), "--out", str(tmp_path / "grid.png"))
    assert code == 0 and (tmp_path / "grid.png").is_file()
    code, _, _ = _run(capsys, "export", str(art), "--format", "npz", "--out", str(tmp_path / "e.npz"))
    assert code == 0 and (tmp_path / "e.npz").is_file()


def test_baseline_random_json(capsys):
    code, out, _ = _run(
        capsys,
        "baseline",
        "random",
        "--dataset",
        "digits",
        "--ipc",
        "1",
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--json",
        "--quiet",
    )
    assert code == 0
    row = json.loads(out.strip().splitlines()[-1])
    assert {"dataset", "ipc", "accuracy", "seconds"} <= set(row)
    assert row["ipc"] == 1


def test_experts_then_distill_mtt_then_eval(tmp_path, capsys):
    """The trajectory-matching workflow through the CLI: record a buffer, distill with it, evaluate."""
    buf = tmp_path / "buf"
    code, out, err = _run(
        capsys,
        "experts",
        "--dataset",
        "digits",
        "--model",
        "convnetd2",
        "--model-arg",
        "width=16",
        "--experts",
        "1",
        "--epochs",
        "3",
        "--set",
        "batch_size=64",
        "--set",
        "lr_teacher=0.05",
        "--out",
        str(buf),
        "--quiet",
    )
    assert code == 0, err
    assert (buf / "manifest.json").is_file()
    code, _, err = _run(
        capsys, "distill", "--method", "mtt", "--dataset", "digits", "--ipc", "1", "--out", str(tmp_path / "x")
    )
    assert code == 2 and "--buffer" in err  # a trajectory matcher without a buffer is a clear user error
    art = tmp_path / "mtt.safetensors"
    code, _, err = _run(
        capsys,
        "distill",
        "--method",
        "mtt",
        "--dataset",
        "digits",
        "--ipc",
        "1",
        "--buffer",
        str(buf),
        "--iterations",
        "2",
        "--set",
        "syn_steps=3",
        "--set",
        "expert_epochs=1",
        "--set",
        "max_start_epoch=2",
        "--out",
        str(art),
        "--quiet",
    )
    assert code == 0, err
    code, out, _ = _run(
        capsys, "eval", str(art), "--dataset", "digits", "--seeds", "1", "--epochs", "2", "--json", "--quiet"
    )
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["ipc"] == 1
    code, _, err = _run(
        capsys,
        "experts",
        "--dataset",
        "digits",
        "--experts",
        "1",
        "--epochs",
        "1",
        "--set",
        "lr_teachr=1",
        "--out",
        str(tmp_path / "b2"),
    )
    assert code == 2 and "did you mean 'lr_teacher'" in err
