"""Contract tests for condense.models, parametrized over every registered model (timm's test_models.py)."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, stack_module_state, vmap

from condense.errors import ConfigError, UnknownNameError
from condense.models import MODELS, create_model, has_running_stats, list_models, register_model
from condense.models.layers import create_norm, pooled_size
from condense.models.timm_adapter import small_patch_size

NUM_CLASSES = 5
BATCH = 2
# (in_channels, image_size): 8x8 digits and 32x32 CIFAR; every registered model must handle both.
INPUTS = [(1, (8, 8)), (3, (32, 32))]
ALL_MODELS = list_models()
TOL = {"atol": 1e-5, "rtol": 1e-4}  # vmapped vs looped float32 passes (different conv kernels, summation order)


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _build(name: str, in_channels: int, image_size: tuple[int, int], seed: int | None = 0) -> torch.nn.Module:
    return create_model(name, in_channels=in_channels, num_classes=NUM_CLASSES, image_size=image_size, seed=seed)


def test_registry_lists_the_contract_names() -> None:
    expected = {
        "convnet",
        "convnetd1",
        "convnetd2",
        "convnetd3",
        "convnetd4",
        "convnetd5",
        "convnet_bn",
        "convnet_ln",
        "convnet_nonorm",
        "convnet_mp",
        "convnetw32",
        "convnetw64",
        "lenet",
        "mlp",
        "alexnet",
        "alexnet_bn",
        "vgg11",
        "vgg11_bn",
        "resnet18",
        "resnet18_bn",
        "resnet18_ap",
        "resnet18_bn_ap",
        "resnet50_bn",
        "mobilenetv2",
        "shufflenetv2",
        "shufflenetv2_x0_5",
        "densenet121",
    }
    assert expected <= set(ALL_MODELS)
    assert list_models("convnetd*") == ["convnetd1", "convnetd2", "convnetd3", "convnetd4", "convnetd5"]


@pytest.mark.parametrize("in_channels,image_size", INPUTS, ids=["1x8x8", "3x32x32"])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward(name: str, in_channels: int, image_size: tuple[int, int]) -> None:
    model = _build(name, in_channels, image_size)
    x = _randn(BATCH, in_channels, *image_size).requires_grad_()
    logits = model(x)
    assert logits.shape == (BATCH, NUM_CLASSES)
    feats = model.embed(x)
    assert feats.ndim == 2 and feats.shape == (BATCH, model.num_features)
    (logits.square().mean() + feats.mean()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0, "the input must influence the output"
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ALL_MODELS)
def test_seed_reproducible_and_leaves_global_rng(name: str) -> None:
    state = torch.random.get_rng_state()
    a, b, c = (_build(name, 1, (8, 8), seed=s) for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), state), "a seeded build must not touch the global RNG"
    pa, pb, pc = (torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


def _vmap_logits(models: list[torch.nn.Module], x: torch.Tensor) -> torch.Tensor:
    params, buffers = stack_module_state(models)
    base = models[0]

    def call(p: dict, b: dict, inp: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (inp,))

    return vmap(call, in_dims=(0, 0, None))(params, buffers, x)


@pytest.mark.parametrize("name", [n for n in ALL_MODELS if not has_running_stats(_build(n, 1, (8, 8)))])
def test_vmap_over_seeds_matches_loop(name: str) -> None:
    models = [_build(name, 1, (8, 8), seed=s) for s in range(3)]
    x = _randn(BATCH, 1, 8, 8)
    stacked = _vmap_logits(models, x)
    looped = torch.stack([m(x) for m in models])
    torch.testing.assert_close(stacked, looped, **TOL)


def test_vmap_grad_matches_autograd() -> None:
    models = [_build("convnet", 1, (8, 8), seed=s) for s in range(3)]
    params, buffers = stack_module_state(models)
    x, y = _randn(BATCH, 1, 8, 8), torch.tensor([0, 1])

    def loss(p: dict, b: dict) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(functional_call(models[0], (p, b), (x,)), y)

    grads = vmap(grad(loss))(params, buffers)
    for i, m in enumerate(models):
        torch.nn.functional.cross_entropy(m(x), y).backward()
        for n, p in m.named_parameters():
            torch.testing.assert_close(grads[n][i], p.grad, **TOL)


def test_has_running_stats() -> None:
    assert not has_running_stats(_build("convnet", 3, (32, 32)))
    assert has_running_stats(_build("convnet_bn", 3, (32, 32)))
    assert has_running_stats(_build("resnet18_bn_ap", 1, (8, 8)))
    assert not has_running_stats(_build("resnet18_ap", 1, (8, 8)))


def test_convnet_matches_reference_layout() -> None:
    model = create_model("convnet", in_channels=3, num_classes=10, image_size=(32, 32))
    assert sum(p.numel() for p in model.parameters()) == 320_010  # MTT/DC ConvNet-3, CIFAR-10
    assert model.num_features == 128 * 4 * 4
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 3 and all(n.num_groups == n.num_channels == 128 and n.affine for n in norms)
    mnist = create_model("convnet", in_channels=1, num_classes=10, image_size=(28, 28))
    assert mnist.features[0].padding == (3, 3) and mnist.num_features == 2048
    assert create_model("resnet18_ap", in_channels=3, num_classes=10, image_size=(32, 32)).num_features == 8192


# the CIFAR-style teacher nets: parameter counts of the common CIFAR ports (10 classes, 3x32x32), final map sizes
TEACHER_NETS = {
    "resnet50_bn": (23_520_842, 2048),
    "mobilenetv2": (2_236_682, 1280),
    "shufflenetv2": (1_263_854, 1024),
    "shufflenetv2_x0_5": (352_042, 1024),
    "densenet121": (6_956_298, 1024),
}


def _final_map(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    body = model.layers if hasattr(model, "layers") else model.features
    out = body(model.bn1(model.conv1(x)) if hasattr(model, "layers") else x)
    return tuple(out.shape[-2:])


@pytest.mark.parametrize("name", sorted(TEACHER_NETS))
def test_teacher_nets_have_the_cifar_layout(name: str) -> None:
    params, features = TEACHER_NETS[name]
    model = create_model(name, in_channels=3, num_classes=10, image_size=(32, 32), seed=0)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.num_features == features and has_running_stats(model)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.kernel_size == (3, 3) and first.stride == (1, 1)  # the small-image stem
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    with torch.no_grad():
        model.eval()
        assert _final_map(model, torch.zeros(1, 3, 32, 32)) == (4, 4)  # 32x downsampling would leave 1x1
        assert _final_map(model, torch.zeros(1, 3, 64, 64)) == (8, 8)
        digits = create_model(name, in_channels=1, num_classes=10, image_size=(8, 8), seed=0).eval()
        assert _final_map(digits, torch.zeros(1, 1, 8, 8)) == (2, 2)  # strides skipped below 2x2
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 10)


def test_channel_shuffle_interleaves_the_halves() -> None:
    from condense.models.teacher_nets import channel_shuffle

    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]


def test_none_kwargs_are_dropped_and_overrides_apply() -> None:
    model = create_model("convnetw32", in_channels=1, num_classes=3, image_size=(8, 8), width=None, depth=None)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels == 32 and len(convs) == 3
    model = create_model("convnetw32", in_channels=1, num_classes=3, image_size=(8, 8), width=16)
    assert model.features[0].out_channels == 16


def test_unknown_names_raise_with_suggestion() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'convnet'"):
        create_model("convnte", in_channels=3, num_classes=10, image_size=(32, 32))
    with pytest.raises(KeyError):  # UnknownNameError is also a KeyError
        create_model("no_such_model_at_all", in_channels=3, num_classes=10, image_size=(32, 32))
    with pytest.raises(UnknownNameError, match="did you mean 'instance'"):
        create_norm("instanse", 4, (2, 2))
    with pytest.raises(UnknownNameError, match="timm model 'resnet181'"):
        create_model("timm:resnet181", in_channels=3, num_classes=10, image_size=(32, 32))


def test_invalid_sizes_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="in_channels"):
        create_model("convnet", in_channels=0, num_classes=10, image_size=(32, 32))
    with pytest.raises(ConfigError, match="image_size"):
        create_model("convnet", in_channels=3, num_classes=10, image_size=(32,))


def test_duplicate_registration_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("convnet")(lambda **kw: None)
    assert "convnet" in MODELS


def test_pooled_size_rules() -> None:
    assert pooled_size((8, 8), last=False) == (4, 4)
    assert pooled_size((2, 2), last=False) is None  # another normalized conv would see 1x1
    assert pooled_size((2, 2), last=True) == (1, 1)
    assert pooled_size((1, 1), last=True) is None


@pytest.mark.parametrize(
    "name,in_channels,image_size",
    [
        ("timm:resnet18", 3, (32, 32)),
        ("timm:vit_tiny_patch16_224", 3, (32, 32)),
        ("timm:vit_tiny_patch16_224", 1, (8, 8)),
    ],
)
def test_timm_models(name: str, in_channels: int, image_size: tuple[int, int]) -> None:
    model = _build(name, in_channels, image_size)
    x = _randn(BATCH, in_channels, *image_size)
    logits = model(x)
    assert logits.shape == (BATCH, NUM_CLASSES)
    feats = model.embed(x)
    assert feats.shape == (BATCH, model.num_features)
    logits.sum().backward()
    if "vit" in name:
        assert not has_running_stats(model)
        assert model.net.patch_embed.patch_size == (small_patch_size(image_size, 16),) * 2
    else:
        assert has_running_stats(model)


def test_timm_never_downloads() -> None:
    with pytest.raises(ConfigError, match="pretrained"):
        create_model("timm:resnet18", in_channels=3, num_classes=10, image_size=(32, 32), pretrained=True)


def test_small_patch_size() -> None:
    assert small_patch_size((32, 32), 16) == 4
    assert small_patch_size((8, 8), 16) == 2
    assert small_patch_size((224, 224), 16) is None
    assert small_patch_size((28, 28), 16) == 2
