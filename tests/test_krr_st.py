"""KRR-ST (Lee et al., ICLR 2024): the Barlow Twins encoder format, the kernel-ridge head, the method, the transfer
protocol.

KRR-ST is registered like every method, so the contract tests (``tests/methods/test_contract.py``,
``test_run_safety.py``) run it too, with the ``digits_encoder`` fixture (its ``teacher_kind`` is ``"encoder"``) and
its ``budget = "total"`` (m images drawn without regard to class). This file tests what is specific to it.
"""

from __future__ import annotations

import json

import pytest
import torch

from condense.errors import ConfigError, IntegrityError, MismatchError
from condense.synthetic import SyntheticSet

ENC_KW = {"width": 16, "depth": 2}
TINY = {
    "num_images": 20,
    "width": 16,
    "depth": 2,
    "num_iterations": 3,
    "batch_real": 32,
    "num_models": 2,
    "pool_steps": 3,
    "crop_padding": 1,
}


@pytest.fixture(scope="module")
def encoder_dir(digits, tmp_path_factory):
    from condense.teachers import train_encoder

    out = tmp_path_factory.mktemp("encoders") / "bt"
    train_encoder(digits, "convnet_bn", 2, out, model_kwargs=ENC_KW)
    return out


@pytest.fixture(scope="module")
def krr():
    from condense.methods import krr_st

    return krr_st


def _distill(krr, digits, encoder_dir, seed=0, **run_kwargs):
    from condense.methods import RunContext, distill

    return distill(
        "krr_st",
        digits,
        ipc=2,
        overrides=TINY,
        generator=torch.Generator().manual_seed(seed),
        run=RunContext(quiet=True, teacher=encoder_dir, **run_kwargs),
    )


# ------------------------------------------------------------------ the kernel-ridge head


