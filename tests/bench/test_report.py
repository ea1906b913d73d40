"""``condense report`` (condense/bench/report.py) and the DD-Ranking metrics (condense/eval/metrics.py).

The rows are written by hand: a digits grid of two methods (``dm`` with hard labels, ``rded`` with soft labels) at
IPC 1 and 10 on two evaluation models, their random-real rows under each protocol and a full-data row, with
accuracies chosen so that every metric has a hand-computed value and the bold and dagger cells are known.
"""

from __future__ import annotations

import builtins
import csv
import json
import math
import re
from pathlib import Path

import pytest

from condense.bench.report import CSV_COLUMNS, PLOTS_HINT, read_rows, write_report
from condense.cli import main
from condense.errors import (
    ConfigError,
    DataFormatError,
    DataNotFoundError,
    IntegrityError,
    MismatchError,
    OutputExistsError,
)
from condense.eval import metrics
from condense.io import canonical_json, sha256_bytes

E = math.e


def s(x: float) -> float:
    """DD-Ranking's squash, written out again for the expected values."""
    return (math.exp(x) - math.exp(-1)) / (E - math.exp(-1))


# ---------------------------------------------------------------------------------------------- metrics


def test_squash_bounds_and_hand_values():
    assert metrics.squash(1.0) == pytest.approx(1.0, abs=1e-12)
    assert metrics.squash(-1.0) == pytest.approx(0.0, abs=1e-12)
    assert metrics.squash(0.0) == pytest.approx(1 / (E + 1))
    a, score = metrics.lrs(0.1, 0.3)
    assert a == pytest.approx(-0.1)
    assert score == pytest.approx((math.exp(-0.1) - math.exp(-1)) / (E - math.exp(-1)))
    assert score == pytest.approx(0.2284536383)
    assert metrics.lrs(1.0, -1.0) == pytest.approx((1.0, 1.0))  # a = 1 -> 1
    assert metrics.lrs(-1.0, 1.0) == pytest.approx((-1.0, 0.0))  # a = -1 -> 0
    assert metrics.lrs(0.1, None) == (None, None)


def test_ranking_metrics_in_fractions_with_raw_gaps():
    m = metrics.ranking_metrics(
        syn=0.65, random_real=0.55, syn_hard=0.40, full_hard=0.90, syn_noaug=0.50, random_noaug=0.40
    )
    assert m.ior == pytest.approx(0.10)
    assert m.hlr == pytest.approx(0.50)
    assert m.lrs_a == pytest.approx(-0.20)
    assert m.lrs == pytest.approx(s(-0.20))
    assert (m.ars_aug_gap, m.ars_noaug_gap, m.ars_b) == pytest.approx((0.10, 0.10, 0.10))
    assert m.ars == pytest.approx(s(0.10))
    assert m.ars == pytest.approx(0.3137, abs=1e-4)  # (e^0.1 - e^-1) / (e - e^-1)
    missing = metrics.ranking_metrics(syn=0.6, random_real=0.5, syn_hard=None, full_hard=0.9)
    assert missing.ior == pytest.approx(0.1) and missing.hlr is None and missing.lrs is None and missing.ars is None


@pytest.mark.parametrize("bad", [91.0, -0.1, float("nan"), True])
def test_metrics_refuse_percent_and_junk(bad):
    with pytest.raises(ConfigError, match="fraction"):
        metrics.ior(bad, 0.5)


def test_metric_weights_checked():
    with pytest.raises(ConfigError, match="weight"):
        metrics.lrs(0.1, 0.1, w=1.5)
    with pytest.raises(ConfigError, match="percent"):
        metrics.squash(5.0)


# ---------------------------------------------------------------------------------------------- fabricated rows

MODELS = ["convnetd2", "mlp"]


def _acc(mean: float, std: float = 0.01) -> dict:
    return {"mean": mean, "std": std, "runs": [mean - std, mean + std]}


