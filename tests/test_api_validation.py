"""Misuse of the public Python API is refused at the boundary with a typed one-line CondenseError.

Every case raises a :class:`~condense.errors.CondenseError` that is also the builtin it refines (``TypeError`` for
a wrong type, ``ValueError`` for a wrong value, ``KeyError`` for an unknown name), before anything is computed:
never an ``AttributeError`` or a ``TypeError`` from deep inside, and never a silently wrong result (``random_real``
at ipc 1e9 used to save the whole training set labelled ipc 1e9).
"""

from __future__ import annotations

import pytest
import torch

from condense.errors import ArgumentTypeError, CondenseError, ConfigError, MismatchError, UnknownNameError
from condense.eval import evaluate, evaluate_tensors, full_data_baseline, random_real_baseline
from condense.methods import distill, get_method
from condense.synthetic import SyntheticSet


@pytest.fixture(scope="module")
def syn(digits):
    return distill("random_real", digits, ipc=1)


def _refused(call, builtin: type[BaseException], needle: str) -> str:
    with pytest.raises(CondenseError) as info:
        call()
    assert isinstance(info.value, builtin), f"{type(info.value).__name__} is not a {builtin.__name__}"
    msg = str(info.value)
    assert needle in msg and "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------- distill

DISTILL_CASES = [
    ("ipc float", dict(ipc=1.5), TypeError, "ipc must be an int"),
    ("ipc str", dict(ipc="3"), TypeError, "got str '3'"),
    ("ipc bool", dict(ipc=True), TypeError, "got bool True"),
    ("ipc zero", dict(ipc=0), ValueError, "ipc=0"),
    ("ipc negative", dict(ipc=-2), ValueError, "ipc=-2"),
    ("ipc above the smallest class", dict(ipc=1_000_000_000), ValueError, "holds 139 training images"),
    ("ipc 200 above 139", dict(ipc=200), ValueError, "pass an ipc <= 139"),
    ("generator str", dict(ipc=1, generator="cpu"), TypeError, "torch.Generator"),
    ("generator int", dict(ipc=1, generator=0), TypeError, "torch.Generator"),
    ("run dict", dict(ipc=1, run={"device": "cpu"}), TypeError, "RunContext"),
    ("overrides list", dict(ipc=1, overrides=["lr=1"]), TypeError, "mapping"),
    ("preset int", dict(ipc=1, preset=3), TypeError, "preset must be"),
]


@pytest.mark.parametrize("kwargs, builtin, needle", [c[1:] for c in DISTILL_CASES], ids=[c[0] for c in DISTILL_CASES])
def test_distill_refuses_bad_arguments(digits, kwargs, builtin, needle):
    _refused(lambda: distill("random_real", digits, **kwargs), builtin, needle)


def test_distill_checks_ipc_against_the_class_size_for_every_per_class_method(digits):
    _refused(lambda: distill("dm", digits, ipc=140), ValueError, "class '8' holds 139")
    assert len(distill("random_real", digits, ipc=139)) == 139 * 10  # the largest ipc digits allows still works


@pytest.mark.parametrize("data", [None, torch.zeros(4, 1, 8, 8), "digits"], ids=["None", "tensor", "str"])
def test_distill_refuses_what_is_not_a_dataset(data):
    msg = _refused(lambda: distill("random_real", data, ipc=1), TypeError, "load_dataset")
    assert type(data).__name__ in msg


def test_method_names_must_be_strings():
    _refused(lambda: get_method(3), TypeError, "must be a str")
    _refused(lambda: distill(None, None, ipc=1), TypeError, "must be a str")
    with pytest.raises(UnknownNameError):
        get_method("mmt")


# ---------------------------------------------------------------------------------------------- evaluate

EVAL_CASES = [
    ("seeds zero", dict(seeds=0), ValueError, "seeds=0"),
    ("seeds negative", dict(seeds=-1), ValueError, "seeds=-1"),
    ("seeds float", dict(seeds=1.5), TypeError, "seeds must be"),
    ("seeds str", dict(seeds="3"), TypeError, "seeds must be"),
    ("seeds bool", dict(seeds=True), TypeError, "seeds must be"),
    ("seeds empty list", dict(seeds=[]), ValueError, "gives no run"),
    ("seeds list of str", dict(seeds=["a"]), TypeError, "each seed"),
    ("epochs zero", dict(epochs=0), ValueError, "epochs=0"),
    ("epochs float", dict(epochs=2.5), TypeError, "epochs must be an int"),
    ("epochs bool", dict(epochs=True), TypeError, "epochs must be an int"),
    ("batch_size zero", dict(batch_size=0), ValueError, "batch_size=0"),
    ("lr str", dict(lr="0.01"), TypeError, "lr must be a positive number"),
    ("lr nan", dict(lr=float("nan")), ValueError, "lr=nan"),
    ("lr negative", dict(lr=-1.0), ValueError, "lr=-1.0"),
    ("temperature zero", dict(temperature=0.0), ValueError, "temperature=0.0"),
    ("models empty", dict(models=[]), ValueError, "names no model"),
    ("models blank", dict(models=[""]), ValueError, "names no model"),
    ("models unknown", dict(models=["convnett"]), KeyError, "did you mean"),
    ("models unknown str", dict(models="convnett"), KeyError, "did you mean"),
    ("models int", dict(models=3), TypeError, "models must be"),
    ("models list of int", dict(models=[1]), TypeError, "models must be"),
    ("device unknown", dict(device="gpu0"), ValueError, "unknown device"),
    ("device int", dict(device=0), TypeError, "device must be"),
    ("seed negative", dict(seed=-1), ValueError, "seed=-1"),
    ("seed str", dict(seed="0"), TypeError, "seed must be an int"),
    ("protocol int", dict(protocol=3), TypeError, "protocol must be"),
]


