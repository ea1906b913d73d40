"""Graph neural networks for graph classification: GCN, GIN, GAT with sum or mean readout, in plain torch.

Message passing is written with ``index_add_`` / ``scatter_reduce`` over an ``edge_index`` (no PyTorch Geometric),
which is fast on a CPU for TU-sized graphs. Messages flow ``edge_index[0] -> edge_index[1]``: real graphs list both
directions; Mirage's computation trees list child -> parent only, so a root's embedding after L layers equals the
embedding of the matching node in a real graph (Mirage, Sec. 3).

Two hooks serve the tree summaries: ``deg`` overrides the degrees used by the GCN normalization (a tree leaf
does not see its real neighbours), and ``pool_mask`` restricts the readout to some nodes (the tree roots).

References:
    Kipf & Welling, "Semi-Supervised Classification with Graph Convolutional Networks", ICLR 2017,
    arXiv:1609.02907 (Eq. 2). Xu et al., "How Powerful are Graph Neural Networks?", ICLR 2019, arXiv:1810.00826
    (Eq. 4.1, GIN-0). Velickovic et al., "Graph Attention Networks", ICLR 2018, arXiv:1710.10903 (Eq. 1-5).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from condense.errors import ConfigError
from condense.registry import Registry
from condense.seeding import seeded

__all__ = ["GNN", "GCNLayer", "GINLayer", "GATLayer", "GNNS", "create_gnn", "list_gnns", "global_pool", "POOLINGS"]

POOLINGS = ("sum", "mean", "logit_sum")


def global_pool(
    h: torch.Tensor, batch: torch.Tensor, num_graphs: int, pooling: str, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum or mean of node embeddings per graph, optionally over masked nodes only.

    Shape:
        h: (n, D); batch: (n,) int64 in [0, B); mask: (n,) bool or None. return: (B, D).
    """
    if mask is not None:
        h, batch = h[mask], batch[mask]
    out = h.new_zeros(num_graphs, h.shape[1]).index_add_(0, batch, h)
    if pooling == "mean":
        cnt = torch.bincount(batch, minlength=num_graphs).clamp_min(1).to(h.dtype)
        out = out / cnt[:, None]
    return out


class GCNLayer(nn.Module):
    """h_v' = sum_{u in N(v) + v} h_u W / sqrt((d_u + 1)(d_v + 1)) + b (Kipf & Welling, Eq. 2).

    Args:
        in_dim: input width. out_dim: output width.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, deg: torch.Tensor) -> torch.Tensor:
        """Shape: x (n, in_dim); edge_index (2, e); deg (n,) float degree without self-loop. return (n, out_dim)."""
        h = self.lin(x)
        src, dst = edge_index
        norm = (deg + 1.0).rsqrt()
        out = h * (norm * norm)[:, None]  # self-loop term
        out = out.index_add_(0, dst, h[src] * (norm[src] * norm[dst])[:, None])
        return out + self.bias


class GINLayer(nn.Module):
    """h_v' = MLP((1 + eps) h_v + sum_{u in N(v)} h_u) with eps = 0 (GIN-0, Xu et al., Eq. 4.1).

    Args:
        in_dim: input width. out_dim: output width.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, deg: torch.Tensor) -> torch.Tensor:
        """Shape: x (n, in_dim); edge_index (2, e). return (n, out_dim)."""
        src, dst = edge_index
        agg = x.clone().index_add_(0, dst, x[src])
        return self.mlp(agg)


class GATLayer(nn.Module):
    """Multi-head graph attention over N(v) + v, heads concatenated (Velickovic et al., Eq. 1-5).

    Args:
        in_dim: input width. out_dim: output width (split evenly across heads). heads: attention heads.
        negative_slope: LeakyReLU slope of the attention logits (0.2 in the paper).
    """

    def __init__(self, in_dim: int, out_dim: int, heads: int = 4, negative_slope: float = 0.2) -> None:
        super().__init__()
        if out_dim % heads:
            raise ConfigError(f"GAT width {out_dim} must be divisible by heads={heads}")
        self.heads, self.dh = heads, out_dim // heads
        self.lin = nn.Linear(in_dim, out_dim, bias=False)
        self.att_src = nn.Parameter(torch.empty(heads, self.dh))
        self.att_dst = nn.Parameter(torch.empty(heads, self.dh))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        nn.init.xavier_uniform_(self.att_src)
        nn.init.xavier_uniform_(self.att_dst)
        self.slope = negative_slope

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, deg: torch.Tensor) -> torch.Tensor:
        """Shape: x (n, in_dim); edge_index (2, e). return (n, out_dim)."""
        n = x.shape[0]
        h = self.lin(x).view(n, self.heads, self.dh)
        loops = torch.arange(n, device=x.device)
        src = torch.cat([edge_index[0], loops])
        dst = torch.cat([edge_index[1], loops])
        a_s = (h * self.att_src).sum(-1)  # (n, H)
        a_d = (h * self.att_dst).sum(-1)
        logit = nn.functional.leaky_relu(a_s[src] + a_d[dst], self.slope)  # (e + n, H)
        # softmax over each target's incoming edges: subtract the per-target max for stability
        mx = logit.new_full((n, self.heads), float("-inf"))
        mx = mx.scatter_reduce(0, dst[:, None].expand_as(logit), logit, reduce="amax", include_self=True)
        w = (logit - mx[dst]).exp()
        den = w.new_zeros(n, self.heads).index_add_(0, dst, w)
        alpha = w / den[dst].clamp_min(1e-16)
        out = h.new_zeros(n, self.heads, self.dh).index_add_(0, dst, h[src] * alpha[..., None])
        return out.reshape(n, -1) + self.bias