def make_row(role, method, ipc, accuracy, *, label_kind="hard", protocol="classic", hard=None, noaug=None,
             baseline=None, full=None, artifact=None, artifact_sha256=None, seconds=None, models=MODELS):  # fmt: skip
    config = {
        "dataset": "digits",
        "method": method,
        "ipc": ipc,
        "protocol": {"name": protocol, "version": 1},
        "label_kind": label_kind,
        "models": models,
        "seeds": [0, 1],
    }
    stages = {"eval": {"seconds": 2.0, "peak_mem_mb": 100.0}}
    if seconds is not None:
        stages["distill"] = {"seconds": seconds, "peak_mem_mb": 50.0, "reused": False}
    return {
        "schema": "condense-bench-row",
        "schema_version": 1,
        "cell": sha256_bytes(canonical_json(config).encode())[:16],
        "role": role,
        "dataset": "digits",
        "method": method,
        "ipc": ipc,
        "preset": None if ipc is None else f"digits-ipc{ipc}",
        "label_kind": label_kind,
        "protocol": protocol,
        "protocol_version": 1,
        "models": models,
        "seeds": [0, 1],
        "accuracy": {m: _acc(v) for m, v in accuracy.items()},
        "accuracy_hard": None if hard is None else {m: _acc(v) for m, v in hard.items()},
        "accuracy_noaug": None if noaug is None else {m: _acc(v) for m, v in noaug.items()},
        "baseline_cell": baseline["cell"] if baseline else None,
        "full_cell": full["cell"] if full else None,
        "stages": stages,
        "artifact": artifact,
        "artifact_sha256": artifact_sha256,
        "config": config,
        "condense_version": "0.1.0",
        "torch_version": "2.14.1",
        "hardware": {"device": "cpu", "name": "test-cpu", "threads": 1, "world_size": 1, "rank": 0},
        "host": "testhost",
        "finished": "2026-12-01T22:00:00Z",
    }


def grid_rows() -> dict[str, dict]:
    full = make_row("full_data", "full_data", None, {"convnetd2": 0.90, "mlp": 0.88}, seconds=None)
    r1 = make_row("random_real", "random_real", 1, {"convnetd2": 0.50, "mlp": 0.45}, seconds=0.01)
    r10 = make_row("random_real", "random_real", 10, {"convnetd2": 0.80, "mlp": 0.75}, seconds=0.02)
    kw = {"label_kind": "soft", "protocol": "soft_label"}
    s1 = make_row("random_real", "random_real", 1, {"convnetd2": 0.55, "mlp": 0.50}, noaug={"convnetd2": 0.40}, **kw)
    s10 = make_row("random_real", "random_real", 10, {"convnetd2": 0.82, "mlp": 0.78}, **kw)
    dm1_acc = {"convnetd2": 0.60, "mlp": 0.44}  # mlp: below random real (0.45) -> dagger
    dm1 = make_row("method", "dm", 1, dm1_acc, hard=dm1_acc, baseline=r1, full=full, seconds=3.0)
    dm10_acc = {"convnetd2": 0.84, "mlp": 0.79}
    dm10 = make_row("method", "dm", 10, dm10_acc, hard=dm10_acc, baseline=r10, full=full, seconds=20.0)
    rd1 = make_row("method", "rded", 1, {"convnetd2": 0.65, "mlp": 0.60}, hard={"convnetd2": 0.40, "mlp": 0.35},
                   noaug={"convnetd2": 0.50}, baseline=s1, full=full, seconds=5.0, **kw)  # fmt: skip
    # IPC 10: the same mean as its random-real row (0.82): a tie does not beat random real -> dagger
    rd10 = make_row("method", "rded", 10, {"convnetd2": 0.82, "mlp": 0.80}, baseline=s10, full=full, seconds=9.0, **kw)
    return dict(full=full, r1=r1, r10=r10, s1=s1, s10=s10, dm1=dm1, dm10=dm10, rd1=rd1, rd10=rd10)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The fabricated grid reported once (matplotlib on): the written paths and the rows."""
    tmp = tmp_path_factory.mktemp("report")
    rows = grid_rows()
    results = write_jsonl(tmp / "results.jsonl", rows.values())
    written = write_report([results], tmp / "out")
    return written, rows


def _md_table(md: str, model: str) -> list[list[str]]:
    """The cells of the ``### digits · <model>`` table, header first (separator line dropped)."""
    after = md.split(f"### digits · {model}\n", 1)[1].lstrip("\n").splitlines()
    lines = after[: next(i for i, x in enumerate(after) if not x.startswith("|"))]
    return [[c.strip() for c in line.strip("|").split("|")] for i, line in enumerate(lines) if i != 1]