@pytest.mark.parametrize("kwargs, builtin, needle", [c[1:] for c in EVAL_CASES], ids=[c[0] for c in EVAL_CASES])
def test_evaluate_refuses_bad_arguments(syn, digits, kwargs, builtin, needle):
    _refused(lambda: evaluate(syn, digits, **kwargs), builtin, needle)


@pytest.mark.parametrize("kwargs, builtin, needle", [c[1:] for c in EVAL_CASES], ids=[c[0] for c in EVAL_CASES])
def test_baselines_refuse_bad_arguments(digits, kwargs, builtin, needle):
    _refused(lambda: full_data_baseline(digits, **kwargs), builtin, needle)
    if "seeds" in kwargs:  # random_real_baseline takes a count only: a list is refused too
        builtin, needle = (
            (TypeError, "seeds must be an int")
            if isinstance(kwargs["seeds"], (list, str, float))
            else (
                builtin,
                needle,
            )
        )
    _refused(lambda: random_real_baseline(digits, 1, **kwargs), builtin, needle)


def test_a_model_name_given_as_a_string_is_one_model(syn, digits):
    """``models="convnet"`` is the model convnet (it used to be read as the models "c", "o", "n", ...)."""
    row = evaluate(syn, digits, models="convnet", seeds=1, epochs=1)
    assert list(row["accuracy"]) == ["convnet"]


@pytest.mark.parametrize("data", [None, torch.zeros(3), "digits"], ids=["None", "tensor", "str"])
def test_evaluate_refuses_what_is_not_a_dataset(syn, data):
    _refused(lambda: evaluate(syn, data, seeds=1), TypeError, "ImageData or a GraphData")
    _refused(lambda: random_real_baseline(data, 1, seeds=1), TypeError, "ImageData or a GraphData")
    _refused(lambda: full_data_baseline(data, seeds=1), TypeError, "ImageData or a GraphData")


@pytest.mark.parametrize("thing", [None, "syn.safetensors", torch.zeros(10, 1, 8, 8)], ids=["None", "str", "tensor"])
def test_evaluate_refuses_what_is_not_a_synthetic_set(digits, thing):
    msg = _refused(lambda: evaluate(thing, digits, seeds=1), TypeError, "syn must be a SyntheticSet")
    assert "evaluate_tensors" in msg


@pytest.mark.parametrize("bad", [10, 12, -1])
def test_evaluate_refuses_labels_outside_the_classes(syn, digits, bad):
    labels = syn.labels.clone()
    labels[0] = bad
    broken = SyntheticSet(
        images=syn.images, labels=labels, classes=syn.classes, method=syn.method, dataset=syn.dataset, ipc=syn.ipc
    )
    _refused(lambda: evaluate(broken, digits, seeds=1, epochs=1), MismatchError, f"hold class {bad}")
    _refused(lambda: evaluate_tensors(broken.images, labels, digits, seeds=1, epochs=1), MismatchError, f"class {bad}")


def test_evaluate_tensors_refuses_wrong_types_and_label_formats(syn, digits):
    x, y = syn.images, syn.labels
    _refused(lambda: evaluate_tensors(x.numpy(), y, digits, seeds=1), TypeError, "images must be a torch.Tensor")
    _refused(lambda: evaluate_tensors(x, y.tolist(), digits, seeds=1), TypeError, "labels must be a torch.Tensor")
    _refused(lambda: evaluate_tensors(x, y.float(), digits, seeds=1), MismatchError, "int64 class indices")
    _refused(lambda: evaluate_tensors(x, torch.zeros(len(y), 3), digits, seeds=1), MismatchError, "float (N, 10)")
    _refused(lambda: evaluate_tensors(x, y, None, seeds=1), TypeError, "ImageData or a GraphData")


def test_random_real_baseline_refuses_an_ipc_the_data_cannot_give(digits):
    _refused(lambda: random_real_baseline(digits, 1_000_000_000, seeds=1), ValueError, "holds 139 training images")
    _refused(lambda: random_real_baseline(digits, 1.5, seeds=1), TypeError, "ipc must be an int")
    _refused(lambda: random_real_baseline(digits, "3", seeds=1), TypeError, "ipc must be an int")


def test_argument_type_errors_are_also_config_errors():
    """``except ConfigError`` keeps catching every bad argument; ``except TypeError`` catches the wrong types."""
    assert issubclass(ArgumentTypeError, ConfigError) and issubclass(ArgumentTypeError, TypeError)
