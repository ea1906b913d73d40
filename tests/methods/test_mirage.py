"""Mirage: mining, the config and presets, the artifact, theta selection, and the must-show claims of issue 5.

Graph evaluation itself (rows, baselines, checkpoint selection) is tested in ``tests/eval/test_graphs.py``; the
tree-set format in ``tests/test_graph_summary.py``; canonical computation trees in ``tests/data/test_tu.py``.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from condense.config import config_from_dict, config_to_dict
from condense.data import load_dataset
from condense.errors import ConfigError
from condense.eval import GRAPH_PROTOCOL, evaluate, random_real_baseline
from condense.graph_summary import expand_summary
from condense.methods import distill, get_method
from condense.methods.mirage import PRESETS, MirageConfig, mine_frequent_sets
from condense.synthetic import SyntheticSet

ROOT = Path(__file__).resolve().parents[2]
# a short protocol so the whole graph suite stays well under a minute on 2 cores
FAST = GRAPH_PROTOCOL.replace(epochs=20, min_steps=300)


@pytest.fixture(scope="module")
def graphs():
    return load_dataset("synthetic_graphs")


def _brute_force(trans: list[set[int]], min_count: int) -> dict[tuple[int, ...], int]:
    items = sorted(set().union(*trans))
    out = {}
    for r in range(1, len(items) + 1):
        for s in itertools.combinations(items, r):
            sup = sum(1 for t in trans if set(s) <= t)
            if sup >= min_count:
                out[s] = sup
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mining_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    trans = [set(rng.choice(7, size=rng.integers(1, 6), replace=False).tolist()) for _ in range(20)]
    for mc in (2, 4, 7):
        assert mine_frequent_sets(trans, mc) == _brute_force(trans, mc)
    assert all(len(s) <= 2 for s in mine_frequent_sets(trans, 2, max_size=2))
    with pytest.raises(ConfigError, match="max_candidates"):
        mine_frequent_sets(trans, 1, max_candidates=5)


def test_config_and_presets() -> None:
    cfg = MirageConfig()
    assert config_from_dict(MirageConfig, json.loads(json.dumps(config_to_dict(cfg)))) == cfg
    m = get_method("mirage")
    assert m.data_kind == "graphs"
    assert set(PRESETS) == {"tu:NCI1", "tu:IMDB-BINARY"} and all(p["source"] for p in PRESETS.values())
    for name in PRESETS:
        m.resolve_config(name)
    assert m.default_preset("tu:NCI1", 10) is None  # the authors' settings are opt-in
    for bad in ({"num_hops": 0}, {"min_support": (0.0,)}, {"sampling": "x"}, {"relax_factor": 1.0}):
        with pytest.raises(ConfigError):
            MirageConfig(**bad)
    with pytest.raises(ConfigError, match="did you mean 'mean'"):
        MirageConfig(select_readouts=("sum", "maen"))


def test_distill_artifact(graphs, tmp_path: Path) -> None:
    syn = distill("mirage", graphs, ipc=5)
    assert syn.kind == "graph_summary" and syn.images is None and syn.method == "mirage"
    assert syn.meta["tree_sets_per_class"] == [5, 5] and len(syn) == 10
    assert all(not t.is_floating_point() for t in syn.tensors.values())
    assert syn.meta["summary_bytes"] == sum(t.nbytes for t in syn.tensors.values()) + syn.labels.nbytes
    again = distill("mirage", graphs, ipc=5, generator=torch.Generator().manual_seed(9))  # deterministic
    assert all(torch.equal(syn.tensors[k], again.tensors[k]) for k in syn.tensors)
    path = syn.save(tmp_path / "mirage")
    back = SyntheticSet.load(path)
    assert back.config == syn.config and all(torch.equal(back.tensors[k], syn.tensors[k]) for k in syn.tensors)
    batch, support = expand_summary(back)
    assert batch.num_graphs == 10 and support.shape == (10, 2)
    assert bool((support[torch.arange(10), back.labels] > 0).all())
    assert path.stat().st_size <= 0.02 * graphs.raw_bytes
    uncapped = distill("mirage", graphs, ipc=5, overrides={"cap_by_ipc": False})
    assert len(uncapped) > len(syn)


def test_errors(graphs) -> None:  # the wrong data kind is a contract test (tests/methods/test_contract.py)
    with pytest.raises(ConfigError, match="one per class"):
        distill("mirage", graphs, ipc=1, overrides={"min_support": (0.1, 0.2, 0.3)})


def test_mirage_beats_random_embedded(graphs) -> None:
    """Issue 5: a GCN trained on the summary beats random real graphs with the same number of graphs (speed is
    measured by benchmarks/, not asserted here: a wall-clock bound is flaky on a shared machine)."""
    syn = distill("mirage", graphs, ipc=5)
    n = len(syn) // graphs.num_classes
    mir = evaluate(syn, graphs, models=["gcn"], seeds=3, protocol=FAST)
    rnd = random_real_baseline(graphs, n, models=["gcn"], seeds=3, protocol=FAST)
    assert mir["num_graphs"] == rnd["num_graphs"] == len(syn)
    assert mir["metric"] == "roc_auc"
    assert mir["roc_auc"]["gcn"]["mean"] > rnd["roc_auc"]["gcn"]["mean"], (mir["roc_auc"], rnd["roc_auc"])


@pytest.mark.real_data
def test_mutag_claims(shared_data: Path, tmp_path: Path) -> None:
    """Issue 5 on MUTAG: tensor file <= 2% of the raw bytes, GCN beats random at equal size (the "seconds on a
    CPU" claim is measured by benchmarks/, not asserted: a wall-clock bound is flaky on a shared machine)."""
    root = shared_data / "tu"
    if not (root / "MUTAG").is_dir():
        pytest.skip(f"'{root / 'MUTAG'}' is absent")
    data = load_dataset("tu:MUTAG", str(root))
    syn = distill("mirage", data, ipc=1000, overrides={"cap_by_ipc": False})
    path = syn.save(tmp_path / "mutag_mirage")
    assert path.stat().st_size <= 0.02 * data.raw_bytes, (path.stat().st_size, data.raw_bytes)
    n = -(-len(syn) // data.num_classes)  # random gets at least as many graphs as the summary has tree-sets
    mir = evaluate(syn, data, models=["gcn"], seeds=5, protocol=FAST)
    rnd = random_real_baseline(data, n, models=["gcn"], seeds=5, protocol=FAST)
    assert rnd["num_graphs"] >= mir["num_graphs"]
    assert mir["roc_auc"]["gcn"]["mean"] > rnd["roc_auc"]["gcn"]["mean"], (mir["roc_auc"], rnd["roc_auc"])


def test_benchmark_quick(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "graph_speed.py"), "--quick", "--json", str(tmp_path / "g.json")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert rec["benchmark"] == "graph" and rec["results"]
    r = rec["results"][0]
    assert {"dataset", "gnn", "metric", "mirage", "random", "full", "summary_bytes", "distill_seconds"} <= set(r)
    assert json.loads((tmp_path / "g.json").read_text()) == rec


def test_support_selection_on_carved_validation(graphs) -> None:
    """theta and the readout are chosen on held-out training graphs, recorded in the artifact, and never read the
    dataset's validation or test graphs; the carved split and the candidate GNNs are seeded from the generator."""
    over = {"support_candidates": (0.3, 0.1), "select_steps": 50, "cap_by_ipc": False}
    syn = distill("mirage", graphs, ipc=1, overrides=over)
    sel = syn.meta["support_selection"]
    readouts = ("sum", "mean", "logit_sum")
    assert sel["chosen"] in (0.3, 0.1) and sel["readout"] in readouts and syn.meta["readout"] == sel["readout"]
    assert set(sel["scores"]) == {f"{t}/{r}" for t in (0.3, 0.1) for r in readouts}
    assert sel["fit_graphs"] + sel["val_graphs"] == len(graphs.train_idx) and sel["val_graphs"] > 0
    assert syn.meta["min_support_used"] == [sel["chosen"]] * graphs.num_classes
    fixed = distill("mirage", graphs, ipc=1, overrides={"cap_by_ipc": False, "min_support": (sel["chosen"],)})
    assert all(torch.equal(syn.tensors[k], fixed.tensors[k]) for k in syn.tensors)
    # the same generator gives the same selection; another one draws another split seed
    again = distill("mirage", graphs, ipc=1, overrides=over, generator=torch.Generator().manual_seed(0))
    assert again.meta["support_selection"] == sel
    other_gen = distill("mirage", graphs, ipc=1, overrides=over, generator=torch.Generator().manual_seed(1))
    assert other_gen.meta["support_selection"]["seed"] != sel["seed"]
    # scrambling the labels of the dataset's own validation and test graphs changes nothing
    other = load_dataset("synthetic_graphs")
    held = torch.cat([other.val_idx, other.test_idx])
    other.y[held] = 1 - other.y[held]
    assert distill("mirage", other, ipc=1, overrides=over).meta["support_selection"] == sel
    with pytest.raises(ConfigError):
        MirageConfig(readout="max")
    with pytest.raises(ConfigError):
        MirageConfig(support_candidates=(0.0,))