def _md_row(md: str, model: str, label: str, protocol: str) -> list[str]:
    rows = [r for r in _md_table(md, model)[1:] if r[0] == label and r[2] == protocol]
    assert len(rows) == 1, (label, protocol, _md_table(md, model))
    return rows[0]


def _col(md: str, model: str, name: str) -> int:
    return _md_table(md, model)[0].index(name)


def test_markdown_table_values_bold_dagger(report):
    written, _ = report
    md = written["report.md"].read_text()
    i1, i10 = _col(md, "convnetd2", "IPC 1"), _col(md, "convnetd2", "IPC 10")
    dm = _md_row(md, "convnetd2", "dm", "classic v1")
    rded = _md_row(md, "convnetd2", "rded", "soft_label v1")
    assert dm[1] == "hard" and rded[1] == "soft"
    assert dm[i1] == "60.00 ± 1.00"  # beaten by rded at IPC 1: not bold, beats random real: no dagger
    assert rded[i1] == "**65.00 ± 1.00**"
    assert dm[i10] == "**84.00 ± 1.00**"
    assert rded[i10] == "82.00 ± 1.00 †"  # ties its random-real row
    mlp_dm = _md_row(md, "mlp", "dm", "classic v1")
    assert mlp_dm[_col(md, "mlp", "IPC 1")] == "44.00 ± 1.00 †"
    rr = _md_row(md, "convnetd2", "random real", "classic v1")
    assert rr[i1] == "50.00 ± 1.00" and rr[i10] == "80.00 ± 1.00"  # references are never bold
    full = _md_row(md, "convnetd2", "full data", "classic v1")
    assert full[i1] == full[i10] == "90.00 ± 1.00"
    # DD-Ranking metrics in every method row, fractions with 3 decimals
    assert dm[_col(md, "convnetd2", "IOR@1")] == "0.100"
    assert dm[_col(md, "convnetd2", "HLR@1")] == "0.300"
    assert dm[_col(md, "convnetd2", "LRS@1")] == f"{s(-0.1):.3f}" == "0.228"
    assert rded[_col(md, "convnetd2", "LRS@1")] == f"{s(-0.2):.3f}"
    assert rded[_col(md, "convnetd2", "ARS@1")] == f"{s(0.1):.3f}"
    assert rded[_col(md, "convnetd2", "HLR@10")] == "–"  # no hard-label evaluation at IPC 10
    assert rr[_col(md, "convnetd2", "IOR@1")] == "–"
    # ARS was never measured on mlp: its columns are left out and the table says so
    with pytest.raises(ValueError):
        _col(md, "mlp", "ARS@1")
    assert "Not measured in these rows: ARS." in md


def test_markdown_notes_from_rows(report):
    written, _ = report
    md = written["report.md"].read_text()
    assert "`" + str(written["report.md"].parent.parent / "results.jsonl") + "`" in md
    assert "classic v1" in md and "soft_label v1" in md
    assert "Seeds: 0, 1." in md
    assert "cpu test-cpu (1 threads, world size 1)" in md
    assert "condense 0.1.0, torch 2.14.1" in md
    assert "arXiv:2505.13300" in md
    # the fabricated rows carry no sets: one note lists them
    assert "digits: no artifact recorded (no image grid) for dm IPC 1, dm IPC 10, rded (soft) IPC 1" in md


