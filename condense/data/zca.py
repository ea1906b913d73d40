"""ZCA whitening as MTT, FTD, DATM and TESLA use it, in plain torch (kornia not needed), invertible and saveable.

The trajectory-matching repos load the images with ``ToTensor()`` only when ``--zca`` is set (no mean/std
normalization: ``mtt-distillation:utils.py`` ``get_dataset``, the same in DATM's ``utils/utils_baseline.py`` and
FTD's ``utils/utils_gsam.py``), fit ``kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True)`` on the whole training
set of [0, 1] pixels and apply it to both splits; distilled images then live in ZCA space and need the inverse to be
viewed. This class computes the same transform (kornia's default unbiased covariance, divisor N - 1):

    mu = mean(X),  Sigma = (X - mu)^T (X - mu) / (N - 1) = U S U^T,
    W = U (S + eps)^(-1/2) U^T,   W^-1 = U (S + eps)^(1/2) U^T,   zca(x) = (x - mu) W,   inverse(z) = z W^-1 + mu.

How the fit runs (so Tiny ImageNet, 100,000 x 12,288, fits in a few GB of host memory): the data stays where it is
(usually the CPU) and is moved to ``device`` a chunk of rows at a time. A first pass sums the rows (float64
accumulator of D values) for mu; a second pass forms each centered chunk in float32, multiplies it on the device
(float32 GEMM, as kornia) and adds the D x D product into a float64 accumulator. No float64 (or any) copy of the
whole training set is made. The D x D covariance is then decomposed with ``torch.linalg.eigh`` in float64 (kornia:
an SVD in float32) and W, W^-1 are stored in float32, so the result matches kornia's to float32 round-off, not bit
for bit.

Identity: float32 round-off depends on the thread count, the chunk size and the device, so two fits of the same data
are not bit-identical. A ZCA is therefore identified by its recipe (:data:`RECIPE`, the input scale, a fingerprint
of the fitted data, eps, D, N), compared exactly, plus a small numeric summary (the matrices applied to a few fixed
probe vectors), compared within a relative tolerance: :func:`describe_difference`. The ``sha256`` of the matrices
stays in :meth:`ZCA.describe` for provenance only.

References:
    Bell & Sejnowski, "The 'independent components' of natural scenes are edge filters", Vision Research 1997 (ZCA).
    Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022, arXiv:2203.11932
    (ZCA with eps 0.1 on [0, 1] pixels, ``utils.py``).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch

from condense.errors import ConfigError, DataFormatError, MismatchError

__all__ = ["ZCA", "RECIPE", "PIXELS_01", "describe_difference"]

_KEYS = ("zca_mean", "zca_matrix", "zca_inverse")

#: Version tag of the fit procedure recorded in :meth:`ZCA.describe`. Records without it come from condense before
#: this recipe, which fitted the whitening on mean/std-normalized pixels.
RECIPE = "condense-zca-2 (unbiased covariance, eigh, eps added to eigenvalues)"
#: The input scale of the trajectory-matching references: ``ToTensor()`` pixels in [0, 1], no normalization.
PIXELS_01 = "[0,1] pixels"
#: Default relative tolerance of the numeric summary (float32 round-off across threads and devices is ~1e-6).
RTOL = 1e-4
_BYTES_PER_CHUNK = 1 << 28  # 256 MB of float32 rows per chunk by default


class ZCA:
    """Fitted, invertible ZCA whitening of image tensors (features = C*H*W).

    Args:
        eps: added to the covariance eigenvalues before the inverse square root (MTT/DATM use 0.1).

    Shape:
        x: (N, C, H, W) float (any shape whose trailing dims flatten to D works); whitened output has the same shape.

    Example:
        >>> x = torch.rand(64, 3, 4, 4)
        >>> z = ZCA(eps=0.1).fit(x, input_scale=PIXELS_01)
        >>> torch.allclose(z.inverse(z(x)), x, atol=1e-4)
        True
    """

    def __init__(self, eps: float = 0.1) -> None:
        if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and math.isfinite(eps) and eps >= 0):
            raise ConfigError(f"ZCA eps must be a finite number >= 0, got {eps!r}")
        self.eps = float(eps)
        self.mean: torch.Tensor | None = None  # (D,) mu
        self.matrix: torch.Tensor | None = None  # (D, D) W, symmetric
        self.inverse_matrix: torch.Tensor | None = None  # (D, D) W^-1, symmetric
        self.input_scale: str | None = None  # what the fitted data was, e.g. PIXELS_01
        self.fingerprint: str | None = None  # of the fitted data (shape and a strided sample of its values)
        self.num_samples: int | None = None  # N
        self.recipe: str | None = None  # RECIPE when fitted by this code

    # ------------------------------------------------------------------------------------------------------------------

    @property
    def fitted(self) -> bool:
        return self.matrix is not None

    @property
    def dim(self) -> int:
        """D, the number of features (C*H*W)."""
        self._require_fit()
        return int(self.matrix.shape[0])

    def _require_fit(self) -> None:
        if self.matrix is None:
            raise ConfigError(
                "ZCA is not fitted; call ZCA(eps).fit(x_train) first, or rebuild a saved one with ZCA.from_tensors()"
            )

    def fit(
        self,
        x: torch.Tensor,
        *,
        input_scale: str = "unspecified",
        device: torch.device | str | None = None,
        chunk_size: int | None = None,
    ) -> ZCA:
        """Estimate mu, W and W^-1 from ``x`` in chunks (see the module docstring); store them on ``x``'s device.

        Args:
            x: the training images.
            input_scale: what ``x`` holds, recorded in :meth:`describe`; :data:`PIXELS_01` (the references' input)
                is checked to lie in [0, 1].
            device: where the covariance is accumulated and decomposed (default: ``x``'s device). ``x`` may stay
                on the CPU; only one chunk of it is on ``device`` at a time.
            chunk_size: rows per chunk (default: 256 MB of float32 rows). The result does not depend on it beyond
                float32 round-off.

        Shape:
            x: (N, C, H, W) float with N >= 2 (the covariance divides by N - 1).

        Returns:
            self, fitted.

        Raises:
            DataFormatError: ``x`` is not a float tensor of at least 2 samples, or not in [0, 1] although
                ``input_scale`` says so.
        """
        if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.is_floating_point():
            desc = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataFormatError(f"ZCA.fit expects a float tensor (N, C, H, W), got {desc}")
        n = int(x.shape[0])
        if n < 2:
            raise DataFormatError(f"ZCA.fit needs at least 2 samples (unbiased covariance), got {n}")
        if not isinstance(input_scale, str) or not input_scale:
            raise ConfigError(f"ZCA.fit input_scale must be a non-empty string, got {input_scale!r}")
        flat = x.detach().reshape(n, -1)
        d = int(flat.shape[1])
        dev = torch.device(device) if device is not None else flat.device
        step = _chunk_rows(chunk_size, d)

        # pass 1: mu (float64 sums of float32 chunks), and the [0, 1] check
        total = torch.zeros(d, dtype=torch.float64, device=dev)
        lo, hi = math.inf, -math.inf
        for i in range(0, n, step):
            c = flat[i : i + step].to(dev, torch.float32)
            total += c.sum(0, dtype=torch.float64)
            lo, hi = min(lo, float(c.min())), max(hi, float(c.max()))
        if input_scale == PIXELS_01 and not (lo >= 0.0 and hi <= 1.0):
            raise DataFormatError(f"ZCA.fit was told the data is {PIXELS_01}, but its values span [{lo:g}, {hi:g}]")
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise DataFormatError(f"ZCA.fit needs finite data, got values spanning [{lo:g}, {hi:g}]")
        mean = (total / n).float()

        # pass 2: scatter of the centered rows, float32 GEMM per chunk, float64 sum over chunks
        scatter = torch.zeros(d, d, dtype=torch.float64, device=dev)
        for i in range(0, n, step):
            c = flat[i : i + step].to(dev, torch.float32) - mean
            scatter += (c.T @ c).double()
            del c
        cov = scatter.div_(n - 1)
        del scatter  # cov is the same storage, divided in place

        # float64 eigh of the D x D matrix (MPS has no float64: decompose there on the CPU)
        eig_dev = dev if dev.type in ("cpu", "cuda") else torch.device("cpu")
        evals, evecs = torch.linalg.eigh(cov.to(eig_dev))
        del cov
        # An SVD of a PSD matrix (kornia) returns |eigenvalue|; round-off can make tiny eigenvalues negative.
        evals = evals.abs()
        out = flat.device
        self.mean = mean.to(out)
        self.matrix = ((evecs * torch.rsqrt(evals + self.eps)) @ evecs.T).float().to(out)
        self.inverse_matrix = ((evecs * torch.sqrt(evals + self.eps)) @ evecs.T).float().to(out)
        self.input_scale = input_scale
        self.fingerprint = fingerprint_rows(flat)
        self.num_samples = n
        self.recipe = RECIPE
        return self

    def _flat(self, x: torch.Tensor, what: str) -> torch.Tensor:
        self._require_fit()
        d = self.dim
        if x.ndim < 2 or math.prod(x.shape[1:]) != d:
            raise MismatchError(
                f"ZCA.{what} expects samples with {d} features (the fitted C*H*W), got shape {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], d)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Whiten: ``(x - mu) W``, differentiable w.r.t. ``x``.

        Shape:
            x: (N, C, H, W) with C*H*W = D; return: same shape and dtype.
        """
        flat = self._flat(x, "__call__")
        mean, w = self.mean.to(x.device, x.dtype), self.matrix.to(x.device, x.dtype)
        return ((flat - mean) @ w).reshape(x.shape)

    def whiten_(
        self, x: torch.Tensor, *, device: torch.device | str | None = None, chunk_size: int | None = None
    ) -> torch.Tensor:
        """Whiten ``x`` in place, a chunk of rows at a time on ``device`` (no second copy of a whole split).

        The dataset loaders use this; :meth:`__call__` is the differentiable form for code that whitens a batch.

        Shape:
            x: (N, C, H, W) float, contiguous, with C*H*W = D; return: ``x`` itself, whitened.
        """
        flat = self._flat(x, "whiten_")
        if not x.is_contiguous():
            raise DataFormatError("ZCA.whiten_ needs a contiguous tensor (it overwrites it row by row)")
        dev = torch.device(device) if device is not None else x.device
        mean, w = self.mean.to(dev, torch.float32), self.matrix.to(dev, torch.float32)
        step = _chunk_rows(chunk_size, self.dim)
        with torch.no_grad():
            for i in range(0, int(flat.shape[0]), step):
                c = flat[i : i + step]
                c.copy_((c.to(dev, torch.float32) - mean) @ w)
        return x

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the whitening: ``z W^-1 + mu`` (to view distilled images living in ZCA space).

        Shape:
            x: (N, C, H, W) with C*H*W = D; return: same shape and dtype.
        """
        flat = self._flat(x, "inverse")
        mean, w_inv = self.mean.to(x.device, x.dtype), self.inverse_matrix.to(x.device, x.dtype)
        return (flat @ w_inv + mean).reshape(x.shape)

    def to(self, device: torch.device | str) -> ZCA:
        """Move the fitted tensors to ``device`` (returns self)."""
        if self.fitted:
            self.mean = self.mean.to(device)
            self.matrix = self.matrix.to(device)
            self.inverse_matrix = self.inverse_matrix.to(device)
        return self

    # ------------------------------------------------------------------------------------------------------------------
    # Saving and loading
    # ------------------------------------------------------------------------------------------------------------------

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The fitted state as named tensors for safetensors files.

        Shape:
            zca_mean: (D,) float32; zca_matrix: (D, D) float32; zca_inverse: (D, D) float32.
        """
        self._require_fit()
        return {"zca_mean": self.mean, "zca_matrix": self.matrix, "zca_inverse": self.inverse_matrix}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], eps: float, info: dict[str, Any] | None = None) -> ZCA:
        """Rebuild a fitted ZCA exactly from :meth:`to_tensors` output (extra keys are ignored).

        Args:
            tensors: the saved matrices.
            eps: the eps they were fitted with.
            info: the :meth:`describe` recorded beside them; restores the recipe, input scale, fingerprint and N
                (without it those stay None, which :func:`describe_difference` treats as an older recipe).

        Shape:
            tensors: ``zca_mean`` (D,), ``zca_matrix`` (D, D), ``zca_inverse`` (D, D).
        """
        missing = [k for k in _KEYS if k not in tensors]
        if missing:
            raise MismatchError(f"ZCA tensors lack {missing}; expected keys {list(_KEYS)}, got {sorted(tensors)}")
        mean, w, w_inv = (tensors[k] for k in _KEYS)
        d = mean.shape[0] if mean.ndim == 1 else -1
        if mean.ndim != 1 or tuple(w.shape) != (d, d) or tuple(w_inv.shape) != (d, d):
            raise MismatchError(
                f"ZCA tensors must be zca_mean (D,), zca_matrix (D, D), zca_inverse (D, D); got "
                f"{tuple(mean.shape)}, {tuple(w.shape)}, {tuple(w_inv.shape)}"
            )
        z = cls(eps=eps)
        z.mean, z.matrix, z.inverse_matrix = mean.float(), w.float(), w_inv.float()
        info = info or {}
        z.recipe, z.input_scale, z.fingerprint = info.get("recipe"), info.get("input"), info.get("fingerprint")
        z.num_samples = info.get("num_samples")
        return z

    def sha256(self) -> str:
        """Digest of the three float32 matrices (mean, W, W^-1 in that order), device independent.

        Provenance only: two fits of the same data on other thread counts or devices differ in float32 round-off,
        so compatibility is decided by :func:`describe_difference`, not by this digest.
        """
        self._require_fit()
        h = hashlib.sha256()
        for t in (self.mean, self.matrix, self.inverse_matrix):
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    def summary(self) -> dict[str, list[float]]:
        """A few float64 statistics of the matrices, stable to ~1e-6 relative across threads, chunkings and devices.

        With the fixed unit probes ``p_k`` (:func:`_probes`): ``mean = [|mu|, mu . p_k ...]``,
        ``matrix = [tr(W) / D, p_k^T W p_k ...]``, ``inverse = [tr(W^-1) / D, p_k^T W^-1 p_k ...]``. The probes
        include the constant image and smooth ramps, which load on the top eigen-directions of natural images, so
        other data or another eps move these values far beyond the tolerance.
        """
        self._require_fit()
        p = _probes(self.dim)  # (K, D) float64, unit rows
        mu = self.mean.detach().to("cpu", torch.float64)
        w = self.matrix.detach().to("cpu", torch.float64)
        w_inv = self.inverse_matrix.detach().to("cpu", torch.float64)
        d = self.dim
        return {
            "mean": [float(mu.norm()), *(p @ mu).tolist()],
            "matrix": [float(w.diagonal().sum()) / d, *((p @ w) * p).sum(1).tolist()],
            "inverse": [float(w_inv.diagonal().sum()) / d, *((p @ w_inv) * p).sum(1).tolist()],
        }

    def describe(self) -> dict[str, Any]:
        """JSON description recorded with datasets, buffers and artifacts.

        ``{"recipe", "input", "fingerprint", "num_samples", "eps", "dim"}`` identify the whitening and are compared
        exactly; ``"summary"`` (:meth:`summary`) within a relative tolerance; ``"sha256"`` is provenance only.
        """
        return {
            "recipe": self.recipe,
            "input": self.input_scale,
            "fingerprint": self.fingerprint,
            "num_samples": self.num_samples,
            "eps": self.eps,
            "dim": self.dim,
            "summary": self.summary(),
            "sha256": self.sha256(),
        }

    def __repr__(self) -> str:
        return f"ZCA(eps={self.eps}, dim={self.dim if self.fitted else None}, input={self.input_scale!r})"


