"""condense bench: spec validation, content-addressed cells, an end-to-end digits grid, resume, 4 gloo ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from condense.bench.run import run_bench
from condense.bench.spec import expand, load_spec, parse_spec
from condense.errors import ConfigError
from condense.synthetic import SyntheticSet

REPO = Path(__file__).resolve().parents[2]
GRID = """
datasets = ["digits"]
methods = ["random_real", "dm"]
ipc = [1]
models = ["convnetd2"]
seeds = 1
epochs = 2
metrics = ["ior", "hlr", "lrs", "ars"]
[method.dm]
iterations = 2
"""
ROW_KEYS = {
    "schema", "schema_version", "cell", "role", "dataset", "method", "ipc", "preset", "label_kind", "protocol",
    "protocol_version", "models", "seeds", "accuracy", "accuracy_hard", "accuracy_noaug", "baseline_cell",
    "full_cell", "stages", "artifact", "artifact_sha256", "config", "condense_version", "torch_version",
    "hardware", "host", "finished",
}  # fmt: skip
LAYOUT = ("stages", "hardware", "host", "finished")


def _spec(tmp_path: Path, text: str = GRID) -> Path:
    p = tmp_path / "grid.toml"
    p.write_text(textwrap.dedent(text))
    return p


def _raw(**changes):
    import tomllib

    return {**tomllib.loads(GRID), **changes}


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"datasetz": ["digits"]}, ["datasetz", "did you mean 'datasets'"]),
        ({"methods": ["dn"]}, ["dn", "'dm'"]),
        ({"protocol_version": 7}, ["protocol_version = 7", "version 1"]),
        ({"protocol": "clasic"}, ["clasic", "'classic'"]),
        ({"metrics": ["iro"]}, ["iro", "'ior'"]),
        ({"seeds": "3"}, ["seeds", "int"]),
        ({"ipc": [0]}, ["ipc"]),
        ({"method": {"dm": {"iteration": 3}}}, ["method.dm.iteration", "iterations"]),
    ],
)
def test_spec_errors_name_the_key(changes, words):
    with pytest.raises(ConfigError) as e:
        parse_spec(_raw(**changes))
    for w in words:
        assert w in str(e.value)


def test_changed_cell_config_is_a_new_cell():
    a = {c.config.get("method", c.role): c.id for c in expand(parse_spec(_raw()))}
    raw = _raw()
    raw["method"] = {"dm": {"iterations": 3}}
    b = {c.config.get("method", c.role): c.id for c in expand(parse_spec(raw))}
    assert a["dm"] != b["dm"]  # the changed cell
    assert a["full_data"] == b["full_data"] and a["random_real"] == b["random_real"]  # the others are found again
    assert len(set(a.values())) == len(a)


@pytest.mark.parametrize("name", ["digits", "cifar10", "cifar100", "tiny", "imagenet_decoupled"])
def test_shipped_specs_validate(name, tmp_path):
    res = run_bench(REPO / "specs" / f"{name}.toml", tmp_path / "w", dry_run=True)
    roles = {c["role"] for c in res["cells"]}
    assert roles == {"method", "random_real", "full_data"}
    assert not any(c["done"] for c in res["cells"])
    assert not (tmp_path / "w").exists()  # a dry run writes nothing


def test_digits_grid_end_to_end_and_resume(tmp_path):
    spec, work = _spec(tmp_path), tmp_path / "w"
    out = tmp_path / "res" / "results.jsonl"
    res = run_bench(spec, work, out, quiet=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["cell"] for r in rows] == [c.id for c in expand(load_spec(spec))]
    assert res["ran"] == len(rows) == 4  # full_data, random_real (method), its random_real baseline, dm
    by = {r["cell"]: r for r in rows}
    for r in rows:
        assert set(r) == ROW_KEYS and r["schema"] == "condense-bench-row"
        acc = r["accuracy"]["convnetd2"]
        assert 0.0 <= acc["mean"] <= 1.0 and len(acc["runs"]) == 1
        assert r["hardware"]["world_size"] == 1 and r["stages"]["eval"]["seconds"] > 0
    dm = next(r for r in rows if r["method"] == "dm")
    assert by[dm["baseline_cell"]]["role"] == "random_real" and by[dm["full_cell"]]["role"] == "full_data"
    assert dm["accuracy_noaug"] is not None and dm["accuracy_hard"] == dm["accuracy"]
    assert (out.parent / dm["artifact"]).is_file() and dm["config"]["overrides"] == {"num_iterations": 2}
    # resume: a cell whose row is lost (killed before its row was written) is redone, the others are skipped
    lost = dm["cell"]
    first_dm = SyntheticSet.load(out.parent / dm["artifact"])
    (work / "cells" / lost / "row.json").unlink()
    res2 = run_bench(spec, work, out, quiet=True)
    assert (res2["ran"], res2["skipped"]) == (1, 3)
    runs = {c: len((work / "cells" / c / "ran.log").read_text().splitlines()) for c in by}
    assert runs == {c: 2 if c == lost else 1 for c in by}
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["cell"] for r in again] == [r["cell"] for r in rows]
    # the redone cell gives the same row (seeded from its config); the artifact's sha256 covers its provenance (the
    # time it was written), so its tensors are compared instead
    strip = lambda r: {k: v for k, v in r.items() if k not in (*LAYOUT, "artifact_sha256")}  # noqa: E731
    assert strip(again[-1]) == strip(dm)
    redone = SyntheticSet.load(out.parent / again[-1]["artifact"])
    assert torch.equal(redone.images, first_dm.images) and torch.equal(redone.labels, first_dm.labels)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def test_four_gloo_ranks_equal_one_process(tmp_path):
    spec = _spec(tmp_path, GRID.replace('["random_real", "dm"]', '["random_real", "herding", "dm"]'))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m", "condense"]
    cmd += ["bench", str(spec), "--work", str(tmp_path / "w4"), "--device", "cpu", "--quiet"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    single = run_bench(spec, tmp_path / "w1", quiet=True)
    four = [json.loads(line) for line in (tmp_path / "w4" / "results.jsonl").read_text().splitlines()]
    assert {r["hardware"]["rank"] for r in four} == {0, 1, 2, 3}  # the cells really were spread
    assert len(four) == len(single["rows"]) == 5  # full, random_real (method and baseline), herding, dm
    import torch

    from condense.synthetic import SyntheticSet

    skip = (*LAYOUT, "artifact_sha256")  # the file holds its provenance (time, host); the tensors are compared
    for a, b in zip(four, single["rows"], strict=True):
        assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}
        if a["artifact"] is not None:
            sa = SyntheticSet.load(tmp_path / "w4" / a["artifact"])
            sb = SyntheticSet.load(tmp_path / "w1" / b["artifact"])
            assert torch.equal(sa.images, sb.images) and torch.equal(sa.labels, sb.labels)
