"""The command line contract: help, listings, JSON output, clear one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import condense.data
from condense.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse refuses a flag by exiting
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A plain file, an empty folder and a small artifact the bad-flag cases point at."""
    root = tmp_path_factory.mktemp("cli")
    (root / "file.txt").write_text("keep")
    (root / "folder").mkdir()
    art = root / "rr.safetensors"
    assert main(["distill", "--method", "random_real", "--dataset", "digits", "--ipc", "1", "--out", str(art)]) == 0
    return {"root": root, "file": root / "file.txt", "folder": root / "folder", "art": art}


def _distill(*extra: str) -> list[str]:
    return ["distill", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--iterations", "1", *extra]


def _eval(*extra: str) -> list[str]:
    return ["eval", "{art}", "--dataset", "digits", "--seeds", "1", "--epochs", "1", *extra]


def _baseline(kind: str, *extra: str) -> list[str]:
    return ["baseline", kind, "--dataset", "digits", "--seeds", "1", "--epochs", "1", *extra]


def _experts(*extra: str) -> list[str]:
    return ["experts", "--dataset", "digits", "--experts", "1", "--epochs", "1", *extra]


def _demo(*extra: str) -> list[str]:
    return ["run", "--method", "random_real", "--seeds", "1", "--epochs", "1", *extra]


#: (argv, what the one stderr line must say); "{file}", "{folder}", "{art}", "{root}" name the fixture's paths.
BAD_FLAGS = [
    (_distill("--checkpoint-every", "-5", "--out", "{root}/o"), "--checkpoint-every: expected an integer >= 0"),
    (_distill("--eval-every", "-1", "--out", "{root}/o"), "--eval-every: expected an integer >= 0 (0 means never)"),
    (_distill("--checkpoint-every", "x", "--out", "{root}/o"), "--checkpoint-every"),
    (["distill", "--method", "random_real", "--dataset", "digits", "--ipc", "0", "--out", "x"], "--ipc"),
    (["distill", "--method", "random_real", "--dataset", "digits", "--ipc", "1.5", "--out", "x"], "'1.5'"),
    (["distill", "--method", "random_real", "--dataset", "digits", "--ipc", "1000000000", "--out", "{root}/o"], "139"),
    (["distill", "--method", "random_real", "--dataset", "digits", "--ipc", "200", "--out", "{root}/o"], "ipc <= 139"),
    (
        ["distill", "--method", "mtt", "--dataset", "digits", "--ipc", "1", "--buffer", "{file}", "--out", "{root}/o"],
        "expected a buffer folder holding manifest.json",
    ),
    (
        [
            "distill",
            "--method",
            "mtt",
            "--dataset",
            "digits",
            "--ipc",
            "1",
            "--buffer",
            "{folder}",
            "--out",
            "{root}/o",
        ],
        "has no manifest.json",
    ),
    (_distill("--preset", "nope", "--out", "{root}/o"), "unknown preset 'nope'"),
    (_distill("--set", "lr_img=abc", "--out", "{root}/o"), "cannot parse lr_img='abc'"),
    (_distill("--set", "lr_img=-1", "--out", "{root}/o"), "out of range"),
    (_distill("--set", "lr_img", "--out", "{root}/o"), "key=value"),
    (_distill("--set", "lr_imgg=1", "--out", "{root}/o"), "did you mean 'lr_img'"),
    (_distill("--set", "lr_img=nan", "--out", "{root}/o"), "nan"),
    (_distill("--device", "tpu9", "--out", "{root}/o"), "unknown device 'tpu9'"),
    (_distill("--threads", "0", "--out", "{root}/o"), "--threads: expected a positive integer"),
    (_distill("--threads", "x", "--out", "{root}/o"), "--threads"),
    (_distill("--seed", "-1", "--out", "{root}/o"), "--seed: expected an integer >= 0"),
    (_distill("--iterations", "0", "--out", "{root}/o"), "--iterations"),
    (_distill("--work-dir", "{file}", "--out", "{root}/o"), "is a file; expected a folder"),
    (_distill("--out", "{art}"), "pass --force"),
    (_distill("--out", "{folder}"), "is a folder"),
    (_distill("--out", "{root}/x.json"), "NAME.safetensors + NAME.json"),
    (_distill("--out", "{root}/x.png"), "ends in '.png'"),
    (_distill("--out", "{root}/o", "--bogus"), "unrecognized arguments: --bogus"),
    (["distill", "--dataset", "digits", "--ipc", "1", "--out", "x"], "required: --method"),
    (_eval("--models", ""), "--models: expected comma-separated model names"),
    (_eval("--models", ","), "--models"),
    (_eval("--models", "convnet,,resnet18"), "--models"),
    (_eval("--models", "convnett"), "did you mean"),
    (_eval("--seeds", "0"), "--seeds: expected a positive integer"),
    (_eval("--seeds", "-3"), "--seeds"),
    (_eval("--epochs", "0"), "--epochs: expected a positive integer"),
    (_eval("--protocol", "nope"), "unknown protocol 'nope'"),
    (_eval("--protocol", "graph"), "trains GNNs"),
    (_eval("--device", "tpu9"), "unknown device"),
    (["eval", "{folder}", "--dataset", "digits"], "expected an artifact file"),
    (_baseline("random", "--ipc", "1000000000"), "holds 139 training images"),
    (_baseline("random", "--ipc", "0"), "--ipc"),
    (_baseline("random", "--ipc", "1", "--models", ""), "--models"),
    (_baseline("full", "--models", ""), "--models"),
    (_baseline("full", "--seeds", "0"), "--seeds"),
    (_experts("--out", "{file}"), "is a file; expected a buffer folder"),
    (_experts("--kind", "nope", "--out", "{root}/b"), "unknown expert kind"),
    (_experts("--at-once", "0", "--out", "{root}/b"), "--at-once"),
    (_experts("--model-arg", "nope=1", "--out", "{root}/b"), "--model-arg refused by model 'convnetd2'"),
    (_experts("--model-arg", "width", "--out", "{root}/b"), "key=value"),
    (_demo("--out", "{file}"), "is a file; expected an output folder"),
    (_demo("--ipc", "1000", "--out", "{root}/r"), "ipc <= 139"),
    (_demo("--models", "", "--out", "{root}/r"), "--models"),
    (_demo("--models", "convnett", "--out", "{root}/r"), "did you mean"),
    (_demo("--protocol", "nope", "--out", "{root}/r"), "unknown protocol"),
    (["show", "{art}", "--out", "{folder}"], "is a folder"),
    (["show", "{art}", "--out", "{file}"], "pass --force"),
    (["export", "{art}", "--out", "{file}"], "is a file; expected a folder"),
    (["export", "{art}", "--format", "npz", "--out", "{file}"], "is a file; expected a folder"),
    (["export", "{art}", "--format", "png", "--out", "{root}/e"], "invalid choice: 'png'"),
]


def test_help_lists_commands():
    res = subprocess.run([sys.executable, "-m", "condense", "--help"], capture_output=True, text=True, check=True)
    commands = ("run", "experts", "distill", "eval", "baseline", "show", "export", "datasets", "models", "methods")
    for cmd in (*commands, "teachers"):
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


@pytest.mark.parametrize("argv, needle", BAD_FLAGS, ids=[" ".join(a[:2]) + " " + n[:30] for a, n in BAD_FLAGS])
def test_every_bad_flag_is_one_line(capsys, files, argv, needle):
    argv = [a.format(**files) for a in argv]
    code, out, err = _run(capsys, *argv)
    assert code == 2, (code, out, err)
    assert needle in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert files["file"].read_text() == "keep"


def _no_data(*args, **kwargs):
    raise AssertionError("the data was loaded before --out was checked")


@pytest.mark.parametrize(
    "argv",
    [
        ["distill", "--method", "random_real", "--dataset", "digits", "--ipc", "1", "--out", "{out}"],
        ["run", "--method", "random_real", "--out", "{out}"],
        ["experts", "--dataset", "digits", "--out", "{out}"],
    ],
    ids=["distill", "run", "experts"],
)
def test_a_wrong_out_is_refused_before_the_data_is_loaded(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.setattr(condense.data, "load_dataset", _no_data)
    target = tmp_path / "folder" if argv[0] == "distill" else tmp_path / "file.txt"
    target.mkdir() if argv[0] == "distill" else target.write_text("keep")
    t0 = time.perf_counter()
    code, _, err = _run(capsys, *[a.format(out=target) for a in argv])
    assert code == 2 and str(target) in err and len(err.strip().splitlines()) == 1, err
    assert time.perf_counter() - t0 < 5.0


def test_out_never_replaces_a_file_without_force(tmp_path, capsys):
    art = tmp_path / "x.safetensors"
    argv = ["distill", "--method", "random_real", "--dataset", "digits", "--ipc", "1", "--out", str(art), "--quiet"]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    assert f"{art} and {tmp_path / 'x.json'}" in out  # both files written are named
    before = {p: p.read_bytes() for p in (art, tmp_path / "x.json")}
    code, _, err = _run(capsys, *argv[:-3], "--ipc", "2", "--out", str(art))
    assert code == 2 and str(art) in err and "--force" in err
    assert {p: p.read_bytes() for p in before} == before  # byte-identical
    (tmp_path / "y.json").write_text("a user's file")  # the sidecar NAME.json is protected as well
    code, _, err = _run(capsys, *argv[:-3], "--ipc", "2", "--out", str(tmp_path / "y"))
    assert code == 2 and "y.json" in err and (tmp_path / "y.json").read_text() == "a user's file"
    code, _, err = _run(capsys, *argv[:-3], "--ipc", "2", "--out", str(art), "--force")
    assert code == 0, err
    assert art.read_bytes() != before[art]
    from condense.synthetic import SyntheticSet

    assert SyntheticSet.load(art).ipc == 2


def test_run_never_replaces_its_artifact_without_force(tmp_path, capsys):
    argv = ["run", "--method", "random_real", "--ipc", "1", "--seeds", "1", "--epochs", "1", "--quiet"]
    code, out, err = _run(capsys, *argv, "--out", str(tmp_path))
    assert code == 0, err
    art = tmp_path / "digits_random_real_ipc1.safetensors"
    assert f"{art} and {art.with_suffix('.json')}" in out
    before = art.read_bytes(), art.with_suffix(".json").read_bytes()
    code, _, err = _run(capsys, *argv, "--out", str(tmp_path))
    assert code == 2 and str(art) in err and "--force" in err, err
    assert (art.read_bytes(), art.with_suffix(".json").read_bytes()) == before
    code, _, err = _run(capsys, *argv, "--out", str(tmp_path), "--force")
    assert code == 0, err


def test_out_without_a_suffix_names_what_was_written(tmp_path, capsys):
    code, out, err = _run(
        capsys, "distill", "--method", "random_real", "--dataset", "digits", "--ipc", "1", "--out", str(tmp_path / "a")
    )
    assert code == 0, err
    assert f"{tmp_path / 'a.safetensors'} and {tmp_path / 'a.json'}" in out
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["a.json", "a.safetensors"]


def test_show_and_export_never_replace_a_file_without_force(tmp_path, capsys, files):
    for argv in (
        ["show", str(files["art"]), "--out", str(tmp_path / "g.png")],
        ["export", str(files["art"]), "--format", "npz", "--out", str(tmp_path / "e.npz")],
        ["export", str(files["art"]), "--format", "npz", "--out", str(tmp_path / "npz")],
        ["export", str(files["art"]), "--out", str(tmp_path / "pngs")],
    ):
        code, out, err = _run(capsys, *argv)
        assert code == 0, err
        written = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        code, _, err = _run(capsys, *argv)
        assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1, err
        assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == written
        code, _, err = _run(capsys, *argv, "--force")
        assert code == 0, err


def test_distill_eval_show_export_json(tmp_path, capsys):
    art = tmp_path / "rr.safetensors"
    code, _, err = _run(
        capsys, "distill", "--method", "random_real", "--dataset", "digits", "--ipc", "2", "--out", str(art), "--quiet"
    )
    assert code == 0, err
    opts = ["--seeds", "2", "--epochs", "3", "--device", "cpu", "--json", "--quiet"]
    code, out, _ = _run(capsys, "eval", str(art), "--dataset", "digits", *opts)
    assert code == 0
    row = json.loads(out.strip().splitlines()[-1])
    assert row["dataset"] == "digits" and row["ipc"] == 2
    acc = row["accuracy"]["convnet"]
    assert set(acc) >= {"mean", "std", "runs"} and len(acc["runs"]) == 2
    # the CLI prints the library's numbers: evaluate() on the saved set with the same options gives the same runs
    from condense.data import load_dataset
    from condense.eval import evaluate
    from condense.synthetic import SyntheticSet

    lib = evaluate(SyntheticSet.load(art), load_dataset("digits"), seeds=2, epochs=3)
    assert acc["runs"] == lib["accuracy"]["convnet"]["runs"]
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