def _pool_features(digits, n_s: int, n_r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of a ConvNet-BN pool model (eval mode) on digits images, as KRR-ST's step computes them."""
    from condense.models import create_model_for

    net = create_model_for("convnet_bn", digits, seed=0, width=16, depth=2).eval()
    with torch.no_grad():
        return net.embed(digits.x_train[:n_s]), net.embed(digits.x_train[100 : 100 + n_r])


def test_krr_head_equals_an_explicit_ridge_least_squares_fit(krr, digits):
    phi_s, phi_r = _pool_features(digits, 12, 7)  # m = 12 images, d = 64 features
    y_s = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    ridge = 1e-3
    pred = krr.krr_predict(phi_s, phi_r, y_s, ridge)
    # primal: W = argmin ||[Phi_s, 1] W - Y||^2 + lambda ||W||^2, lambda = ridge * tr(K_ss), solved by lstsq (float64)
    a = torch.cat([phi_s, torch.ones(12, 1)], 1).double()
    lam = ridge * float(torch.trace(a @ a.T))
    stacked = torch.cat([a, lam**0.5 * torch.eye(a.shape[1], dtype=a.dtype)])
    w = torch.linalg.lstsq(stacked, torch.cat([y_s.double(), torch.zeros(a.shape[1], 5, dtype=a.dtype)])).solution
    ref = torch.cat([phi_r, torch.ones(7, 1)], 1).double() @ w
    assert pred.dtype == torch.float32
    torch.testing.assert_close(pred.double(), ref, rtol=1e-4, atol=1e-4)


def test_krr_head_with_a_tiny_ridge_is_the_minimum_norm_least_squares_fit(krr, digits):
    phi_s, phi_r = _pool_features(digits, 12, 9)  # m < d: the fit interpolates Y_s
    y_s = torch.randn(12, 3, generator=torch.Generator().manual_seed(1))
    pred = krr.krr_predict(phi_s, phi_r, y_s, 1e-7)
    a = torch.cat([phi_s, torch.ones(12, 1)], 1).double()
    w = torch.linalg.pinv(a) @ y_s.double()  # the minimum-norm least-squares solution
    ref = torch.cat([phi_r, torch.ones(9, 1)], 1).double() @ w
    torch.testing.assert_close(pred.double(), ref, rtol=1e-3, atol=1e-3)
    fit = krr.krr_predict(phi_s, phi_s, y_s, 1e-7)  # on the support set itself: Y_s back
    torch.testing.assert_close(fit, y_s, rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------ the encoder


def test_encoder_round_trips_and_records_its_probe(digits, encoder_dir):
    from condense.teachers import load_encoder

    enc = load_encoder(encoder_dir)
    meta = json.loads((encoder_dir / "encoder.json").read_text())
    assert 0.0 <= enc.probe_accuracy <= 1.0 and meta["probe_accuracy"] == enc.probe_accuracy
    assert meta["recipe"]["flip"] is False  # digits are never mirrored
    assert enc.feature_dim == meta["feature_dim"] == enc.features(digits.x_test[:4]).shape[1]
    enc.check_compatible(digits)
    assert torch.equal(load_encoder(encoder_dir).features(digits.x_test[:8]), enc.features(digits.x_test[:8]))


def test_an_edited_encoder_record_is_refused(encoder_dir, tmp_path):
    import shutil

    from condense.teachers import load_encoder

    copy = tmp_path / "enc"
    shutil.copytree(encoder_dir, copy)
    meta = json.loads((copy / "encoder.json").read_text())
    meta["probe_accuracy"] = 1.0
    (copy / "encoder.json").write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match="probe_accuracy"):
        load_encoder(copy)


def test_flip_is_refused_on_digits(digits):
    from condense.teachers import default_encoder_recipe

    with pytest.raises(ConfigError, match="must not be flipped"):
        default_encoder_recipe(digits, flip=True)


# ------------------------------------------------------------------ the method


def test_distill_gives_m_images_with_stored_representations(krr, digits, encoder_dir, tmp_path):
    from condense.teachers import load_encoder

    syn = _distill(krr, digits, encoder_dir)
    d = load_encoder(encoder_dir).feature_dim
    assert syn.images.shape == (20, 1, 8, 8) and syn.tensors["krr_targets"].shape == (20, d)
    assert syn.meta["eval"]["protocol"] == "transfer" and syn.meta["encoder"]["feature_dim"] == d
    assert syn.meta["eval"]["finetune_iterations"] == 500  # the digits preset sizes its transfer protocol
    loaded = SyntheticSet.load(syn.save(tmp_path / "krr.safetensors"))
    assert torch.equal(loaded.tensors["krr_targets"], syn.tensors["krr_targets"])
    assert torch.equal(loaded.images, syn.images)
    again = _distill(krr, digits, encoder_dir)
    assert torch.equal(again.images, syn.images) and torch.equal(
        again.tensors["krr_targets"], syn.tensors["krr_targets"]
    )


def test_checkpoint_then_resume_equals_uninterrupted(krr, digits, encoder_dir, tmp_path, monkeypatch):
    ref = _distill(krr, digits, encoder_dir, seed=2)
    real_step = krr.KRRST.step

    class Interrupt(Exception):
        pass

    def interrupted(self, state, it, gen):
        if it == 2:
            raise Interrupt
        return real_step(self, state, it, gen)

    monkeypatch.setattr(krr.KRRST, "step", interrupted)
    with pytest.raises(Interrupt):
        _distill(krr, digits, encoder_dir, seed=2, out_dir=tmp_path, checkpoint_every=1)
    monkeypatch.setattr(krr.KRRST, "step", real_step)
    syn = _distill(krr, digits, encoder_dir, seed=2, out_dir=tmp_path, checkpoint_every=1)
    assert syn.meta["resumed_from"] == 2
    assert torch.equal(syn.images, ref.images)
    assert torch.equal(syn.tensors["krr_targets"], ref.tensors["krr_targets"])


def test_resume_with_another_encoder_is_refused(krr, digits, encoder_dir, tmp_path, monkeypatch):
    from condense.teachers import train_encoder

    real_step = krr.KRRST.step

    class Interrupt(Exception):
        pass

    def interrupted(self, state, it, gen):
        if it == 1:
            raise Interrupt
        return real_step(self, state, it, gen)

    monkeypatch.setattr(krr.KRRST, "step", interrupted)
    with pytest.raises(Interrupt):
        _distill(krr, digits, encoder_dir, out_dir=tmp_path / "run", checkpoint_every=1)
    monkeypatch.setattr(krr.KRRST, "step", real_step)
    other = train_encoder(digits, "convnet_bn", 1, tmp_path / "other", model_kwargs=ENC_KW, seed=1).path
    with pytest.raises(MismatchError, match="encoder of sha256"):
        _distill(krr, digits, other, out_dir=tmp_path / "run", checkpoint_every=1)


@pytest.mark.parametrize("mode", ["faithful", "intended"])
def test_pool_refresh_counter(krr, digits, encoder_dir, mode):
    from condense.methods import RunContext

    method = krr.KRRST()
    cfg = method.resolve_config(None, {**TINY, "num_models": 1, "pool_steps": 2, "pool_reset": mode})
    gen = torch.Generator().manual_seed(0)
    state = method.init_state(digits, cfg, 2, gen, RunContext(quiet=True, teacher=encoder_dir))
    assert state.scalars["pool_counts"] == [1]  # U{1, ..., pool_steps - 1}
    counts = []
    for it in range(5):
        before = state.tensors["pool0.features.0.weight"].clone()
        method.step(state, it, gen)
        counts.append(state.scalars["pool_counts"][0])
        assert not torch.equal(before, state.tensors["pool0.features.0.weight"])  # trained or re-initialized
    # visit 1 trains (1 -> 2); visit 2 re-initializes: faithful keeps 2 forever, intended restarts at 0
    assert counts == ([2, 2, 2, 2, 2] if mode == "faithful" else [2, 0, 1, 2, 0])


def test_a_supervised_teacher_folder_is_refused_by_name(krr, digits, tmp_path):
    from condense.errors import DataNotFoundError
    from condense.methods import RunContext, distill

    (tmp_path / "teacher.json").write_text("{}")
    with pytest.raises(DataNotFoundError, match="supervised teacher, not an encoder"):
        distill("krr_st", digits, ipc=2, overrides=TINY, run=RunContext(quiet=True, teacher=tmp_path))


def test_the_encoder_must_match_the_data(krr, digits, encoder_dir):
    from condense.eval.transfer import class_split
    from condense.methods import RunContext, distill

    source, _ = class_split(digits, 0)
    with pytest.raises(MismatchError, match="fingerprint"):
        distill("krr_st", source, ipc=2, overrides=TINY, run=RunContext(quiet=True, teacher=encoder_dir))


# ------------------------------------------------------------------ the transfer protocol


def test_class_split_and_few_labels(digits):
    from condense.eval.transfer import class_split, few_labels

    src, tgt = class_split(digits, 0)
    assert not set(src.classes) & set(tgt.classes) and len(src.classes) + len(tgt.classes) == 10
    assert len(src.x_train) + len(tgt.x_train) == len(digits.x_train)
    assert int(src.y_train.max()) == len(src.classes) - 1 and src.fingerprint != digits.fingerprint
    few = few_labels(digits, 3)
    assert torch.equal(few.y_train.bincount(), torch.full((10,), 3)) and len(few.x_test) == len(digits.x_test)


def test_transfer_rows(krr, digits):
    from condense.eval.transfer import TransferProtocol, class_split, transfer_evaluate
    from condense.methods import RunContext, distill
    from condense.teachers import train_encoder

    src, tgt = class_split(digits, 0)
    enc = train_encoder(src, "convnet_bn", 1, model_kwargs=ENC_KW)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        enc.save(d)
        syn = distill("krr_st", src, ipc=2, overrides=TINY, run=RunContext(quiet=True, teacher=d))
    proto = TransferProtocol(width=16, depth=2, pretrain_epochs=2, finetune_iterations=3, batch_finetune=32)
    rows = transfer_evaluate(syn, src, tgt, protocol=proto, seeds=2, encoder=enc)
    assert [r["row"] for r in rows] == ["set", "scratch", "random_real", "random_real_labels"]
    for r in rows:
        assert len(r["accuracies"]) == 2 and all(0.0 <= a <= 1.0 for a in r["accuracies"])
    assert rows[1]["num_images"] == 0 and rows[0]["num_images"] == 20


def test_evaluate_routes_a_krr_set_to_the_transfer_protocol(krr, digits, tmp_path):
    from condense.eval import evaluate
    from condense.eval.transfer import TransferProtocol, class_split
    from condense.methods import RunContext, distill
    from condense.teachers import train_encoder

    src, tgt = class_split(digits, 1)
    train_encoder(src, "convnet_bn", 1, tmp_path / "enc", model_kwargs=ENC_KW)
    syn = distill("krr_st", src, ipc=2, overrides=TINY, run=RunContext(quiet=True, teacher=tmp_path / "enc"))
    syn = SyntheticSet.load(syn.save(tmp_path / "krr.safetensors"))  # the encoder is found through the artifact
    proto = TransferProtocol(width=16, depth=2, finetune_iterations=3, batch_finetune=32)
    row = evaluate(syn, src, protocol=proto, target=tgt, seeds=1, epochs=2)
    assert row["protocol"] == "transfer" and row["label_kind"] == "representations" and row["num_images"] == 20
    assert row["target"]["classes"] == list(tgt.classes)
    for key in ("accuracy", "scratch", "random_real", "random_real_labels"):
        assert 0.0 <= row[key]["convnet_bn"]["mean"] <= 1.0, key
    with pytest.raises(ConfigError, match="target="):
        evaluate(syn, src, protocol=proto, seeds=1)
    with pytest.raises(ConfigError, match="transfer protocol only"):
        evaluate(syn, src, protocol="classic", target=tgt, seeds=1, epochs=1)


def test_precomputed_targets_read_the_encoder_once(krr, digits, encoder_dir, monkeypatch):
    from condense.teachers.ssl import Encoder

    calls = []
    real = Encoder.features

    def counting(self, x):
        calls.append(len(x))
        return real(self, x)

    monkeypatch.setattr(Encoder, "features", counting)
    _distill(krr, digits, encoder_dir)  # TINY: 3 outer steps
    assert calls == [20, 32, 32, 32]  # init Y_s = g(X_s), then y_r = g(A(x_r)) every step
    calls.clear()
    from condense.methods import RunContext, distill

    syn = distill(
        "krr_st",
        digits,
        ipc=2,
        overrides={**TINY, "precompute_targets": True},
        run=RunContext(quiet=True, teacher=encoder_dir),
    )
    # the cache g(x_train) (runtime), then Y_s = g(X_s); no call per outer step
    assert calls == [len(digits.x_train), 20] and syn.tensors["krr_targets"].shape[0] == 20


def test_import_encoder_reads_a_backbone_state_dict(digits, encoder_dir, tmp_path):
    from safetensors.torch import save_file

    from condense.teachers import import_encoder, load_encoder

    enc = load_encoder(encoder_dir)
    state = {f"module.{k}": v for k, v in enc.module.state_dict().items() if not k.startswith("classifier.")}
    state["module.projector.0.weight"] = torch.zeros(4, enc.feature_dim)  # an SSL projector: ignored, recorded
    save_file(state, tmp_path / "bt.safetensors")
    imported = import_encoder(tmp_path / "bt.safetensors", "convnet_bn", digits, tmp_path / "imp", model_kwargs=ENC_KW)
    again = load_encoder(tmp_path / "imp")
    assert again.recipe["name"] == "imported" and again.recipe["ignored_keys"] == ["projector.0.weight"]
    assert torch.equal(again.features(digits.x_test[:8]), enc.features(digits.x_test[:8]))
    assert imported.probe_accuracy == pytest.approx(enc.probe_accuracy)
    state.pop("module.features.0.weight")
    save_file(state, tmp_path / "broken.safetensors")
    with pytest.raises(IntegrityError, match="missing key 'features.0.weight'"):
        import_encoder(tmp_path / "broken.safetensors", "convnet_bn", digits, None, model_kwargs=ENC_KW)


def test_cli_encoder_distill_images_and_eval_target(tmp_path, capsys):
    from condense.cli import main

    enc = tmp_path / "enc"
    argv = ["teachers", "encoder", "--dataset", "digits", "--epochs", "1", "--model-arg", "width=16"]
    assert main([*argv, "--model-arg", "depth=2", "--class-split", "0", "--out", str(enc), "--quiet"]) == 0
    assert main(["teachers", "show", str(enc), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["kind"] == "encoder"
    out = tmp_path / "krr"
    sets = [f"--set={k}={v}" for k, v in TINY.items() if k != "num_images"]
    base = ["distill", "--method", "krr_st", "--dataset", "digits", "--class-split", "0", "--teacher", str(enc)]
    assert main([*base, "--images", "15", *sets, "--out", str(out), "--quiet"]) == 0
    syn = SyntheticSet.load(tmp_path / "krr.safetensors")
    assert len(syn) == 15 and syn.ipc == 3
    assert (
        main(["distill", "--method", "dm", "--dataset", "digits", "--images", "15", "--out", str(tmp_path / "x")]) == 2
    )
    assert "--images N is a total budget" in capsys.readouterr().err
    ev = ["eval", str(tmp_path / "krr.safetensors"), "--dataset", "digits", "--class-split", "0", "--seeds", "1"]
    small = [
        "--protocol-set",
        "width=16",
        "--protocol-set",
        "finetune_iterations=3",
        "--protocol-set",
        "batch_finetune=32",
    ]
    assert main([*ev, "--epochs", "2", "--target", "split", *small, "--json", "--quiet"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["protocol"] == "transfer" and len(row["target"]["classes"]) == 5
    assert main([*ev, "--protocol-set", "finetune_iterationz=3"]) == 2
    assert "did you mean" in capsys.readouterr().err.lower()
    assert main([*ev, "--target", "few_labels:x"]) == 2
