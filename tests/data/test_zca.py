"""ZCA: the loaders whiten [0, 1] pixels as the references do (kornia parity on digits and CIFAR-10), chunked fit,
identity by recipe (thread counts and chunkings fit, other eps or data do not), inverse, save/load, errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from condense.data import load_dataset
from condense.data.zca import PIXELS_01, RECIPE, ZCA, describe_difference
from condense.errors import ConfigError, DataFormatError, MismatchError


def _data(n: int = 200, shape: tuple[int, ...] = (3, 4, 4), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.Size(shape).numel()
    mix = torch.randn(d, d, generator=g) / d**0.5 + torch.eye(d)  # correlated features, like pixels
    return (torch.randn(n, d, generator=g) @ mix + torch.linspace(-1, 1, d)).reshape(n, *shape)


def _pixels(n: int = 200, seed: int = 0) -> torch.Tensor:
    """Correlated values in [0, 1], like pixels."""
    x = _data(n, seed=seed)
    return (x - x.min()) / (x.max() - x.min())


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    """torchvision's ``ToTensor()`` on uint8 HWC images, batched: the references' only transform under --zca."""
    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255)


def _digits_pixels() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits splits as ToTensor [0, 1] pixels, recovered exactly (k / 255) from the normalized dataset."""
    plain = load_dataset("digits")
    m, s = torch.tensor(plain.mean).view(1, -1, 1, 1), torch.tensor(plain.std).view(1, -1, 1, 1)
    return tuple(((x * s + m) * 255).round().div(255) for x in (plain.x_train, plain.x_test))


def _artifact(data, n: int):
    """An artifact holding the first ``n`` training images of ``data``, with its preprocessing and ZCA matrices."""
    from condense.synthetic import SyntheticSet

    return SyntheticSet(
        images=data.x_train[:n].clone(),
        labels=data.y_train[:n].clone(),
        classes=list(data.classes),
        method="random_real",
        dataset=data.name,
        ipc=n // 10,
        preprocessing=data.preprocessing(),
        tensors={k: v.clone() for k, v in data.zca.to_tensors().items()},
    )


# ----------------------------------------------------------------------------------------------------------------------
# The loaders: fitted on [0, 1] pixels, eps 0.1, as MTT/FTD/DATM with kornia
# ----------------------------------------------------------------------------------------------------------------------


def test_digits_load_path_matches_kornia_on_totensor_pixels() -> None:
    kornia = pytest.importorskip("kornia")
    x_tr, x_te = _digits_pixels()
    data = load_dataset("digits", zca=True)
    ref = kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True).fit(x_tr)
    torch.testing.assert_close(data.x_train, ref(x_tr), rtol=0, atol=1e-5)
    torch.testing.assert_close(data.x_test, ref(x_te), rtol=0, atol=1e-5)
    torch.testing.assert_close(data.zca.inverse(data.x_train), ref.inverse_transform(ref(x_tr)), rtol=0, atol=1e-5)
    # not normalized when whitened: the identity normalization, so inverting gives pixels back
    assert data.mean == (0.0,) and data.std == (1.0,)
    assert data.preprocessing()["zca"]["input"] == PIXELS_01 and data.preprocessing()["zca"]["eps"] == 0.1


def test_zca_keeps_the_fingerprint_of_the_data() -> None:
    # the fingerprint names the data, not its preprocessing: the same with and without ZCA
    assert load_dataset("digits", zca=True).fingerprint == load_dataset("digits").fingerprint


def test_pixels_round_trip_on_a_zca_dataset(tmp_path: Path) -> None:
    from condense.synthetic import SyntheticSet

    data = load_dataset("digits", zca=True)
    x_tr, _ = _digits_pixels()
    syn = _artifact(data, 30)
    back = SyntheticSet.load(syn.save(tmp_path / "z.safetensors"))
    torch.testing.assert_close(back.pixels(), x_tr[:30], rtol=0, atol=2e-6)
    back.check_compatible(data)


def _cifar_shards(shared_data: Path) -> tuple[np.lib.npyio.NpzFile, np.lib.npyio.NpzFile]:
    src = shared_data / "cifar10"
    if not ((src / "train-00.npz").is_file() and (src / "test-00.npz").is_file()):
        pytest.skip(f"CIFAR-10 shards train-00.npz / test-00.npz absent under '{src}'")
    return np.load(src / "train-00.npz"), np.load(src / "test-00.npz")