def test_csv_one_line_per_row_and_model(report):
    written, rows = report
    lines = list(csv.DictReader(written["results.csv"].open()))
    assert tuple(lines[0]) == CSV_COLUMNS
    assert len(lines) == len(rows) * len(MODELS)
    dm1 = next(x for x in lines if x["cell"] == rows["dm1"]["cell"] and x["model"] == "convnetd2")
    assert float(dm1["mean"]) == pytest.approx(0.60)
    assert float(dm1["ior"]) == pytest.approx(0.1)
    assert float(dm1["hlr"]) == pytest.approx(0.3)
    assert float(dm1["lrs_a"]) == pytest.approx(-0.1)
    assert float(dm1["lrs"]) == pytest.approx(s(-0.1))
    assert dm1["ars"] == "" and dm1["beats_random"] == "true"
    assert float(dm1["distill_seconds"]) == 3.0 and dm1["baseline_cell"] == rows["r1"]["cell"]
    rd10 = next(x for x in lines if x["cell"] == rows["rd10"]["cell"] and x["model"] == "convnetd2")
    assert rd10["beats_random"] == "false" and rd10["label_kind"] == "soft"
    full = [x for x in lines if x["role"] == "full_data"]
    assert [x["ipc"] for x in full] == ["", ""] and {x["model"] for x in full} == set(MODELS)


def test_html_self_contained_and_pngs(report):
    written, _ = report
    page = written["report.html"].read_text()
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    assert links and all(v.startswith("data:image/png;base64,") for v in links), links[:3]
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "<b>65.00 ± 1.00</b>" in page and "82.00 ± 1.00&nbsp;&dagger;" in page
    pngs = {k: v for k, v in written.items() if k.endswith(".png")}
    expected = {
        "accuracy_digits_convnetd2.png",
        "accuracy_digits_mlp.png",
        "cost_digits_convnetd2.png",
        "cost_digits_mlp.png",
        "heatmap_digits_ipc1.png",
        "heatmap_digits_ipc10.png",
    }
    assert expected <= set(pngs)
    for p in pngs.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
    assert page.count("data:image/png;base64,") == len(pngs)


def test_without_matplotlib_tables_still_written(tmp_path, monkeypatch, caplog):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    written = write_report(list(grid_rows().values()), tmp_path / "out")
    assert set(written) == {"report.md", "results.csv", "report.html"}
    assert not list((tmp_path / "out").glob("*.png"))
    md = written["report.md"].read_text()
    assert PLOTS_HINT in md and "condense-dd[plots]" in PLOTS_HINT
    assert PLOTS_HINT in caplog.text
    assert "**65.00 ± 1.00**" in md


def test_no_plots_and_models_filter(tmp_path):
    written = write_report(list(grid_rows().values()), tmp_path / "out", plots=False, models=["mlp"])
    assert set(written) == {"report.md", "results.csv", "report.html"}
    md = written["report.md"].read_text()
    assert "### digits · mlp" in md and "### digits · convnetd2" not in md
    with pytest.raises(ConfigError, match="resnet18"):
        write_report(list(grid_rows().values()), tmp_path / "o2", models=["resnet18"])


def test_out_refused_unless_force(tmp_path):
    rows = list(grid_rows().values())
    write_report(rows, tmp_path / "out", plots=False)
    with pytest.raises(OutputExistsError, match="--force"):
        write_report(rows, tmp_path / "out", plots=False)
    write_report(rows, tmp_path / "out", plots=False, force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="is a file"):
        write_report(rows, tmp_path / "file", plots=False)


# ---------------------------------------------------------------------------------------------- refusals


def _bad_file(tmp_path: Path, edit) -> Path:
    rows = list(grid_rows().values())
    edit(rows)
    return write_jsonl(tmp_path / "results.jsonl", rows)


@pytest.mark.parametrize(
    "edit, error, needle, line",
    [
        (lambda rows: rows[3].pop("accuracy"), IntegrityError, "lacks the field 'accuracy'", 4),
        (lambda rows: rows[3].update(ipc="1"), IntegrityError, "field 'ipc' is a string", 4),
        (lambda rows: rows[3]["accuracy"]["mlp"].update(mean=50.0), IntegrityError, "accuracy.mlp.mean", 4),
        (lambda rows: rows[3].update(role="teacher"), IntegrityError, "field 'role'", 4),
        (lambda rows: rows[3].update(schema_version=2), DataFormatError, "schema_version", 4),
        (lambda rows: rows[3].update(schema="other"), DataFormatError, "field 'schema'", 4),
        (lambda rows: rows[3]["config"].update(ipc=99), IntegrityError, "hashes to", 4),
        (lambda rows: rows[3]["accuracy"].pop("mlp"), IntegrityError, "scores models", 4),
        (lambda rows: rows[5].update(baseline_cell=rows[0]["cell"]), MismatchError, "a full_data row", 6),
        (lambda rows: rows[5].update(baseline_cell=rows[2]["cell"]), MismatchError, "another ipc", 6),
    ],
)
def test_malformed_row_refused_with_file_line_field(tmp_path, edit, error, needle, line):
    path = _bad_file(tmp_path, edit)
    with pytest.raises(error, match=re.escape(needle)) as info:
        read_rows(path)
    assert str(info.value).startswith(f"'{path}:{line}'"), str(info.value)


