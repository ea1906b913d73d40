"""A preset's evaluation travels with the set: DATM's presets name the ``datm`` protocol (batch 128), which
``evaluate`` then uses by default; other sets keep ``classic``."""

from __future__ import annotations

from condense.eval import evaluate
from condense.methods import distill, get_method


def test_datm_presets_name_their_protocol_and_others_name_none():
    datm = get_method("datm").presets
    assert all(v.get("eval") == {"protocol": "datm"} for k, v in datm.items() if not k.startswith("digits"))
    assert all("eval" not in v for k, v in get_method("mtt").presets.items())


def test_evaluate_defaults_to_the_protocol_the_set_records(digits):
    syn = distill("random_real", digits, ipc=1)
    assert evaluate(syn, digits, seeds=1, epochs=1)["protocol"] == "classic"
    syn.meta["eval"] = {"protocol": "datm"}
    row = evaluate(syn, digits, seeds=1, epochs=1)
    assert row["protocol"] == "datm"
    assert evaluate(syn, digits, seeds=1, epochs=1, protocol="classic")["protocol"] == "classic"  # explicit wins
