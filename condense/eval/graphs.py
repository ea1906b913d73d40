"""The graph evaluation protocol: train a fresh GNN on a summary, a graph subset or the full training split, then
score it on the held-out test graphs.

Every graph source goes through the same recipe (:data:`~condense.eval.protocol.GRAPH_PROTOCOL`, registered as
``"graph"``): Adam, a fixed number of epochs over the training graphs (with a floor on the number of steps so tiny
summaries are trained as long as anything else), the checkpoint with the best score on the dataset's **validation**
split scored on the test split (as the Mirage, DosCond and KiDD code do; ``select="final"`` scores the last model
instead; never best-on-test), several seeds. Binary datasets report ROC-AUC (as the Mirage paper does, for TU
datasets too) and accuracy; multi-class datasets report accuracy. All values are fractions in [0, 1].

Seed ``s`` initializes its GNN under ``seeded(s)`` and draws its batch order from
``generator("condense-eval", s)``, the stream image evaluation uses.

Mirage summaries train as the paper describes: each tree-set is a graph of disjoint computation trees, the readout
pools over the roots (sum or mean, as the summary says: :func:`summary_readout`; the same readout then pools over
all nodes of a test graph), and a batch is drawn proportionally to support (implemented as support-sampled counts
weighting the loss over a forward pass of all tree-sets: the same expected gradient, one forward per step). The
artifact formats themselves live in :mod:`condense.graph_summary`; this file only trains and scores.

References:
    Gupta et al., "Mirage: Model-Agnostic Graph Distillation for Graph Classification", ICLR 2024,
    arXiv:2310.09486 (Sec. 4 training on tree-sets, Sec. 5 protocol: ROC-AUC, random and full baselines).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from condense.config import check_range
from condense.data.graph import GraphBatch, GraphData, pack_graphs, unpack_graphs
from condense.errors import ConfigError
from condense.eval.metrics import summarize
from condense.eval.protocol import GRAPH_PROTOCOL, GraphProtocol, get_protocol
from condense.graph_summary import to_batch
from condense.models.gnn import create_gnn
from condense.seeding import generator
from condense.synthetic import SyntheticSet

__all__ = [
    "GraphSource",
    "evaluate_graph_set",
    "random_graph_baseline",
    "full_graph_baseline",
    "train_and_test_gnn",
    "summary_readout",
]

DEFAULT_GNNS = ("gcn",)


# ---------------------------------------------------------------------------------------------- training sources


@dataclass
class GraphSource:
    """A training set: one pre-built batch (summaries, subsets) or a dataset sampled in minibatches.

    Args:
        batch: the whole training set as one batch (a decoded summary or a subset), or None. Its ``class_weight``
            gives the sampling weights of (graph, class) pairs (None: each graph its own class, uniformly) and its
            ``depth`` the GNN depth it needs (Mirage's L).
        weights: sampling weights of (graph, class) pairs for ``batch``, or None (``batch.class_weight``).
        data: the dataset to draw minibatches from when ``batch`` is None.
        idx: training-graph indices into ``data``.
        layers: GNN depth, or None (``batch.depth``, else the protocol's).
        pooling: readout forced by the source (Mirage: the summary's ``readout``), or None (the protocol's).

    Shape:
        weights: (B, K) float32. idx: (N,) int64.
    """

    batch: GraphBatch | None = None
    weights: torch.Tensor | None = None
    data: GraphData | None = None
    idx: torch.Tensor | None = None
    layers: int | None = None
    pooling: str | None = None

    @property
    def size(self) -> int:
        """Number of training graphs (tree-sets for a summary)."""
        return self.batch.num_graphs if self.batch is not None else int(self.idx.numel())

    @property
    def depth(self) -> int | None:
        """The depth the source forces: ``layers``, else the batch's ``depth``, else None."""
        return self.layers or (self.batch.depth if self.batch is not None else None)

    @classmethod
    def from_synthetic(cls, syn: SyntheticSet, data: GraphData) -> GraphSource:
        """The source a graph SyntheticSet trains as: its decoded batch (:func:`condense.graph_summary.to_batch`)
        and the readout it asks for (:func:`summary_readout`).

        Raises:
            MismatchError: ``syn`` does not fit ``data`` (kind, classes, node labels, format).
        """
        return cls(batch=to_batch(syn, data), pooling=summary_readout(syn))


def summary_readout(syn: SyntheticSet) -> str | None:
    """The readout a GNN trained on ``syn`` uses, over tree roots while training and over all nodes at test time:
    a Mirage summary's (validation-selected ``meta["readout"]``, else ``config["readout"]``), else None (the
    protocol's)."""
    if syn.meta.get("summary") != "mirage_tree_sets":
        return None
    return syn.meta.get("readout") or syn.config.get("readout") or None


# ---------------------------------------------------------------------------------------------- train + test


@contextlib.contextmanager
def _cpu_threads(device: torch.device, n: int = 1) -> Iterator[None]:
    """Run CPU training single-threaded: TU graphs are tiny, and intra-op threads only add sync overhead (30x
    slower measured on a loaded 2-core machine). The caller's setting is restored."""
    if device.type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _metrics(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float | None]:
    acc = float((logits.argmax(1) == y).float().mean())
    if logits.shape[1] != 2:
        return acc, None
    from sklearn.metrics import roc_auc_score

    yy = y.cpu().numpy()
    if len(set(yy.tolist())) < 2:
        return acc, None
    score = torch.softmax(logits.float(), 1)[:, 1].cpu().numpy()
    return acc, float(roc_auc_score(yy, score))


def train_and_test_gnn(
    source: GraphSource,
    test: GraphBatch,
    model: str,
    *,
    in_dim: int,
    num_classes: int,
    seed: int,
    protocol: GraphProtocol = GRAPH_PROTOCOL,
    device: torch.device | str = "cpu",
    val: GraphBatch | None = None,
) -> tuple[float, float | None]:
    """Train one fresh GNN on ``source`` and return ``(test accuracy, test ROC-AUC or None)``.

    The model scored is the final one, or with ``protocol.select == "val"`` and validation graphs ``val`` given,
    the checkpoint with the best validation score (ties: the earlier one).

    Args:
        source: what to train on. test: the graphs to score. model: a registered GNN (``gcn``, ``gin``, ``gat``).
        in_dim: node-feature width. num_classes: K. seed: GNN init and batch order.
        protocol: the recipe. device: where to train. val: validation graphs for ``select="val"``.
    """
    device = torch.device(device)
    with _cpu_threads(device):
        return _train_and_test(source, test, model, in_dim, num_classes, seed, protocol, device, val)


def _train_and_test(
    source: GraphSource,
    test: GraphBatch,
    model: str,
    in_dim: int,
    num_classes: int,
    seed: int,
    protocol: GraphProtocol,
    device: torch.device,
    val: GraphBatch | None,
) -> tuple[float, float | None]:
    net = create_gnn(
        model,
        seed=int(seed),  # parameters initialized under seeded(seed): the caller's global RNG is untouched
        in_dim=in_dim,
        num_classes=num_classes,
        hidden=protocol.hidden,
        layers=source.depth or protocol.layers,
        pooling=source.pooling or protocol.pooling,
        dropout=protocol.dropout,
    ).to(device)
    gen = generator("condense-eval", seed)
    opt = torch.optim.Adam(net.parameters(), lr=protocol.lr, weight_decay=protocol.weight_decay)
    n = source.size
    steps = max(protocol.min_steps, protocol.epochs * math.ceil(n / protocol.batch_size))
    if source.batch is not None:
        b = source.batch.to(device)
        # sampling weights over (graph, class) pairs; plain graphs have one pair each, their own class
        pw = source.weights if source.weights is not None else source.batch.class_weight
        if pw is None:
            pw = torch.nn.functional.one_hot(source.batch.y, num_classes).float()
        probs = pw.reshape(-1).float()
        probs = probs / probs.sum()
        draws = min(protocol.batch_size, max(n, 1))
    else:
        order = torch.zeros(0, dtype=torch.int64)
    select = protocol.select == "val" and val is not None and val.num_graphs > 0
    if select:
        v = val.to(device)
        checks = {int(round(steps * (i + 1) / protocol.val_checks)) for i in range(protocol.val_checks)}
        best_score, best_state = -1.0, None
    net.train()
    for step in range(1, steps + 1):
        if source.batch is not None:
            # a support-proportional batch of tree-sets, as loss weights over one forward of the whole summary
            pick = torch.multinomial(probs, draws, replacement=True, generator=gen)
            w = torch.bincount(pick, minlength=n * num_classes).float().reshape(n, num_classes).to(device)
            logits = net(b.x, b.edge_index, b.batch, b.num_graphs, deg=b.deg, pool_mask=b.pool_mask)
            loss = -(torch.log_softmax(logits, 1) * w).sum() / w.sum()
        else:
            if order.numel() < protocol.batch_size:
                order = torch.cat([order, source.idx[torch.randperm(n, generator=gen, device=gen.device)]])
            ids, order = order[: protocol.batch_size], order[protocol.batch_size :]
            mb = source.data.batch(ids).to(device)
            logits = net(mb.x, mb.edge_index, mb.batch, mb.num_graphs)
            loss = nn.functional.cross_entropy(logits, mb.y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if select and step in checks:
            net.eval()
            with torch.no_grad():
                acc, auc = _metrics(net(v.x, v.edge_index, v.batch, v.num_graphs), v.y)
            score = auc if auc is not None else acc
            if score > best_score:
                best_score, best_state = score, {k: t.detach().clone() for k, t in net.state_dict().items()}
            net.train()
    if select and best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    with torch.no_grad():
        t = test.to(device)
        logits = net(t.x, t.edge_index, t.batch, t.num_graphs)
    return _metrics(logits, t.y)


# ---------------------------------------------------------------------------------------------- rows


def _run(
    sources: list[tuple[int, GraphSource]],
    data: GraphData,
    models: Sequence[str],
    protocol: GraphProtocol,
    device: torch.device | str,
    quiet: bool,
    desc: str,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One ``(seed, source)`` per run (a random baseline redraws its subset per seed); returns (accuracy, roc_auc)."""
    from tqdm.auto import tqdm

    test = data.batch(data.test_idx)
    val = data.batch(data.val_idx) if protocol.select == "val" and data.val_idx.numel() else None
    acc: dict[str, Any] = {}
    auc: dict[str, Any] = {}
    for m in models:
        a_runs, u_runs = [], []
        for seed, src in tqdm(sources, desc=f"{desc} {m}", disable=quiet, leave=False):
            a, u = train_and_test_gnn(
                src,
                test,
                m,
                in_dim=data.in_dim,
                num_classes=data.num_classes,
                seed=seed,
                protocol=protocol,
                device=device,
                val=val,
            )
            a_runs.append(a)
            if u is not None:
                u_runs.append(u)
        acc[m] = summarize(a_runs)
        if u_runs:
            auc[m] = summarize(u_runs)
    return acc, (auc or None)


def _row(
    method: str,
    data: GraphData,
    ipc: int | None,
    num_graphs: int,
    acc: dict[str, Any],
    auc: dict[str, Any] | None,
    protocol: GraphProtocol,
    t0: float,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "method": method,
        "dataset": data.name,
        "ipc": ipc,
        "num_graphs": num_graphs,
        "metric": "roc_auc" if auc else "accuracy",
        "accuracy": acc,
    }
    if auc:
        row["roc_auc"] = auc
    row["protocol"] = protocol.to_dict()
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def _resolve(
    protocol: str | GraphProtocol | None, epochs: int | None, lr: float | None, batch_size: int | None
) -> GraphProtocol:
    p = get_protocol(GRAPH_PROTOCOL if protocol is None else protocol)
    if not isinstance(p, GraphProtocol):
        raise ConfigError(f"protocol '{p.name}' scores images; graph evaluation needs a graph protocol such as 'graph'")
    return p.replace(epochs=epochs, lr=lr, batch_size=batch_size)


def _seed_list(seeds: int | Sequence[int], seed: int) -> list[int]:
    if isinstance(seeds, int):
        check_range("seeds", seeds, 1)
        return list(range(seed, seed + seeds))
    out = [int(s) for s in seeds]
    if not out:
        raise ConfigError("seeds must be a positive count or a non-empty list, got []")
    return out


def evaluate_graph_set(
    syn: SyntheticSet,
    data: GraphData,
    *,
    models: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    protocol: str | GraphProtocol | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    quiet: bool = True,
) -> dict[str, Any]:
    """Train fresh GNNs of each architecture on a graph SyntheticSet; score them on ``data``'s test split.

    Called by :func:`condense.eval.evaluate` for graph data (use that).

    Args:
        syn: a Mirage summary, a DosCond dense set or a graph subset (``random_graphs``, ``herding_graphs``).
        data: the dataset it came from (same classes, same node labels).
        models: GNN names (``gcn``, ``gin``, ``gat``; default ``gcn``).
        seeds: models per architecture (seeds ``seed .. seed + seeds - 1``) or an explicit list.
        protocol: the recipe (default ``"graph"``). epochs, lr, batch_size: overrides of the protocol's.
        device: where to train. seed: first seed. quiet: hide progress bars.

    Returns:
        ``{"method", "dataset", "ipc", "num_graphs", "metric", "accuracy": {gnn: {"mean", "std", "runs"}},
        "roc_auc": {...} (binary only), "protocol", "seconds", "summary_bytes"}``, values as fractions.
    """
    p = _resolve(protocol, epochs, lr, batch_size)
    seed_list = _seed_list(seeds, seed)
    t0 = time.perf_counter()
    src = GraphSource.from_synthetic(syn, data)
    acc, auc = _run([(s, src) for s in seed_list], data, models or DEFAULT_GNNS, p, device, quiet, syn.method)
    row = _row(syn.method, data, syn.ipc, src.size, acc, auc, p, t0)
    row["summary_bytes"] = int(syn.meta.get("summary_bytes", sum(t.nbytes for t in syn.tensors.values())))
    return row


def random_graph_baseline(
    data: GraphData,
    ipc: int,
    *,
    models: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    protocol: str | GraphProtocol | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    quiet: bool = True,
) -> dict[str, Any]:
    """GNNs trained on ``ipc`` random real training graphs per class, a fresh draw per seed (Mirage's Random).

    Seed ``s`` draws its subset with ``generator("condense-random-real", s)`` (the image baseline's rule)
    and trains with seed ``s``. Called by :func:`condense.eval.random_real_baseline` for graph data.

    Returns the same row as :func:`evaluate_graph_set`, with ``method = "random_graphs"``.
    """
    check_range("ipc", ipc, 1)
    p = _resolve(protocol, epochs, lr, batch_size)
    t0 = time.perf_counter()
    sources, n = [], 0
    for s in _seed_list(seeds, seed):
        idx = data.sample_per_class(ipc, generator("condense-random-real", s))
        batch = unpack_graphs(pack_graphs(data, idx), data.y[idx], data.num_node_labels)
        sources.append((s, GraphSource(batch=batch)))
        n = int(idx.numel())
    acc, auc = _run(sources, data, models or DEFAULT_GNNS, p, device, quiet, "random")
    return _row("random_graphs", data, ipc, n, acc, auc, p, t0)


def full_graph_baseline(
    data: GraphData,
    *,
    models: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    protocol: str | GraphProtocol | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    quiet: bool = True,
) -> dict[str, Any]:
    """GNNs trained on the whole training split: the upper reference of every graph table.

    Called by :func:`condense.eval.full_data_baseline` for graph data.
    """
    p = _resolve(protocol, epochs, lr, batch_size)
    t0 = time.perf_counter()
    src = GraphSource(data=data, idx=data.train_idx)
    acc, auc = _run([(s, src) for s in _seed_list(seeds, seed)], data, models or DEFAULT_GNNS, p, device, quiet, "full")
    return _row("full_data", data, None, int(data.train_idx.numel()), acc, auc, p, t0)
