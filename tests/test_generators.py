"""A CUDA ``torch.Generator`` works wherever a generator enters (CONTRIBUTING.md, "Randomness").

``torch.randperm(n, generator=g)`` allocates its output on the CPU unless told otherwise and then refuses a CUDA
generator ("Expected a 'cpu' device type for generator"). So every factory draw that takes ``generator=`` must also
name the device, as ``device=g.device``; the result is then moved where it is needed. A CPU generator draws the same
numbers as before, so results on the CPU do not change.

Two checks:

- static, over every file of ``condense/`` (read with ``ast``): a call of a torch factory draw (``torch.rand``,
  ``randn``, ``randint``, ``randperm``, ``normal`` and the ``*_like`` ones) with ``generator=`` also passes
  ``device=`` (or ``**kwargs``). Draws that take an input tensor (``torch.multinomial``, ``torch.bernoulli``,
  ``torch.poisson``, ``torch.nn.init.*``) and tensor methods (``x.normal_(generator=g)``, ``x.uniform_``) inherit the
  input's device and pass; a torch call with ``generator=`` that is in neither table fails until it is classified.
  The rule is tried on deliberately bad snippets first, so a checker that finds nothing cannot pass.
- on CUDA (``gpu`` marker, skipped without it): herding, DM and one iteration of MTT, FTD, DATM (correct-sample
  init) and AST (representative init, weight perturbation) on digits with a one-expert buffer run with
  ``torch.Generator("cuda")``.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1] / "condense"

#: torch functions that allocate their output: with ``generator=`` they need ``device=`` (else a CUDA generator fails)
FACTORY_DRAWS = frozenset({"rand", "randn", "randint", "randperm", "normal", "rand_like", "randn_like", "randint_like"})
#: torch functions whose output follows an input tensor's device (the input must be on the generator's device)
INPUT_DRAWS = frozenset({"multinomial", "bernoulli", "poisson"})
#: torch submodules whose functions draw into a given tensor (``torch.nn.init.normal_(w, generator=g)``)
INPUT_MODULES = frozenset({"torch.nn.init"})


def _torch_aliases(tree: ast.AST) -> tuple[set[str], dict[str, str]]:
    """Names bound to the ``torch`` module, and names bound to torch functions (``from torch import randn``)."""
    modules, functions = {"torch"}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname for a in node.names if a.name == "torch" and a.asname}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "torch":
            for a in node.names:
                functions[a.asname or a.name] = f"{node.module}.{a.name}"
    return modules, functions


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else None (a method call on an expression)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def generator_violations(source: str, filename: str = "<snippet>") -> list[str]:
    """``file:line: message`` for every torch draw with ``generator=`` that a CUDA generator would break."""
    tree = ast.parse(source, filename)
    modules, functions = _torch_aliases(tree)
    out = []
    for node in sorted(ast.walk(tree), key=lambda n: getattr(n, "lineno", 0)):
        if not isinstance(node, ast.Call):
            continue
        names = {k.arg for k in node.keywords}
        if "generator" not in names:
            continue
        dotted = _dotted(node.func)
        if dotted is None:
            continue  # a method of an expression's result, e.g. torch.empty(3).normal_(generator=g): inherits
        head, _, rest = dotted.partition(".")
        if head in modules:
            full = "torch." + rest if rest else "torch"
        elif head in functions:
            full = functions[head] + ("." + rest if rest else "")
        else:
            continue  # a tensor method (x.uniform_) or a condense function: its own body is checked
        module, _, fn = full.rpartition(".")
        if module in INPUT_MODULES or (module == "torch" and fn in INPUT_DRAWS):
            continue
        where = f"{filename}:{node.lineno}"
        if module == "torch" and fn in FACTORY_DRAWS:
            if "device" not in names and None not in names:  # None: a **kwargs splat
                out.append(f"{where}: {full}(..., generator=...) without device= (pass device=generator.device)")
        else:
            out.append(f"{where}: {full}(..., generator=...) is not classified; add it to FACTORY_DRAWS or INPUT_DRAWS")
    return out


def test_rule_flags_bad_snippets() -> None:
    bad = textwrap.dedent(
        """
        import torch
        import torch as th
        from torch import randn
        from torch import randint as ri

        a = torch.randperm(5, generator=g)
        b = th.rand(2, generator=g)
        c = randn(3, generator=g)
        d = ri(0, 4, (2,), generator=g)
        e = torch.randn_like(x, generator=g)
        f = torch.special_new_draw(3, generator=g)
        """
    )
    found = generator_violations(bad)
    assert [v.split(":")[1] for v in found] == ["7", "8", "9", "10", "11", "12"], found
    assert "without device=" in found[0] and "not classified" in found[-1]


def test_rule_passes_good_snippets() -> None:
    good = textwrap.dedent(
        """
        import torch
        from torch.nn import init

        a = torch.randperm(5, generator=g, device=g.device)
        b = torch.rand(2, generator=g, **kw)
        c = x.normal_(generator=g)
        d = torch.multinomial(p, 2, generator=g)
        e = torch.nn.init.normal_(w, generator=g)
        f = init.uniform_(w, generator=g)
        h = torch.empty(3).uniform_(generator=g)
        i = aug.sample(x, generator=g)
        j = torch.randperm(5)
        """
    )
    assert generator_violations(good) == []


def test_every_draw_in_condense_names_its_device() -> None:
    files = sorted(ROOT.rglob("*.py"))
    assert len(files) > 30  # the glob found the package
    found = [v for f in files for v in generator_violations(f.read_text(), str(f.relative_to(ROOT.parent)))]
    assert found == [], "draws that fail with a CUDA generator:\n" + "\n".join(found)


# ----------------------------------------------------------------------------------------------------------------------
# On CUDA: the methods run with a CUDA generator
# ----------------------------------------------------------------------------------------------------------------------


def _cuda_gen(seed: int = 0) -> torch.Generator:
    return torch.Generator("cuda").manual_seed(seed)


@pytest.mark.gpu
def test_herding_with_cuda_generator(digits) -> None:
    from condense.methods import RunContext, distill

    syn = distill(
        "herding",
        digits,
        ipc=2,
        overrides={"train_epochs": 1},
        generator=_cuda_gen(),
        run=RunContext(device="cuda", quiet=True),
    )
    assert len(syn) == 2 * digits.num_classes and torch.isfinite(syn.images).all()


@pytest.fixture(scope="module")
def vanilla_buffer(digits, tmp_path_factory) -> Path:
    """One expert of MTT's digits demo buffer (the buffer the digits presets were tuned on), a few seconds."""
    from condense.demo import DEMO_BUFFERS
    from condense.expert_trajectories import get_expert_config, record_experts

    spec = DEMO_BUFFERS["mtt"]
    out = tmp_path_factory.mktemp("experts") / "vanilla"
    cfg = get_expert_config(spec["kind"], **spec["config"])
    record_experts(
        digits, spec["model"], 1, spec["epochs"], out, config=cfg, model_kwargs=spec["model_kwargs"], quiet=True
    )
    return out