_LAYERS: dict[str, Callable[[int, int], nn.Module]] = {"gcn": GCNLayer, "gin": GINLayer, "gat": GATLayer}


class GNN(nn.Module):
    """L message-passing layers (ReLU, dropout), a sum or mean readout, then a linear classifier.

    Args:
        conv: layer type, ``"gcn"``, ``"gin"`` or ``"gat"``.
        in_dim: node feature width. num_classes: K.
        hidden: embedding width. layers: L, message-passing depth (Mirage mines L-hop trees for this L).
        pooling: ``"sum"`` or ``"mean"`` readout. dropout: dropout before the classifier.
    """

    def __init__(
        self,
        conv: str,
        *,
        in_dim: int,
        num_classes: int,
        hidden: int = 64,
        layers: int = 2,
        pooling: str = "mean",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if conv not in _LAYERS:
            raise ConfigError(f"unknown GNN layer '{conv}'; allowed: {', '.join(sorted(_LAYERS))}")
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling '{pooling}'; allowed: {', '.join(POOLINGS)}")
        if layers < 1 or hidden < 1 or in_dim < 1 or num_classes < 2:
            raise ConfigError(
                f"GNN needs layers >= 1, hidden >= 1, in_dim >= 1, num_classes >= 2; got layers={layers}, "
                f"hidden={hidden}, in_dim={in_dim}, num_classes={num_classes}"
            )
        self.conv, self.pooling, self.num_layers = conv, pooling, layers
        self.convs = nn.ModuleList(_LAYERS[conv](in_dim if i == 0 else hidden, hidden) for i in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)

    def embed(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        *,
        deg: torch.Tensor | None = None,
        pool_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Graph embeddings after the readout.

        Shape:
            x: (n, F); edge_index: (2, e) int64; batch: (n,) int64; deg: (n,) float or None; pool_mask: (n,) bool
            or None. return: (B, hidden).
        """
        if deg is None:
            deg = torch.bincount(edge_index[1], minlength=x.shape[0]).to(x.dtype)
        h = x
        for conv in self.convs:
            h = torch.relu(conv(h, edge_index, deg))
        return global_pool(h, batch, num_graphs, self.pooling, pool_mask)

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        *,
        deg: torch.Tensor | None = None,
        pool_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits, (B, K); arguments as in :meth:`embed`.

        ``pooling="logit_sum"`` applies the classifier to every node and sums the node logits (bias included per
        node), so a graph's score is the sum of its nodes' log-odds on the same scale whatever its size.
        """
        if self.pooling != "logit_sum":
            return self.head(self.dropout(self.embed(x, edge_index, batch, num_graphs, deg=deg, pool_mask=pool_mask)))
        if deg is None:
            deg = torch.bincount(edge_index[1], minlength=x.shape[0]).to(x.dtype)
        h = x
        for conv in self.convs:
            h = torch.relu(conv(h, edge_index, deg))
        return global_pool(self.head(self.dropout(h)), batch, num_graphs, "sum", pool_mask)


GNNS: Registry[Callable[..., GNN]] = Registry("gnn")


def _builder(conv: str) -> Callable[..., GNN]:
    def build(*, in_dim: int, num_classes: int, **kwargs) -> GNN:
        return GNN(conv, in_dim=in_dim, num_classes=num_classes, **kwargs)

    build.__name__ = conv
    build.__doc__ = f"{conv.upper()} graph classifier (see :class:`GNN` for the keyword arguments)."
    return build


for _name in ("gcn", "gin", "gat"):
    GNNS.register(_name)(_builder(_name))


def list_gnns(pattern: str = "*") -> list[str]:
    """Registered GNN names matching ``pattern``."""
    return GNNS.list(pattern)


def create_gnn(
    name: str,
    *,
    in_dim: int,
    num_classes: int,
    hidden: int | None = None,
    layers: int | None = None,
    pooling: str | None = None,
    dropout: float | None = None,
    seed: int | None = None,
) -> GNN:
    """Build a registered GNN; arguments left as None keep the defaults (hidden 64, 2 layers, mean pooling).

    Args:
        name: a registered GNN (:func:`list_gnns`). in_dim: node-feature width F. num_classes: K.
        hidden, layers, pooling, dropout: see :class:`GNN` (None: its default).
        seed: initialize the parameters from this seed inside :func:`condense.seeding.seeded`, leaving the
            caller's global RNG untouched; None draws from the global RNG as ``nn.Module`` does.

    Example:
        >>> net = create_gnn("gcn", in_dim=7, num_classes=2, seed=0)
        >>> x, ei, b = torch.eye(7)[:3], torch.tensor([[0, 1], [1, 0]]), torch.zeros(3, dtype=torch.long)
        >>> net(x, ei, b, 1).shape
        torch.Size([1, 2])
    """
    build = GNNS.get(name)
    kwargs = {"hidden": hidden, "layers": layers, "pooling": pooling, "dropout": dropout}
    with seeded(seed):
        return build(in_dim=in_dim, num_classes=num_classes, **{k: v for k, v in kwargs.items() if v is not None})
