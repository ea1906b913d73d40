"""ZCA whitening as MTT, FTD, DATM and TESLA use it, in plain torch (kornia not needed), invertible and saveable.

The trajectory-matching repos fit ``kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True)`` on the whole normalized
training set and apply it to both splits; distilled images then live in ZCA space and need the inverse to be viewed.
This class computes the same transform (kornia's default unbiased covariance, divisor N - 1):

    mu = mean(X),  Sigma = (X - mu)^T (X - mu) / (N - 1) = U S U^T,
    W = U (S + eps)^(-1/2) U^T,   W^-1 = U (S + eps)^(1/2) U^T,   zca(x) = (x - mu) W,   inverse(z) = z W^-1 + mu.

Differences from kornia: the fit runs in float64 with ``torch.linalg.eigh`` (kornia: SVD in the input dtype) and the
matrices are stored in float32, so the result matches kornia's to float32 round-off, not bit for bit.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch

from condense.errors import ConfigError, DataFormatError, MismatchError

__all__ = ["ZCA"]

_KEYS = ("zca_mean", "zca_matrix", "zca_inverse")


class ZCA:
    """Fitted, invertible ZCA whitening of image tensors (features = C*H*W).

    Args:
        eps: added to the covariance eigenvalues before the inverse square root (MTT/DATM use 0.1).

    Shape:
        x: (N, C, H, W) float (any shape whose trailing dims flatten to D works); whitened output has the same shape.

    Example:
        >>> x = torch.randn(64, 3, 4, 4)
        >>> z = ZCA(eps=0.1).fit(x)
        >>> torch.allclose(z.inverse(z(x)), x, atol=1e-4)
        True
    """

    def __init__(self, eps: float = 0.1) -> None:
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
            raise ConfigError(f"ZCA eps must be a finite number >= 0, got {eps!r}")
        self.eps = float(eps)
        self.mean: torch.Tensor | None = None  # (D,) mu
        self.matrix: torch.Tensor | None = None  # (D, D) W, symmetric
        self.inverse_matrix: torch.Tensor | None = None  # (D, D) W^-1, symmetric

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

    def fit(self, x: torch.Tensor) -> ZCA:
        """Estimate mu, W and W^-1 from ``x`` (float64 internally, stored float32 on ``x``'s device).

        Shape:
            x: (N, C, H, W) float with N >= 2 (the covariance divides by N - 1).

        Returns:
            self, fitted.
        """
        if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.is_floating_point():
            desc = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataFormatError(f"ZCA.fit expects a float tensor (N, C, H, W), got {desc}")
        n = int(x.shape[0])
        if n < 2:
            raise DataFormatError(f"ZCA.fit needs at least 2 samples (unbiased covariance), got {n}")
        flat = x.detach().reshape(n, -1).to(torch.float64)
        mean = flat.mean(dim=0)
        centered = flat - mean
        cov = centered.T @ centered / (n - 1)
        evals, evecs = torch.linalg.eigh(cov)
        # An SVD of a PSD matrix (kornia) returns |eigenvalue|; round-off can make tiny eigenvalues negative.
        evals = evals.abs()
        self.mean = mean.float()
        self.matrix = ((evecs * torch.rsqrt(evals + self.eps)) @ evecs.T).float()
        self.inverse_matrix = ((evecs * torch.sqrt(evals + self.eps)) @ evecs.T).float()
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
    def from_tensors(cls, tensors: dict[str, torch.Tensor], eps: float) -> ZCA:
        """Rebuild a fitted ZCA exactly from :meth:`to_tensors` output (extra keys are ignored).

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
        return z

    def sha256(self) -> str:
        """Digest of the three float32 matrices (mean, W, W^-1 in that order), device independent."""
        self._require_fit()
        h = hashlib.sha256()
        for t in (self.mean, self.matrix, self.inverse_matrix):
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """JSON description recorded with datasets, buffers and artifacts: ``{"eps", "dim", "sha256"}``."""
        return {"eps": self.eps, "dim": self.dim, "sha256": self.sha256()}

    def __repr__(self) -> str:
        return f"ZCA(eps={self.eps}, dim={self.dim if self.fitted else None})"
