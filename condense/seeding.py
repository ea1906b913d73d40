"""Seeds: one derivation rule, one way to draw a seed from a generator, one seeded-init context.

Randomness in condense enters through ``torch.Generator`` objects that callers pass down; nothing here touches the
global RNG except :func:`seeded`, which forks it (``torch.random.fork_rng``) so the caller's state is restored.

- :func:`derive_seed` names an independent random stream by a namespace and keys (an expert's ``init`` stream, an
  evaluation seed's batch order, a baseline's subset draw). It hashes them with sha256, so streams do not depend on
  how work is grouped, ordered or split across processes.
- :func:`seed_from` draws a fresh integer seed from a caller's generator (a fresh model per iteration in DC/DM).
- :func:`seeded` runs a block with the default generators seeded, for code that only knows the global RNG
  (``nn.Module`` initializers).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch

__all__ = ["derive_seed", "generator", "seed_from", "seeded"]

_MASK63 = 0x7FFF_FFFF_FFFF_FFFF


def derive_seed(namespace: str, seed: int, *keys: int | str) -> int:
    """A 63-bit seed for the stream ``namespace/seed/key1/key2/...`` (sha256 of that string).

    Example:
        >>> derive_seed("condense-experts", 0, 3, 0, "init") == derive_seed("condense-experts", 0, 3, 0, "init")
        True
    """
    text = "/".join([namespace, str(int(seed)), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & _MASK63


def generator(namespace: str, seed: int, *keys: int | str, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` of the same arguments."""
    return torch.Generator(device=device).manual_seed(derive_seed(namespace, seed, *keys))


def seed_from(gen: torch.Generator) -> int:
    """Draw an integer seed in ``[0, 2**31 - 1)`` from ``gen`` (advances it by one draw)."""
    return int(torch.randint(0, 2**31 - 1, (), generator=gen, device=gen.device))


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with the global RNG of the default device seeded with ``seed``, then restore it.

    Only the generator that initializes parameters is seeded: the CPU one, plus the current CUDA device's when that
    is the default device. ``seed=None`` runs the block unchanged.
    """
    if seed is None:
        yield
        return
    device = torch.get_default_device()
    cuda = device.type == "cuda"
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(int(seed))
        if cuda:
            torch.cuda.manual_seed(int(seed))
        yield