#: the trajectory family, each with the inits and mechanisms that draw from the generator (on a vanilla buffer)
FAMILY = {
    "mtt": {},
    "ftd": {"expert_kind": "any"},
    "datm": {"expert_kind": "any", "init": "correct"},
    "ast": {"expert_kind": "any", "init": "representative", "weight_perturb": 1.0},
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(FAMILY))
def test_trajectory_step_with_cuda_generator(name: str, digits, vanilla_buffer) -> None:
    from condense.methods import RunContext, get_method

    m = get_method(name)
    cfg = m.resolve_config("digits-ipc1", {**FAMILY[name], "syn_steps": 3})
    gen = _cuda_gen()
    state = m.init_state(digits, cfg, 1, gen, RunContext(device="cuda", buffer=vanilla_buffer, quiet=True))
    x0 = state.tensors["images"].clone()
    stats = m.step(state, 0, gen)
    assert stats["loss"] > 0 and not torch.equal(x0, state.tensors["images"])
    assert state.tensors["images"].device.type == "cuda", "moved off the device"


@pytest.mark.gpu
def test_dm_with_cuda_generator(digits) -> None:
    from condense.methods import RunContext, distill

    syn = distill(
        "dm",
        digits,
        ipc=1,
        overrides={"num_iterations": 2},
        generator=_cuda_gen(),
        run=RunContext(device="cuda", quiet=True),
    )
    assert len(syn) == digits.num_classes and torch.isfinite(syn.images).all()
