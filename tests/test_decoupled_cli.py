"""The decoupled workflow on the command line: teacher -> distill (RDED) -> relabel -> eval, and the demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from condense.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_teacher_distill_relabel_eval(tmp_path: Path, capsys, digits_teacher) -> None:
    art, relabeled = tmp_path / "rded", tmp_path / "rded_fkd"
    code, _, err = _run(capsys, "distill", "--method", "rded", "--dataset", "digits", "--ipc", "1", "--out", str(art))
    assert code == 2 and "--teacher DIR" in err and "condense teachers train" in err
    code, out, _ = _run(
        capsys,
        "distill",
        "--method",
        "rded",
        "--dataset",
        "digits",
        "--ipc",
        "1",
        "--teacher",
        str(digits_teacher),
        "--out",
        str(art),
        "--quiet",
    )
    assert code == 0 and (tmp_path / "rded.safetensors").is_file()
    code, out, _ = _run(
        capsys,
        "relabel",
        str(art) + ".safetensors",
        "--dataset",
        "digits",
        "--epochs",
        "3",
        "--out",
        str(relabeled),
        "--quiet",
    )
    assert code == 0 and (tmp_path / "rded_fkd.labels" / "labels.json").is_file() and "MB of labels" in out
    code, out, _ = _run(
        capsys,
        "eval",
        str(relabeled) + ".safetensors",
        "--dataset",
        "digits",
        "--epochs",
        "3",
        "--seeds",
        "1",
        "--models",
        "convnetd2",
        "--json",
        "--quiet",
    )
    row = _last_json(out)
    assert code == 0 and row["label_source"] == "stored" and row["label_bytes"] > 0 and row["epochs"] == 3
    code, out, err = _run(
        capsys,
        "eval",
        str(relabeled) + ".safetensors",
        "--dataset",
        "digits",
        "--epochs",
        "4",
        "--seeds",
        "1",
        "--models",
        "convnetd2",
        "--json",
        "--quiet",
    )
    assert code == 2 and "holds 3 epochs" in err
    code, out, _ = _run(
        capsys,
        "eval",
        str(art) + ".safetensors",
        "--dataset",
        "digits",
        "--epochs",
        "2",
        "--seeds",
        "1",
        "--json",
        "--quiet",
    )
    row = _last_json(out)
    assert code == 0 and row["label_source"] == "online" and list(row["accuracy"]) == ["convnetd2"]
    assert row["teachers"][0]["path"] == str(Path(digits_teacher).resolve())
    code, out, _ = _run(
        capsys,
        "baseline",
        "random",
        "--dataset",
        "digits",
        "--ipc",
        "1",
        "--protocol",
        "soft_label",
        "--teacher",
        str(digits_teacher),
        "--models",
        "convnetd2",
        "--epochs",
        "2",
        "--seeds",
        "1",
        "--json",
        "--quiet",
    )
    row = _last_json(out)
    assert code == 0 and row["protocol"] == "soft_label" and row["label_kind"] == "soft"


def test_run_sre2l_prints_the_demo_keys(tmp_path: Path, capsys) -> None:
    code, out, _ = _run(
        capsys,
        "run",
        "--method",
        "sre2l",
        "--ipc",
        "1",
        "--iterations",
        "20",
        "--epochs",
        "5",
        "--seeds",
        "1",
        "--out",
        str(tmp_path),
        "--json",
        "--quiet",
    )
    res = _last_json(out)
    assert code == 0 and {"distilled_acc", "random_acc", "distilled", "random"} <= res.keys()
    assert list(res["distilled"]) == ["convnetd2"]  # the digits preset's student


def test_run_trains_the_demo_teacher_and_reports_the_relabeled_baseline(tmp_path: Path, capsys) -> None:
    code, out, _ = _run(
        capsys,
        "run",
        "--method",
        "rded",
        "--ipc",
        "1",
        "--epochs",
        "5",
        "--seeds",
        "1",
        "--out",
        str(tmp_path),
        "--json",
    )
    res = _last_json(out)
    assert code == 0 and {"distilled_acc", "random_acc"} <= res.keys()
    assert "[1/3] training the demo teacher" in out
    assert (tmp_path / "digits_convnet_bn_teacher" / "teacher.json").is_file()
    code, out, _ = _run(
        capsys,
        "run",
        "--method",
        "rded",
        "--ipc",
        "1",
        "--epochs",
        "5",
        "--seeds",
        "1",
        "--out",
        str(tmp_path),
        "--force",
    )
    assert code == 0 and "reusing the demo teacher" in out


def test_relabel_dbr_stores_two_numbers_per_view(tmp_path: Path, capsys, digits_teacher) -> None:
    from condense.synthetic import SyntheticSet

    art, dbr = tmp_path / "rr", tmp_path / "rr_dbr"
    assert main(["distill", "--method", "random_real", "--dataset", "digits", "--ipc", "1", "--out", str(art)]) == 0
    code, _, _ = _run(
        capsys,
        "relabel",
        str(art) + ".safetensors",
        "--dataset",
        "digits",
        "--teacher",
        str(digits_teacher),
        "--epochs",
        "2",
        "--mode",
        "dbr",
        "--out",
        str(dbr),
        "--quiet",
    )
    store = SyntheticSet.load(str(dbr) + ".safetensors").label_store
    assert code == 0 and store.mode == "dbr" and tuple(store.dbr(0).shape) == (10, 2)
    code, out, _ = _run(
        capsys,
        "eval",
        str(dbr) + ".safetensors",
        "--dataset",
        "digits",
        "--protocol",
        "soft_label",
        "--epochs",
        "2",
        "--seeds",
        "1",
        "--models",
        "convnetd2",
        "--json",
        "--quiet",
    )
    assert code == 0 and _last_json(out)["label_mode"] == "dbr"


@pytest.mark.parametrize(
    ("method", "ipc", "extra", "teachers"),
    [
        ("infer", "2", ["--set", "num_iterations=5"], 2),
        ("cvdd", "1", ["--set", "num_iterations=5", "--set", "relabel_epochs=3"], 3),
        ("nrrdd", "1", ["--set", "num_iterations=5"], 1),
    ],
)
def test_run_part_two_methods_train_their_teachers(tmp_path: Path, capsys, method, ipc, extra, teachers) -> None:
    code, out, _ = _run(
        capsys,
        "run",
        "--method",
        method,
        "--ipc",
        ipc,
        "--epochs",
        "3",
        "--seeds",
        "1",
        "--out",
        str(tmp_path),
        *extra,
        "--json",
    )
    res = _last_json(out)
    assert code == 0 and {"distilled_acc", "random_acc"} <= res.keys()
    assert len(list(tmp_path.glob("digits_*_teacher"))) == teachers
