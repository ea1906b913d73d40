"""DSA: presets, exact replay, generator determinism, gradients (gradcheck, torch.func), shapes and devices."""

from __future__ import annotations

import json

import pytest
import torch

from condense.augment import DSA, GROUPS, get_augment, list_augments
from condense.augment import functional as FA
from condense.errors import ConfigError, DataFormatError, MismatchError, UnknownNameError

B, C, H, W = 8, 3, 8, 8  # small on purpose: the whole file runs in a few seconds on 2 cores


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _with_group(aug: DSA, params: dict[str, torch.Tensor], group: str) -> dict[str, torch.Tensor]:
    out = dict(params)
    out["group"] = torch.tensor(aug.groups.index(group))
    return out


def _fixed_params(n: int, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Hand-picked parameters that change every image (no identity draws)."""
    return {
        "brightness": torch.tensor([0.3, -0.2], dtype=dtype)[:n],
        "saturation": torch.tensor([1.5, 0.4], dtype=dtype)[:n],
        "contrast": torch.tensor([0.7, 1.3], dtype=dtype)[:n],
        "crop_shift": torch.tensor([[1, -1], [-1, 0]])[:n],
        "cutout_center": torch.tensor([[3, 2], [0, 5]])[:n],
        "flip": torch.tensor([True, True])[:n],
        "scale": torch.tensor([[1.1, 0.9], [0.85, 1.15]], dtype=dtype)[:n],
        "rotate": torch.tensor([10.0, -7.0], dtype=dtype)[:n],
    }


# ----------------------------------------------------------------------------------------------------------------------
# Presets and configuration
# ----------------------------------------------------------------------------------------------------------------------


def test_presets() -> None:
    assert {"dsa", "dsa_noflip", "none"} <= set(list_augments())
    aug = get_augment("dsa")
    assert aug.strategy == "color_crop_cutout_flip_scale_rotate" and aug.mode == "S"
    assert aug.groups == GROUPS
    assert "flip" not in get_augment("dsa_noflip").groups
    assert get_augment("none").is_identity
    # Published ranges (DC code ParamDiffAug).
    cfg = aug.config()
    assert cfg["flip_prob"] == 0.5 and cfg["scale_ratio"] == 1.2 and cfg["rotate_degrees"] == 15.0
    assert cfg["crop_ratio"] == 0.125 and cfg["cutout_ratio"] == 0.5
    assert (cfg["brightness"], cfg["saturation"], cfg["contrast"]) == (1.0, 2.0, 0.5)


def test_config_roundtrip_json() -> None:
    aug = get_augment("dsa", rotate_degrees=10.0)
    cfg = json.loads(json.dumps(aug.config()))
    assert DSA(**cfg).config() == aug.config()


def test_bad_names_and_settings() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'dsa'"):
        get_augment("dsaa")
    with pytest.raises(ConfigError, match="blur"):
        DSA("color_blur")
    with pytest.raises(ConfigError, match="mode"):
        DSA(mode="X")
    with pytest.raises(ConfigError, match="scale_ratio"):
        DSA(scale_ratio=0.5)
    with pytest.raises(DataFormatError, match="got"):
        get_augment("dsa")(torch.rand(3, 8, 8))


# ----------------------------------------------------------------------------------------------------------------------
# Identity, shapes, replay, determinism
# ----------------------------------------------------------------------------------------------------------------------


def test_none_is_identity() -> None:
    aug = get_augment("none")
    x = torch.rand(B, C, H, W)
    assert aug.sample(x, generator=_gen(0)) == {}
    y, params = aug(x, generator=_gen(0), return_params=True)
    assert params == {}
    torch.testing.assert_close(y, x, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["dsa", "dsa_noflip", "dsa_all", "none"])
@pytest.mark.parametrize("shape", [(B, C, H, W), (2, 3, 1, 6, 6)])
def test_shapes_preserved(name: str, shape: tuple[int, ...]) -> None:
    aug = get_augment(name)
    x = torch.rand(shape)
    for seed in range(4):  # several draws so several groups are hit in mode "S"
        y = aug(x, generator=_gen(seed))
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("group", GROUPS)
def test_replay_gives_identical_output(group: str) -> None:
    aug = get_augment("dsa")
    x = torch.randn(B, C, H, W)
    params = _with_group(aug, aug.sample(x, generator=_gen(1)), group)
    torch.testing.assert_close(aug(x, params=params), aug(x, params=params), rtol=0, atol=0)
    # Siamese: the same params on a second batch of the same size transform it the same way; same images -> same out.
    x2 = torch.randn(B, C, H, W)
    both = aug(torch.cat([x, x2]), params={k: v if k == "group" else torch.cat([v, v]) for k, v in params.items()})
    torch.testing.assert_close(both[:B], aug(x, params=params), rtol=0, atol=1e-6)
    torch.testing.assert_close(both[B:], aug(x2, params=params), rtol=0, atol=1e-6)


def test_return_params_replays() -> None:
    aug = get_augment("dsa")
    x = torch.randn(B, C, H, W)
    y, params = aug(x, generator=_gen(3), return_params=True)
    torch.testing.assert_close(aug(x, params=params), y, rtol=0, atol=0)


def test_same_seed_same_output_different_seed_differs() -> None:
    aug = get_augment("dsa_all")  # mode "M": every group is drawn and applied, so any parameter difference shows
    x = torch.randn(B, C, H, W)
    torch.testing.assert_close(aug(x, generator=_gen(5)), aug(x, generator=_gen(5)), rtol=0, atol=0)
    assert not torch.allclose(aug(x, generator=_gen(5)), aug(x, generator=_gen(6)))
    p5, p6 = get_augment("dsa").sample(x, generator=_gen(5)), get_augment("dsa").sample(x, generator=_gen(6))
    assert any(not torch.equal(p5[k], p6[k]) for k in p5)


def test_sample_does_not_touch_global_rng() -> None:
    x = torch.rand(B, C, H, W)
    state = torch.get_rng_state()
    get_augment("dsa_all")(x, generator=_gen(0))
    assert torch.equal(torch.get_rng_state(), state)


def test_group_choice_is_uniform_over_groups() -> None:
    aug = get_augment("dsa")
    x = torch.rand(1, C, H, W)
    g = _gen(0)
    seen = {int(aug.sample(x, generator=g)["group"]) for _ in range(200)}
    assert seen == set(range(len(GROUPS)))


@pytest.mark.parametrize("group", GROUPS)
def test_each_group_changes_the_image(group: str) -> None:
    aug = get_augment("dsa")
    x = torch.randn(16, C, H, W)
    params = _with_group(aug, aug.sample(x, generator=_gen(2)), group)
    assert aug.selected_groups(params) == (group,)
    y = aug(x, params=params)
    assert (y - x).abs().amax(dim=(1, 2, 3)).gt(1e-4).any()


def test_parameter_ranges() -> None:
    aug = get_augment("dsa")
    x = torch.rand(4000, 1, 32, 32)
    p = aug.sample(x, generator=_gen(0))
    assert p["group"].shape == () and p["group"].dtype == torch.int64
    assert p["brightness"].abs().max() <= 0.5 and p["saturation"].min() >= 0 and p["saturation"].max() <= 2
    assert p["contrast"].min() >= 0.5 and p["contrast"].max() <= 1.5
    assert p["crop_shift"].abs().max() == 4  # int(32 * 0.125 + 0.5)
    assert p["cutout_center"].min() >= 0 and p["cutout_center"].max() <= 32
    assert 0.45 < p["flip"].float().mean() < 0.55
    assert p["scale"].min() >= 1 / 1.2 and p["scale"].max() <= 1.2
    assert not torch.equal(p["scale"][:, 0], p["scale"][:, 1])  # sx and sy are independent
    assert p["rotate"].abs().max() <= 15.0


def test_mode_m_applies_every_group_in_order() -> None:
    aug = get_augment("dsa_all")
    x = torch.randn(2, C, 6, 6, dtype=torch.float64)
    p = _fixed_params(2)
    ref = FA.color(x, p["brightness"], p["saturation"], p["contrast"])
    ref = FA.cutout(FA.crop(ref, p["crop_shift"]), p["cutout_center"], (3, 3))
    ref = FA.rotate(FA.scale(FA.flip(ref, p["flip"]), p["scale"]), p["rotate"])
    torch.testing.assert_close(aug(x, params=p), ref, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# Shared (Siamese seed) draws and parameter checks
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS)
def test_shared_draw_applies_to_any_batch_size(group: str) -> None:
    aug = get_augment("dsa")
    x1 = torch.randn(1, C, H, W)
    params = _with_group(aug, aug.sample(x1, generator=_gen(4), shared=True), group)
    assert all(v.shape[0] == 1 for k, v in params.items() if k != "group")
    y1 = aug(x1, params=params)
    for n in (3, 5):
        y = aug(x1.expand(n, C, H, W), params=params)  # every sample gets the one shared transform
        torch.testing.assert_close(y, y1.expand(n, C, H, W), rtol=0, atol=1e-6)


def test_mismatched_params_raise() -> None:
    aug = get_augment("dsa")
    params = _with_group(aug, aug.sample(torch.rand(4, C, H, W), generator=_gen(0)), "rotate")
    with pytest.raises(MismatchError, match="leading size 4"):
        aug(torch.rand(3, C, H, W), params=params)
    with pytest.raises(MismatchError, match="rotate"):
        aug(torch.rand(4, C, H, W), params={"group": params["group"]})


# ----------------------------------------------------------------------------------------------------------------------
# Functional ops
# ----------------------------------------------------------------------------------------------------------------------


def test_cutout_zeros_half_size_square() -> None:
    aug = get_augment("dsa")
    x = torch.rand(2, C, H, W) + 1.0  # strictly positive, so zeros can only come from cutout
    params = {"group": torch.tensor(aug.groups.index("cutout")), "cutout_center": torch.tensor([[4, 4], [0, 0]])}
    y = aug(x, params=params)
    side = int(0.5 * H + 0.5)
    inside = y[0, :, 4 - side // 2 : 4 - side // 2 + side, 4 - side // 2 : 4 - side // 2 + side]
    assert (inside == 0).all() and int((y[0] == 0).sum()) == C * side * side
    assert int((y[1] == 0).sum()) == C * (side // 2) ** 2  # a corner center: clipped at the border, as in DC
    torch.testing.assert_close(y[0][y[0] != 0], x[0][y[0] != 0], rtol=0, atol=0)


def test_crop_translates_with_zero_fill() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = FA.crop(x, torch.tensor([[1, -1]]))  # out[i, j] = x[i + 1, j - 1]
    expected = torch.tensor([[0.0, 4, 5, 6], [0, 8, 9, 10], [0, 12, 13, 14], [0, 0, 0, 0]])
    torch.testing.assert_close(y[0, 0], expected, rtol=0, atol=0)


def test_rotate_and_scale_conventions() -> None:
    x = torch.randn(1, 1, 5, 5)
    # align_corners=True: a 90-degree turn and unit scale land exactly on pixel centers.
    # +90 degrees with the DC matrix [[cos, -sin], [sin, cos]] equals torch.rot90(k=1) (counter-clockwise on screen).
    torch.testing.assert_close(FA.rotate(x, torch.tensor([90.0])), x.rot90(1, dims=(2, 3)), rtol=0, atol=1e-5)
    torch.testing.assert_close(FA.scale(x, torch.ones(1, 2)), x, rtol=0, atol=1e-6)
    torch.testing.assert_close(FA.flip(x, torch.tensor([True])), x.flip(3), rtol=0, atol=0)


def test_color_ops() -> None:
    x = torch.randn(2, C, 4, 4)
    one = torch.ones(2)
    torch.testing.assert_close(FA.color(x, 0 * one, one, one), x, rtol=0, atol=1e-6)
    gray = FA.saturation(x, 0 * one)
    torch.testing.assert_close(gray, x.mean(1, keepdim=True).expand_as(x), rtol=0, atol=1e-6)
    flat = FA.contrast(x, 0 * one)
    torch.testing.assert_close(flat, x.mean((1, 2, 3), keepdim=True).expand_as(x), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS)
def test_gradcheck_each_group(group: str) -> None:
    aug = get_augment("dsa")
    params = _with_group(aug, _fixed_params(2), group)
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: aug(t, params=params), (x,), eps=1e-6, atol=1e-5)


def test_torch_func_grad_matches_autograd() -> None:
    nn = torch.nn  # any initialization will do: both gradients use the same model
    model = nn.Sequential(nn.Conv2d(C, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    aug = get_augment("dsa")
    x = torch.randn(4, C, H, W)
    for seed in range(6):
        params = aug.sample(x, generator=_gen(seed))

        def loss(t: torch.Tensor, params: dict[str, torch.Tensor] = params) -> torch.Tensor:
            return model(aug(t, params=params)).square().sum()

        g_func = torch.func.grad(loss)(x)
        xr = x.clone().requires_grad_(True)
        (g_ref,) = torch.autograd.grad(loss(xr), xr)
        torch.testing.assert_close(g_func, g_ref, rtol=1e-5, atol=1e-6)
        assert g_func.abs().sum() > 0


def test_vmap_over_seeds_with_params_drawn_outside() -> None:
    aug = get_augment("dsa")
    xs = torch.randn(3, 4, C, H, W)  # (S, B, C, H, W)
    for group in GROUPS:
        params = _with_group(aug, aug.sample(xs[0], generator=_gen(0)), group)
        out = torch.func.vmap(lambda t, params=params: aug(t, params=params))(xs)
        ref = torch.stack([aug(t, params=params) for t in xs])
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_seed_leading_dim_is_flattened() -> None:
    aug = get_augment("dsa")
    xs = torch.randn(3, 4, C, H, W)
    y, params = aug(xs, generator=_gen(1), return_params=True)
    assert params["rotate"].shape == (12,)
    torch.testing.assert_close(y.reshape(12, C, H, W), aug(xs.reshape(12, C, H, W), params=params), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------------
# Devices
# ----------------------------------------------------------------------------------------------------------------------


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
def test_sampling_is_on_device_and_device_independent(device: str) -> None:
    aug = get_augment("dsa")
    x = torch.rand(B, C, H, W, device=device)
    params = aug.sample(x, generator=_gen(7))
    for k, v in params.items():
        assert v.device == (torch.device("cpu") if k == "group" else x.device), k
    cpu = aug.sample(x.cpu(), generator=_gen(7))
    for k in params:
        assert torch.equal(params[k].cpu(), cpu[k]), k
    y = aug(x, params=params)
    assert y.device == x.device
    torch.testing.assert_close(y.cpu(), aug(x.cpu(), params=cpu), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_generator_on_device() -> None:
    aug = get_augment("dsa")
    x = torch.rand(B, C, H, W, device="cuda")
    params = aug.sample(x, generator=torch.Generator(device="cuda").manual_seed(0))
    assert params["rotate"].device == x.device
    with pytest.raises(ConfigError, match="generator is on"):
        aug.sample(x.cpu(), generator=torch.Generator(device="cuda"))
