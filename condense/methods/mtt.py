"""MTT: Dataset Distillation by Matching Training Trajectories (Cazenavette et al., CVPR 2022, arXiv:2203.11932).

Algorithm (Algorithm 1 of the paper; ``GeorgeCazenavette/mtt-distillation:distill.py``):

1. Initialize X from random real images (``init="real"``), alpha <- lr_teacher.
2. Each iteration: draw an expert and a start epoch t ~ U{0..T+ - 1}; the student starts at theta*_t.
3. Take N SGD steps of the student on minibatches of DSA-augmented X with step size alpha (differentiably).
4. L = ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2, summed over all parameters.
5. Update X (SGD, lr_img, momentum 0.5) and alpha (SGD, lr_lr, momentum 0.5) along dL.

Defaults: the argparse defaults of ``distill.py`` (see :class:`~condense.methods._trajectory.TrajectoryConfig`);
presets: the per-dataset settings listed by the author in ``justincui03/dc_benchmark:methods/tm/readme.md``
(the text copy of the README table image; reference/trajectory.md Section 2.3) with the CIFAR-10 IPC 10 lr_img typo
replaced by 100 (MTT issue #31). Iterations follow the 5000 default.

Differences from the authors' code:

- alpha is clamped to ``lr_min`` > 0 after every update (the code lets it go negative, MTT issues #16, #20);
  non-finite steps are rolled back and lr_img halved (the shared runner) instead of crashing with NaN pixels.
- Experts are sampled uniformly at random per iteration (the code walks a shuffled list of loaded experts).
- The student is ``torch.func.functional_call`` on views of one flat vector, not ``ReparamModule``; no DataParallel.
- ``unroll="lean"`` computes the same meta-gradient with constant activation memory (see ``_unroll.py``); it is
  not the TESLA code's approximation, which drops the cross-step terms.
- The artifact is the final state, with the learned alpha saved (the code saves the best-on-test images and never
  saves alpha). ZCA is a property of the dataset (``load_dataset(..., zca=True)``), not a flag here.

Speed (measured on the CPU, digits, N=20; see benchmarks/distill_speed.py): the inner gradient is
``torch.autograd.grad(create_graph=True)`` on the ``functional_call`` loss (17% faster per full iteration and 30% per
lean iteration than ``torch.func.grad``/``vjp``, which remain available as ``engine="func"`` in ``_unroll``); the DSA
parameters and minibatches of all N steps are drawn before the unroll; the synthetic set, the buffer snapshots and the
student live on the run's device; the unroll reads no tensor value on the host, so an iteration syncs only for the
logged floats. ``unroll="lean"`` costs about 40% more time than ``"full"`` (one extra forward/backward per step) for
a 10x smaller peak (CIFAR-10 ConvNetD3 with ZCA, IPC 1, N=50, one CPU thread: 9.3 s and +192 MB per iteration
instead of 6.7 s and +2002 MB).
"""

from __future__ import annotations

from dataclasses import dataclass

from condense.methods._trajectory import DIGITS_PRESET, TrajectoryConfig, TrajectoryMatcher
from condense.methods.base import register_method

__all__ = ["MTT", "MTTConfig", "PRESETS"]


@dataclass(frozen=True, kw_only=True)
class MTTConfig(TrajectoryConfig):
    """MTT hyperparameters; every field and default is documented on
    :class:`~condense.methods._trajectory.TrajectoryConfig` (MTT ``distill.py`` argparse defaults)."""


@register_method("mtt")
class MTT(TrajectoryMatcher):
    """Matching Training Trajectories (Cazenavette et al., CVPR 2022, arXiv:2203.11932).

    Needs an expert buffer (``RunContext(buffer=...)``, ``--buffer``) recorded on the same dataset and model.

    Example:
        >>> from condense import distill, load_dataset  # doctest: +SKIP
        >>> from condense.methods.base import RunContext  # doctest: +SKIP
        >>> syn = distill("mtt", load_dataset("digits"), ipc=1, run=RunContext(buffer="buf"))  # doctest: +SKIP
    """

    Config = MTTConfig


# ----------------------------------------------------------------------------------------------------------------------
# Presets: algorithm values only. CIFAR/Tiny rows: dc_benchmark methods/tm/readme.md ("sota parameters provided by
# the author"), reference/trajectory.md Section 2.3. ZCA: cifar10 ipc1/10, cifar100 ipc1/50 (load the data with zca).
# ----------------------------------------------------------------------------------------------------------------------

_SRC = "MTT author settings via justincui03/dc_benchmark methods/tm/readme.md (trajectory.md 2.3)"

PRESETS: dict[str, dict] = {
    "cifar10-ipc1": dict(syn_steps=50, expert_epochs=2, max_start_epoch=2, lr_img=100.0, lr_lr=1e-7, lr_teacher=0.01),
    "cifar10-ipc10": dict(
        syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_img=100.0, lr_lr=1e-5, lr_teacher=0.001
    ),
    "cifar10-ipc50": dict(
        syn_steps=30, expert_epochs=2, max_start_epoch=40, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.001
    ),
    "cifar100-ipc1": dict(
        syn_steps=20, expert_epochs=3, max_start_epoch=20, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01
    ),
    "cifar100-ipc10": dict(
        syn_steps=20, expert_epochs=2, max_start_epoch=20, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01
    ),
    "cifar100-ipc50": dict(
        syn_steps=80, expert_epochs=2, max_start_epoch=40, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01, batch_syn=125
    ),
    "tinyimagenet-ipc1": dict(
        syn_steps=10, expert_epochs=2, max_start_epoch=10, lr_img=10000.0, lr_lr=1e-4, lr_teacher=0.01
    ),
    "tinyimagenet-ipc10": dict(
        syn_steps=20, expert_epochs=2, max_start_epoch=40, lr_img=10000.0, lr_lr=1e-4, lr_teacher=0.01, batch_syn=200
    ),
    "tinyimagenet-ipc50": dict(
        syn_steps=20, expert_epochs=2, max_start_epoch=40, lr_img=10000.0, lr_lr=1e-4, lr_teacher=0.01, batch_syn=300
    ),
    # digits: the shared CPU-minutes preset of the trajectory matchers (``_trajectory.DIGITS_PRESET``)
    "digits-ipc1": dict(DIGITS_PRESET),
    "digits-ipc10": {**DIGITS_PRESET, "batch_syn": 50},
}
for _k, _v in PRESETS.items():
    _v["source"] = _SRC if not _k.startswith("digits") else "condense: tuned on digits (CPU minutes), not from a paper"
MTT.presets = PRESETS