@pytest.mark.real_data
def test_cifar10_builder_matches_kornia_on_totensor_pixels(shared_data: Path) -> None:
    """The builder every image loader calls, on real CIFAR-10 pixels, against kornia fitted on ToTensor pixels.

    5,000 train / 1,000 test images, their central 3 x 16 x 16 (D = 768): kornia's fit of the full 3072 x 3072
    covariance (a float64 SVD) takes about 40 s on one thread, and condense's float64 eigh about 23 s. At full size
    (10,000 images) the two agreed to 2.5e-6; the loader's own input is checked by the next test.
    """
    kornia = pytest.importorskip("kornia")
    from condense.data.base import from_uint8_arrays
    from condense.data.cifar import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD

    tr, te = _cifar_shards(shared_data)
    crop = slice(8, 24)
    x_tr, x_te = tr["x"][:5000, crop, crop], te["x"][:1000, crop, crop]
    y_tr, y_te = tr["y"][:5000], te["y"][:1000]
    data = from_uint8_arrays("cifar10", x_tr, y_tr, x_te, y_te, CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, zca=True)
    p_tr, p_te = _to_tensor(x_tr), _to_tensor(x_te)
    ref = kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True).fit(p_tr)
    torch.testing.assert_close(data.x_train, ref(p_tr), rtol=0, atol=1e-5)
    torch.testing.assert_close(data.x_test, ref(p_te), rtol=0, atol=1e-5)
    torch.testing.assert_close(data.zca.inverse(data.x_test), ref.inverse_transform(ref(p_te)), rtol=0, atol=1e-5)
    assert data.mean == (0.0, 0.0, 0.0) and data.std == (1.0, 1.0, 1.0)