# ----------------------------------------------------------------------------------------------------------------------
# Identity of a fitted whitening
# ----------------------------------------------------------------------------------------------------------------------

_EXACT = ("input", "fingerprint", "num_samples", "eps", "dim")


def describe_difference(
    recorded: dict[str, Any],
    current: dict[str, Any],
    names: tuple[str, str] = ("recorded", "current"),
    rtol: float = RTOL,
) -> str | None:
    """What differs between two :meth:`ZCA.describe` records, as one phrase, or None when they name the same ZCA.

    The recipe fields are compared exactly and the numeric summary group by group:
    ``max |a - b| <= rtol * max(|a|, |b|)``. The sha256 is not compared, so a buffer or artifact made with another
    thread count, chunk size or GPU still fits.

    Args:
        recorded: the description stored in a buffer or artifact.
        current: the description of the data this run loaded.
        names: how the message calls the two sides (``("buffer", "this run")``).
        rtol: relative tolerance of the summary.

    Example:
        >>> x = torch.rand(50, 1, 2, 2)
        >>> a = ZCA(0.1).fit(x, input_scale=PIXELS_01).describe()
        >>> describe_difference(a, ZCA(0.1).fit(x, input_scale=PIXELS_01, chunk_size=7).describe()) is None
        True
        >>> describe_difference(a, ZCA(0.2).fit(x, input_scale=PIXELS_01).describe(), ("buffer", "this run"))
        'ZCA eps: buffer 0.1, this run 0.2'
    """
    for side, rec in zip(names, (recorded, current), strict=True):
        if not isinstance(rec, dict) or rec.get("recipe") != RECIPE:
            if isinstance(rec, dict) and "recipe" not in rec:
                return (
                    f"the {side}'s ZCA was fitted on mean/std-normalized pixels by an older condense (the references "
                    f"and this version fit it on {PIXELS_01})"
                )
            got = rec.get("recipe") if isinstance(rec, dict) else rec
            return f"the {side}'s ZCA recipe is {got!r}, this condense reads only {RECIPE!r}"
    diffs = [
        f"ZCA {key}: {names[0]} {recorded.get(key)}, {names[1]} {current.get(key)}"
        for key in _EXACT
        if recorded.get(key) != current.get(key)
    ]
    if diffs:
        return "; ".join(diffs)
    a, b = recorded.get("summary"), current.get("summary")
    if not (isinstance(a, dict) and isinstance(b, dict)) or set(a) != set(b):
        return f"ZCA summary: {names[0]} has {sorted(a or {})}, {names[1]} has {sorted(b or {})}"
    for key in sorted(a):
        va, vb = a[key], b[key]
        if not (isinstance(va, list) and isinstance(vb, list) and len(va) == len(vb) and va):
            return f"ZCA summary '{key}': {names[0]} {va}, {names[1]} {vb}"
        ta, tb = torch.tensor(va, dtype=torch.float64), torch.tensor(vb, dtype=torch.float64)
        err = float((ta - tb).abs().max())
        scale = max(float(ta.abs().max()), float(tb.abs().max()))
        if not err <= rtol * scale:  # also refuses NaN
            return (
                f"ZCA matrices differ ({key} summary: relative difference {err / scale if scale else err:.2e} > "
                f"{rtol:g}, though data fingerprint, eps and dim agree)"
            )
    return None