def test_bad_json_line_and_missing_file(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(grid_rows()["full"]) + "\n" + '{"schema": "condense-bench-row", "cell"\n')
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:2")):
        read_rows(path)
    with pytest.raises(DataNotFoundError, match="nope.jsonl"):
        read_rows(tmp_path / "nope.jsonl")


def test_duplicate_cells(tmp_path):
    rows = grid_rows()
    a = write_jsonl(tmp_path / "a.jsonl", rows.values())
    again = dict(rows["dm1"], host="elsewhere", finished="2026-12-02T00:00:00Z")
    b = write_jsonl(tmp_path / "b.jsonl", [again])
    assert len(read_rows([a, b])) == len(rows)  # same result, other host/time: kept once
    other = json.loads(json.dumps(rows["dm1"]))
    other["accuracy"]["mlp"]["mean"] = 0.99
    c = write_jsonl(tmp_path / "c.jsonl", [other])
    with pytest.raises(MismatchError, match=re.escape(f"{c}:1") + ".*" + re.escape(f"{a}:6") + ".*accuracy"):
        read_rows([a, c])


def test_cli_report(tmp_path, capsys):
    results = write_jsonl(tmp_path / "results.jsonl", grid_rows().values())
    assert main(["report", str(results), "--out", str(tmp_path / "rep"), "--no-plots"]) == 0
    assert "report.md" in capsys.readouterr().out
    assert (tmp_path / "rep" / "results.csv").is_file()
    assert main(["report", str(results), "--out", str(tmp_path / "rep"), "--no-plots"]) == 2
    assert "--force" in capsys.readouterr().err
    results.write_text('{"schema": "condense-bench-row"}\n')
    assert main(["report", str(results), "--out", str(tmp_path / "rep2")]) == 2
    assert f"{results}:1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- a real artifact


def test_image_grid_from_a_real_artifact(tmp_path, digits):
    import torch

    from condense.io import sha256_file
    from condense.methods import distill

    syn = distill("random_real", digits, ipc=2, generator=torch.Generator().manual_seed(0))
    rows = grid_rows()
    art = syn.save(tmp_path / "sets" / f"{rows['r1']['cell']}.safetensors")
    rows["r1"]["artifact"] = str(art.relative_to(tmp_path))
    rows["r1"]["artifact_sha256"] = sha256_file(art)
    rows["dm1"]["artifact"] = "sets/missing.safetensors"
    results = write_jsonl(tmp_path / "results.jsonl", rows.values())
    written = write_report(results, tmp_path / "out")
    grids = [k for k in written if k.startswith("grids/")]
    assert grids == ["grids/grid_digits_random_real_hard_ipc1.png"]
    png = written[grids[0]].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(written[grids[0]]) as im:
        # one row per class: 10 digit classes of 8x8 images plus a 1-pixel gap, scaled by condense show's factor
        assert im.height % 10 == 0 and im.height // 10 >= 9
    md = written["report.md"].read_text()
    assert "![digits random real IPC 1](grids/grid_digits_random_real_hard_ipc1.png)" in md
    assert "sets/missing.safetensors' is missing" in md
    page = written["report.html"].read_text()
    import base64

    assert base64.b64encode(png).decode() in page
    # an artifact changed after the bench wrote its row is not shown
    rows["r1"]["artifact_sha256"] = "0" * 64
    write_jsonl(results, rows.values())
    written = write_report(results, tmp_path / "out", force=True)
    assert not [k for k in written if k.startswith("grids/")]
    assert "changed since the bench wrote its row" in written["report.md"].read_text()
