"""ZCA: kornia parity, inverse, exact save/load round trip, errors, speed."""

from __future__ import annotations

import json
import time

import pytest
import torch

from condense.data.zca import ZCA
from condense.errors import ConfigError, MismatchError


def _data(n: int = 200, shape: tuple[int, ...] = (3, 4, 4), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.Size(shape).numel()
    mix = torch.randn(d, d, generator=g) / d**0.5 + torch.eye(d)  # correlated features, like pixels
    return (torch.randn(n, d, generator=g) @ mix + torch.linspace(-1, 1, d)).reshape(n, *shape)


def test_matches_kornia() -> None:
    import kornia  # a declared dependency (pyproject), so always importable where the suite runs

    x = _data()
    ours = ZCA(eps=0.1).fit(x)
    ref = kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True).fit(x)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-4)
    torch.testing.assert_close(ours.inverse(ours(x)), ref.inverse_transform(ref(x)), rtol=0, atol=1e-4)


def test_whitens() -> None:
    x = _data(n=2000)
    xw = ZCA(eps=1e-6).fit(x)(x).reshape(2000, -1).double()
    cov = torch.cov(xw.T)
    torch.testing.assert_close(cov, torch.eye(cov.shape[0], dtype=cov.dtype), rtol=0, atol=1e-3)
    torch.testing.assert_close(xw.mean(0), torch.zeros_like(xw[0]), rtol=0, atol=1e-4)


def test_inverse_round_trips() -> None:
    x = _data()
    z = ZCA(eps=0.1).fit(x)
    xw = z(x)
    assert xw.shape == x.shape and xw.dtype == x.dtype
    torch.testing.assert_close(z.inverse(xw), x, rtol=0, atol=1e-4)


def test_tensors_round_trip_exactly() -> None:
    x = _data()
    z = ZCA(eps=0.1).fit(x)
    tensors = z.to_tensors()
    assert set(tensors) == {"zca_mean", "zca_matrix", "zca_inverse"}
    assert tensors["zca_mean"].shape == (48,) and tensors["zca_matrix"].shape == (48, 48)
    assert all(t.dtype == torch.float32 for t in tensors.values())
    z2 = ZCA.from_tensors({k: v.clone() for k, v in tensors.items()}, eps=0.1)
    torch.testing.assert_close(z2(x), z(x), rtol=0, atol=0)
    torch.testing.assert_close(z2.inverse(x), z.inverse(x), rtol=0, atol=0)
    assert z2.describe() == z.describe()


def test_describe_is_json() -> None:
    z = ZCA(eps=0.1).fit(_data())
    d = json.loads(json.dumps(z.describe()))
    assert d["eps"] == 0.1 and d["dim"] == 48 and len(d["sha256"]) == 64
    assert ZCA(eps=0.1).fit(_data(seed=1)).describe()["sha256"] != d["sha256"]


def test_errors() -> None:
    with pytest.raises(ConfigError, match=r"call ZCA\(eps\)\.fit"):
        ZCA(eps=0.1)(torch.rand(2, 3, 4, 4))
    with pytest.raises(ConfigError, match="fit"):
        ZCA(eps=0.1).describe()
    with pytest.raises(ConfigError, match="eps"):
        ZCA(eps=-1.0)
    z = ZCA(eps=0.1).fit(_data())
    with pytest.raises(MismatchError, match="48 features"):
        z(torch.rand(2, 3, 8, 8))
    with pytest.raises(MismatchError, match="zca_inverse"):
        ZCA.from_tensors({"zca_mean": torch.zeros(4), "zca_matrix": torch.eye(4)}, eps=0.1)


def test_fit_is_fast() -> None:
    x = _data(n=500)
    t0 = time.perf_counter()
    ZCA(eps=0.1).fit(x)
    assert time.perf_counter() - t0 < 1.0