def fingerprint_rows(flat: torch.Tensor) -> str:
    """Fingerprint of a (N, D) tensor: sha256 over its shape and a strided float32 sample of at most 65,536 values.

    Shape:
        flat: (N, D) float, any device (only the sample is copied to the CPU).
    """
    h = hashlib.sha256()
    h.update(str(tuple(flat.shape)).encode())
    view = flat.reshape(-1)
    step = max(1, view.numel() // 65536)
    h.update(view[::step].to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _probes(d: int) -> torch.Tensor:
    """Fixed unit probe vectors of length ``d`` (closed form, so identical on every machine).

    Rows: the constant vector, a centered ramp, one and three periods of a cosine, and the alternating sign.

    Shape:
        return: (5, d) float64.
    """
    i = torch.arange(d, dtype=torch.float64)
    t = (i + 0.5) / d
    rows = torch.stack(
        [
            torch.ones(d, dtype=torch.float64),
            t - 0.5,
            torch.cos(2 * math.pi * t),
            torch.cos(6 * math.pi * t + 1.0),
            1.0 - 2.0 * (i % 2),
        ]
    )
    norms = rows.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return rows / norms


def _chunk_rows(chunk_size: int | None, d: int) -> int:
    if chunk_size is None:
        return max(1, _BYTES_PER_CHUNK // (4 * max(d, 1)))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"ZCA chunk_size must be an integer >= 1, got {chunk_size!r}")
    return chunk_size
