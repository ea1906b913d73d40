"""condense.seeding: one derivation rule, generator-drawn seeds, a forked global RNG."""

from __future__ import annotations

import hashlib

import torch

from condense.seeding import derive_seed, generator, seed_from, seeded


def test_derive_seed_is_the_documented_sha256_rule():
    text = "condense-experts/7/3/0/init"
    want = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)
    assert derive_seed("condense-experts", 7, 3, 0, "init") == want
    assert derive_seed("condense-eval", 0) != derive_seed("condense-eval", 1)
    assert derive_seed("condense-eval", 0) != derive_seed("condense-random-real", 0)


def test_generator_and_seed_from():
    a = torch.rand(3, generator=generator("x", 1))
    assert torch.equal(a, torch.rand(3, generator=generator("x", 1)))
    g = torch.Generator().manual_seed(0)
    s1, s2 = seed_from(g), seed_from(g)
    assert s1 != s2 and 0 <= s1 < 2**31 - 1
    assert s1 == seed_from(torch.Generator().manual_seed(0))


def test_seeded_restores_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(2)
    torch.manual_seed(123)
    with seeded(5):
        inner = torch.rand(2)
    assert torch.equal(torch.rand(2), expected)  # the caller's stream continues as if nothing happened
    with seeded(5):
        assert torch.equal(torch.rand(2), inner)