@pytest.mark.real_data
def test_cifar10_loader_fits_on_totensor_pixels_with_eps_01(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    """``load_dataset("cifar10", root, zca=True)`` hands the ZCA fit exactly ToTensor's [0, 1] pixels and eps 0.1.

    The fit itself is stopped after its input is recorded (the 3072 x 3072 eigh is what the previous test avoids).
    """
    tr, te = _cifar_shards(shared_data)
    root = tmp_path / "cifar10"
    root.mkdir()
    np.savez(root / "train-00.npz", x=tr["x"][:2000], y=tr["y"][:2000])
    np.savez(root / "test-00.npz", x=te["x"][:500], y=te["y"][:500])
    seen: dict = {}

    class Stop(Exception):
        pass

    def spy(self: ZCA, x: torch.Tensor, **kwargs) -> ZCA:
        seen.update(x=x.clone(), eps=self.eps, **kwargs)
        raise Stop

    monkeypatch.setattr(ZCA, "fit", spy)
    with pytest.raises(Stop):
        load_dataset("cifar10", str(root), zca=True)
    assert seen["eps"] == 0.1 and seen["input_scale"] == PIXELS_01
    torch.testing.assert_close(seen["x"], _to_tensor(tr["x"][:2000]), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------------
# The fit: chunked, on a device, in float32 with a float64 D x D accumulator
# ----------------------------------------------------------------------------------------------------------------------


def test_chunked_fit_equals_one_chunk() -> None:
    # The fit never holds more than one chunk of rows in float32 (and no float64 copy of the data); a chunk size
    # smaller than N, not dividing it, gives the same matrices to float32 round-off.
    x = _pixels(n=301)
    one = ZCA(eps=0.1).fit(x, chunk_size=301)
    many = ZCA(eps=0.1).fit(x, chunk_size=17)
    for a, b in zip(one.to_tensors().values(), many.to_tensors().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert describe_difference(one.describe(), many.describe()) is None


def test_whiten_in_place_equals_call() -> None:
    x = _pixels()
    z = ZCA(eps=0.1).fit(x)
    out = x.clone()
    assert z.whiten_(out, chunk_size=13) is out
    torch.testing.assert_close(out, z(x), rtol=0, atol=1e-6)
    with pytest.raises(DataFormatError, match="contiguous"):
        z.whiten_(x.transpose(2, 3))


@pytest.mark.gpu
def test_fit_on_cuda_from_cpu_data_matches_cpu_fit() -> None:
    x = _pixels(n=500)
    cpu = ZCA(eps=0.1).fit(x, input_scale=PIXELS_01)
    gpu = ZCA(eps=0.1).fit(x, input_scale=PIXELS_01, device="cuda", chunk_size=64)
    assert gpu.matrix.device.type == "cpu"  # stored beside the data
    torch.testing.assert_close(gpu.matrix, cpu.matrix, rtol=0, atol=1e-5)
    assert describe_difference(cpu.describe(), gpu.describe()) is None
    out = x.clone()
    gpu.whiten_(out, device="cuda")
    torch.testing.assert_close(out, cpu(x), rtol=0, atol=1e-5)


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


def test_fit_is_linear_algebra_of_the_input() -> None:
    # a non-timing stand-in for a speed check: the result is the closed form on a tiny problem
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 1.0]])
    z = ZCA(eps=0.1).fit(x, input_scale=PIXELS_01)
    cov = torch.cov(x.T.double())
    evals, evecs = torch.linalg.eigh(cov)
    want = (evecs * (evals + 0.1).rsqrt()) @ evecs.T
    torch.testing.assert_close(z.matrix.double(), want, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# Identity: recipe exactly, numbers within a tolerance
# ----------------------------------------------------------------------------------------------------------------------


def test_describe_is_json_and_names_the_recipe() -> None:
    z = ZCA(eps=0.1).fit(_pixels(), input_scale=PIXELS_01)
    d = json.loads(json.dumps(z.describe()))
    assert d["recipe"] == RECIPE and d["input"] == PIXELS_01 and d["num_samples"] == 200
    assert d["eps"] == 0.1 and d["dim"] == 48 and len(d["sha256"]) == 64 and len(d["fingerprint"]) == 16
    assert set(d["summary"]) == {"mean", "matrix", "inverse"}
    other = ZCA(eps=0.1).fit(_pixels(seed=1), input_scale=PIXELS_01).describe()
    assert other["fingerprint"] != d["fingerprint"] and other["sha256"] != d["sha256"]


def test_thread_count_and_chunking_fit_other_eps_or_data_refused() -> None:
    x = _pixels(n=500)
    torch.set_num_threads(2)
    try:
        two = ZCA(eps=0.1).fit(x, input_scale=PIXELS_01, chunk_size=37)
    finally:
        torch.set_num_threads(1)
    one = ZCA(eps=0.1).fit(x, input_scale=PIXELS_01)
    a, b = one.describe(), two.describe()
    assert a["sha256"] != b["sha256"]  # not bit-identical, so a sha comparison would refuse it
    assert describe_difference(a, b, ("buffer", "this run")) is None
    eps = ZCA(eps=0.2).fit(x, input_scale=PIXELS_01).describe()
    assert describe_difference(a, eps, ("buffer", "this run")) == "ZCA eps: buffer 0.1, this run 0.2"
    other = ZCA(eps=0.1).fit(_pixels(n=500, seed=3), input_scale=PIXELS_01).describe()
    assert describe_difference(a, other).startswith("ZCA fingerprint")
    scale = ZCA(eps=0.1).fit(x).describe()
    assert describe_difference(a, scale) == f"ZCA input: recorded {PIXELS_01}, current unspecified"
    # the same recipe fields but other matrices (here: edited) are caught by the summary
    forged = copy.deepcopy(a)
    forged["summary"]["inverse"][2] *= 1.01
    assert "ZCA matrices differ (inverse summary" in describe_difference(a, forged)
    forged["summary"]["inverse"][2] = float("nan")
    assert describe_difference(a, forged) is not None
    # an older condense's record (fitted on normalized pixels) says so
    old = {"eps": 0.1, "dim": 48, "sha256": a["sha256"]}
    assert "fitted on mean/std-normalized pixels by an older condense" in describe_difference(old, a, ("buffer", "x"))


def test_buffer_accepts_another_chunking_and_refuses_old_recipe(tmp_path: Path) -> None:
    from condense.expert_trajectories import ExpertBuffer, get_expert_config, record_experts

    data = load_dataset("digits", zca=True)
    cfg = get_expert_config("vanilla", batch_size=256, augment="none")
    out = tmp_path / "buf"
    record_experts(data, "convnet", 1, 1, out, config=cfg, quiet=True, model_kwargs={"width": 8}, seed=0)
    buf = ExpertBuffer.open(out)
    x_tr, _ = _digits_pixels()
    refit = copy.copy(data)
    refit.zca = ZCA(eps=0.1).fit(x_tr, input_scale=PIXELS_01, chunk_size=100)
    assert refit.zca.sha256() != data.zca.sha256()
    buf.check_compatible(refit, "convnet")  # another chunking (or thread count, or GPU) of the same fit
    refit.zca = ZCA(eps=0.05).fit(x_tr, input_scale=PIXELS_01)
    with pytest.raises(MismatchError, match=r"ZCA eps: buffer 0.1, this run 0.05.*record a new buffer"):
        buf.check_compatible(refit, "convnet")
    buf.manifest["preprocessing"]["zca"] = {"eps": 0.1, "dim": 64, "sha256": "0" * 64}  # as condense <= 0.1 wrote
    with pytest.raises(MismatchError, match=r"buffer's ZCA was fitted on mean/std-normalized pixels by an older"):
        buf.check_compatible(data, "convnet")


def test_artifact_accepts_another_chunking_and_refuses_old_recipe() -> None:
    data = load_dataset("digits", zca=True)
    syn = _artifact(data, 20)
    x_tr, _ = _digits_pixels()
    refit = copy.copy(data)
    refit.zca = ZCA(eps=0.1).fit(x_tr, input_scale=PIXELS_01, chunk_size=100)
    syn.check_compatible(refit)
    other = copy.copy(data)
    other.zca = ZCA(eps=0.1).fit(x_tr[:-1], input_scale=PIXELS_01)
    with pytest.raises(MismatchError, match=r"ZCA fingerprint: synthetic set .*distill the set again"):
        syn.check_compatible(other)
    syn.preprocessing = {"mean": [0.3063], "std": [0.3741], "zca": {"eps": 0.1, "dim": 64, "sha256": "0" * 64}}
    with pytest.raises(MismatchError, match=r"normalized pixels by an older condense.*distill the set again"):
        syn.check_compatible(data)


# ----------------------------------------------------------------------------------------------------------------------
# Saving, loading, errors
# ----------------------------------------------------------------------------------------------------------------------


def test_tensors_round_trip_exactly() -> None:
    x = _pixels()
    z = ZCA(eps=0.1).fit(x, input_scale=PIXELS_01)
    tensors = z.to_tensors()
    assert set(tensors) == {"zca_mean", "zca_matrix", "zca_inverse"}
    assert tensors["zca_mean"].shape == (48,) and tensors["zca_matrix"].shape == (48, 48)
    assert all(t.dtype == torch.float32 for t in tensors.values())
    z2 = ZCA.from_tensors({k: v.clone() for k, v in tensors.items()}, eps=0.1, info=z.describe())
    torch.testing.assert_close(z2(x), z(x), rtol=0, atol=0)
    torch.testing.assert_close(z2.inverse(x), z.inverse(x), rtol=0, atol=0)
    assert z2.describe() == z.describe()
    bare = ZCA.from_tensors(tensors, eps=0.1)  # without its record: an unknown recipe, refused by comparisons
    assert bare.describe()["recipe"] is None and describe_difference(z.describe(), bare.describe()) is not None


def test_errors() -> None:
    with pytest.raises(ConfigError, match=r"call ZCA\(eps\)\.fit"):
        ZCA(eps=0.1)(torch.rand(2, 3, 4, 4))
    with pytest.raises(ConfigError, match="fit"):
        ZCA(eps=0.1).describe()
    with pytest.raises(ConfigError, match="eps"):
        ZCA(eps=-1.0)
    with pytest.raises(ConfigError, match="chunk_size"):
        ZCA(eps=0.1).fit(_pixels(), chunk_size=0)
    with pytest.raises(DataFormatError, match=r"\[0,1\] pixels, but its values span"):
        ZCA(eps=0.1).fit(_data(), input_scale=PIXELS_01)
    with pytest.raises(DataFormatError, match="at least 2 samples"):
        ZCA(eps=0.1).fit(torch.rand(1, 3))
    z = ZCA(eps=0.1).fit(_data())
    with pytest.raises(MismatchError, match="48 features"):
        z(torch.rand(2, 3, 8, 8))
    with pytest.raises(MismatchError, match="zca_inverse"):
        ZCA.from_tensors({"zca_mean": torch.zeros(4), "zca_matrix": torch.eye(4)}, eps=0.1)


def test_load_dataset_fits_zca_on_the_device_it_is_given(monkeypatch):
    from condense.data import load_dataset
    from condense.data.zca import ZCA

    seen = []
    fit = ZCA.fit

    def spy(self, x, **kw):
        seen.append(kw.get("device"))
        return fit(self, x, **kw)

    monkeypatch.setattr(ZCA, "fit", spy)
    load_dataset("digits", zca=True, zca_device="cpu")
    load_dataset("digits", zca=True)
    assert seen == ["cpu", None]
