"""Paper presets name their expert buffer: `condense experts --preset` records it, `condense distill` checks it.

Everything runs through the real CLI entry point on a tiny CIFAR-10-shaped dataset (`.npz` shards in tmp_path):

1. every CIFAR-10 IPC 1/10 preset of mtt, ftd, datm and ast: `experts --preset <method>-<preset>` (1 expert, the
   fewest epochs the preset reads, all of them where the expert lr decays) then `distill` without --preset exits 0,
   picks the preset, loads the data with ZCA when the buffer is whitened, and records the buffer in the artifact;
2. `preset_buffer` against a literal table written from /work/shared/reference/trajectory.md (not from the code);
3. mismatched buffers and contradicting flags are refused with one line and exit code 2;
4. a `--preset` recording defaults to the paper's 100 experts, a plain one to 10.

Two speed levers keep the file at CPU-test size; neither changes what the CLI decides:

- ZCA on 3072 features is a float64 eigendecomposition of a 3072 x 3072 covariance (10-30 s on one thread), done by
  every command that loads the data whitened. `load_dataset` is memoized for this module (each caller gets a deep
  copy of the real, uncached result), so each (root, zca) pair is fitted once.
- The experts are ConvNets of width 16 (`--model-arg width=16`), not the paper's 128: the presets require the model
  name, not its width, and width 128 costs ~2 s per expert epoch here (AST alone would need 50 of them).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

import condense.data
from condense.cli import _apply_buffer_preset, build_parser, main
from condense.expert_trajectories import get_expert_config
from condense.methods import get_method, preset_buffer

TRAJECTORY_METHODS = ("mtt", "ftd", "datm", "ast")
#: every CIFAR-10 IPC 1 / IPC 10 preset the four methods have (read from their PRESETS tables)
SMALL_PRESETS = [
    (m, k) for m in TRAJECTORY_METHODS for k in sorted(get_method(m).presets) if k in ("cifar10-ipc1", "cifar10-ipc10")
]
WIDTH = ["--model-arg", "width=16"]  # see the module docstring
N_TRAIN, N_TEST = 12, 5  # per class; IPC 10 needs at least 10 training images per class


# ----------------------------------------------------------------------------------------------------------------------
# The expected buffers, written from /work/shared/reference/trajectory.md (and two author scripts), not from the code
# ----------------------------------------------------------------------------------------------------------------------

# (method, preset) -> (expert preset, ZCA, model, last expert epoch read = max_start_epoch - 1 + expert_epochs).
# ZCA None: the reference does not say, so it is not checked. Expert presets: MTT "mtt" (§2.1: vanilla SGD, 50 epochs);
# FTD by its GSAM alpha (§3.2 alpha row: 0.3 -> "ftd", 1 -> "ftd_alpha1"); DATM "datm" everywhere (§4.1: alpha 0.3,
# 100 epochs); AST "ast" (§5, smooth experts). Models: ConvNet, ConvNetD4 on Tiny (§2.3, §4.2).
# ZCA: MTT the §2.3 ZCA column; DATM `zca: True` in all configs (§4.2); FTD only where an author command shows --zca
# (AngusDujw/FTD-distillation distill/run_distill.sh: CIFAR10 and CIFAR100 IPC 10).
# Last epochs: MTT §2.3 (T+, M), FTD §3.2 (max start epoch, expert epochs), DATM §4.2 (window max, M).
PAPER_BUFFERS: dict[tuple[str, str], tuple[str, bool | None, str, int | None]] = {
    ("mtt", "cifar10-ipc1"): ("mtt", True, "convnet", 3),
    ("mtt", "cifar10-ipc10"): ("mtt", True, "convnet", 21),
    ("mtt", "cifar10-ipc50"): ("mtt", False, "convnet", 41),
    ("mtt", "cifar100-ipc1"): ("mtt", True, "convnet", 22),
    ("mtt", "cifar100-ipc10"): ("mtt", False, "convnet", 21),
    ("mtt", "cifar100-ipc50"): ("mtt", True, "convnet", 41),
    ("mtt", "tinyimagenet-ipc1"): ("mtt", False, "convnetd4", 11),
    ("mtt", "tinyimagenet-ipc10"): ("mtt", False, "convnetd4", 41),
    ("mtt", "tinyimagenet-ipc50"): ("mtt", False, "convnetd4", 41),
    ("ftd", "cifar10-ipc1"): ("ftd", None, "convnet", 3),
    ("ftd", "cifar10-ipc10"): ("ftd", True, "convnet", 21),
    ("ftd", "cifar10-ipc50"): ("ftd_alpha1", None, "convnet", 41),
    ("ftd", "cifar100-ipc1"): ("ftd_alpha1", None, "convnet", 22),
    ("ftd", "cifar100-ipc10"): ("ftd_alpha1", True, "convnet", 41),
    ("ftd", "cifar100-ipc50"): ("ftd_alpha1", None, "convnet", 41),
    ("ftd", "tinyimagenet-ipc1"): ("ftd_alpha1", None, "convnetd4", 11),
    ("ftd", "tinyimagenet-ipc10"): ("ftd_alpha1", None, "convnetd4", 41),
    ("datm", "cifar10-ipc1"): ("datm", True, "convnet", 5),
    ("datm", "cifar10-ipc10"): ("datm", True, "convnet", 21),
    ("datm", "cifar10-ipc50"): ("datm", True, "convnet", 41),
    ("datm", "cifar10-ipc500"): ("datm", True, "convnet", 61),
    ("datm", "cifar10-ipc1000"): ("datm", True, "convnet", 61),
    ("datm", "cifar100-ipc1"): ("datm", True, "convnet", 22),
    ("datm", "cifar100-ipc10"): ("datm", True, "convnet", 51),
    ("datm", "cifar100-ipc50"): ("datm", True, "convnet", 71),
    ("datm", "cifar100-ipc100"): ("datm", True, "convnet", 71),
    ("datm", "tinyimagenet-ipc1"): ("datm", True, "convnetd4", 21),
    ("datm", "tinyimagenet-ipc10"): ("datm", True, "convnetd4", 51),
    ("datm", "tinyimagenet-ipc50"): ("datm", True, "convnetd4", 71),
    ("ast", "cifar10-ipc10"): ("ast", None, "convnet", None),
}
#: what each expert preset is (§2.1 vanilla SGD 50 epochs; §3.1 GSAM 50 epochs; §4.1 GSAM 100 epochs; §5 smooth)
EXPERT_RECIPES = {
    "mtt": ("vanilla", 50),
    "ftd": ("flat", 50),
    "ftd_alpha1": ("flat", 50),
    "datm": ("flat", 100),
    "ast": ("smooth", 50),
}
GSAM_ALPHA = {"ftd": 0.3, "ftd_alpha1": 1.0, "datm": 0.3}  # §3.2 alpha row, §4.1 README command


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------------------


def _class_image(c: int) -> np.ndarray:
    """Class c: a bright 8x8 square in cell c of a 3 x 4 grid on a dark background (easy to learn after ZCA)."""
    img = np.full((32, 32, 3), 40.0)
    row, col = divmod(c, 4)
    img[row * 10 + 2 : row * 10 + 10, col * 8 : col * 8 + 8] = 220.0
    return img


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A CIFAR-10-shaped npz root: N_TRAIN / N_TEST images per class, one square per class plus pixel noise."""
    base = tmp_path_factory.mktemp("preset_buffers")
    folder = base / "data" / "cifar10"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        x = np.concatenate([_class_image(c)[None] + rng.normal(0.0, 4.0, (n, 32, 32, 3)) for c in range(10)])
        y = np.repeat(np.arange(10), n).astype(np.int64)
        np.savez(folder / f"{split}-00.npz", x=np.clip(x, 0, 255).astype(np.uint8), y=y)
    return base / "data"


@pytest.fixture(scope="module", autouse=True)
def fit_zca_once():
    """Memoize `condense.data.load_dataset` (the CLI looks it up per call): one ZCA fit per root (module docstring)."""
    real = condense.data.load_dataset
    cache: dict[tuple, object] = {}

    def load(name, root=None, **kwargs):
        key = (name, str(root), tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = real(name, root, **kwargs)
        return copy.deepcopy(cache[key])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(condense.data, "load_dataset", load)
        yield


def _recording_epochs(requirements: dict, last_epochs: list[int]) -> int:
    """The fewest epochs the presets read, or all the paper's where the expert lr decays (snapshots differ)."""
    if get_expert_config(requirements["expert"]).lr_decay_factor != 1.0:
        return requirements["epochs"]
    return max(last_epochs)


@pytest.fixture(scope="module")
def preset_buffers(root, tmp_path_factory):
    """`get(method, preset) -> (buffer folder, epochs)`: one recording per distinct requirements dict, made on first
    use with `condense experts --preset <first preset of the group> --experts 1 --epochs E`."""
    groups: list[tuple[dict, list[tuple[str, str, int]]]] = []
    for method, key in SMALL_PRESETS:
        _, _, need, last = preset_buffer(f"{method}-{key}")
        for wanted, members in groups:
            if wanted == need:
                members.append((method, key, last))
                break
        else:
            groups.append((need, [(method, key, last)]))
    base = tmp_path_factory.mktemp("buffers")
    recorded: dict[int, tuple[Path, int]] = {}

    def get(method: str, key: str) -> tuple[Path, int]:
        i = next(i for i, (_, members) in enumerate(groups) if (method, key) in [(m, k) for m, k, _ in members])
        if i not in recorded:
            need, members = groups[i]
            epochs = _recording_epochs(need, [last for _, _, last in members])
            first = f"{members[0][0]}-{members[0][1]}"
            out = base / first
            argv = ["experts", "--preset", first, "--dataset", "cifar10", "--data-root", str(root), "--out", str(out)]
            assert main([*argv, "--experts", "1", "--epochs", str(epochs), *WIDTH, "--quiet"]) == 0
            recorded[i] = (out, epochs)
        return recorded[i]

    return get


@pytest.fixture(scope="module")
def plain_buffer(root, tmp_path_factory) -> Path:
    """MTT's expert recipe without ZCA and without a preset: 1 expert x 21 epochs (what mtt-cifar10-ipc10 reads)."""
    out = tmp_path_factory.mktemp("plain") / "buf"
    argv = ["experts", "--kind", "mtt", "--dataset", "cifar10", "--data-root", str(root), "--out", str(out)]
    assert main([*argv, "--experts", "1", "--epochs", "21", *WIDTH, "--quiet"]) == 0
    return out


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse refuses a flag by exiting
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _distill(method: str, ipc: int, root: Path, buffer: Path, out: Path, *extra: str) -> list[str]:
    argv = ["distill", "--method", method, "--dataset", "cifar10", "--data-root", str(root), "--ipc", str(ipc)]
    return [*argv, "--buffer", str(buffer), "--out", str(out), "--quiet", *extra]


def _size(ipc: int) -> list[str]:
    """One iteration at IPC 1; none at IPC 10 (the buffer is still opened and checked and the init built). One
    iteration at IPC 10 takes 5-20 s here, and MTT, FTD and AST then end at the learned-lr floor gate: these buffers
    take one SGD step per epoch (12 images per class), so the preset's 30 student steps overshoot 2 expert steps."""
    return ["--iterations", "1"] if ipc == 1 else ["--set", "num_iterations=0"]


def _manifest(buffer: Path) -> dict:
    return json.loads((buffer / "manifest.json").read_text())


# ----------------------------------------------------------------------------------------------------------------------
# 1. experts --preset, then distill without --preset
# ----------------------------------------------------------------------------------------------------------------------


def test_small_presets_are_listed():
    """The parametrization below is not empty and holds the settings the papers publish (AST only IPC 10)."""
    assert set(SMALL_PRESETS) == {
        ("mtt", "cifar10-ipc1"),
        ("mtt", "cifar10-ipc10"),
        ("ftd", "cifar10-ipc1"),
        ("ftd", "cifar10-ipc10"),
        ("datm", "cifar10-ipc1"),
        ("datm", "cifar10-ipc10"),
        ("ast", "cifar10-ipc10"),
    }


@pytest.mark.parametrize(("method", "key"), SMALL_PRESETS, ids=[f"{m}-{k}" for m, k in SMALL_PRESETS])
def test_preset_recording_is_the_papers_buffer(preset_buffers, method, key):
    """The recorded manifest has the paper's expert recipe, ZCA and model, and the epochs asked for."""
    buffer, epochs = preset_buffers(method, key)
    expert, zca, model, _ = PAPER_BUFFERS[(method, key)]
    kind, paper_epochs = EXPERT_RECIPES[expert]
    man = _manifest(buffer)
    assert man["kind"] == kind
    if expert in GSAM_ALPHA:
        assert man["config"]["alpha"] == GSAM_ALPHA[expert]
    if zca is not None:
        assert (man["preprocessing"].get("zca") is not None) is zca
    assert man["model"]["name"] == model
    assert man["epochs"] == epochs and man["num_snapshots"] == epochs + 1
    assert len(list(buffer.glob("expert_*.safetensors"))) == 1
    if kind == "smooth":  # the lr decays at an epoch that depends on the length: the whole schedule is recorded
        assert epochs == paper_epochs


@pytest.mark.parametrize(("method", "key"), SMALL_PRESETS, ids=[f"{m}-{k}" for m, k in SMALL_PRESETS])
def test_distill_picks_the_preset_and_accepts_its_buffer(preset_buffers, root, tmp_path, capsys, method, key):
    buffer, epochs = preset_buffers(method, key)
    ipc = int(key.rpartition("ipc")[2])
    art = tmp_path / f"{method}.safetensors"
    code, _, err = _run(capsys, _distill(method, ipc, root, buffer, art, *_size(ipc)))
    assert code == 0, err
    side = json.loads(art.with_suffix(".json").read_text())
    meta = side["meta"]
    assert (side["method"], side["dataset"], side["ipc"]) == (method, "cifar10", ipc)
    assert meta["preset"] == key
    assert side["tensors"]["images"]["shape"] == [10 * ipc, 3, 32, 32]
    assert meta["buffer_experts"] == 1 and meta["buffer_epochs"] == epochs
    assert Path(meta["buffer"]) == buffer
    assert meta.get("buffer_check", {}).get("mismatches", []) == []
    # the buffer was whitened, so distill loaded the data with ZCA by itself (no --zca given)
    assert (side["preprocessing"].get("zca") is not None) is (_manifest(buffer)["preprocessing"].get("zca") is not None)


# ----------------------------------------------------------------------------------------------------------------------
# 2. preset_buffer against the reference table
# ----------------------------------------------------------------------------------------------------------------------


def test_reference_table_covers_every_cifar10_preset():
    have = {(m, k) for m in TRAJECTORY_METHODS for k in get_method(m).presets if k.startswith("cifar10-")}
    assert have <= set(PAPER_BUFFERS), sorted(have - set(PAPER_BUFFERS))


@pytest.mark.parametrize(("method", "key"), sorted(PAPER_BUFFERS), ids=[f"{m}-{k}" for m, k in sorted(PAPER_BUFFERS)])
def test_preset_buffer_matches_the_reference(method, key):
    expert, zca, model, last = PAPER_BUFFERS[(method, key)]
    got_method, got_key, need, min_epochs = preset_buffer(f"{method}-{key}")
    assert (got_method, got_key) == (method, key)
    assert need["expert"] == expert
    if zca is not None:
        assert need["zca"] is zca
    assert need["model"] == model
    assert need["experts"] == 100  # §2.1 --num_experts 100; FTD §3.1 and DATM §4.1 100 experts; AST README 100
    assert need["epochs"] == EXPERT_RECIPES[expert][1]
    if last is not None:
        assert min_epochs == last
    # the same preset found from method, dataset and IPC (`condense experts --for`)
    dataset, _, ipc = key.rpartition("-ipc")
    assert preset_buffer(method=method, dataset=dataset, ipc=int(ipc))[:3] == (method, key, need)


@pytest.mark.parametrize("expert", sorted(EXPERT_RECIPES))
def test_expert_presets_are_the_papers_recipes(expert):
    cfg = get_expert_config(expert)
    assert cfg.kind == EXPERT_RECIPES[expert][0]
    if expert in GSAM_ALPHA:
        assert cfg.alpha == GSAM_ALPHA[expert]
    if cfg.kind in ("vanilla", "flat"):  # §2.1 and §3.1: lr 0.01, no momentum, constant lr
        assert (cfg.lr_teacher, cfg.momentum, cfg.lr_decay_factor) == (0.01, 0.0, 1.0)
    else:  # §5: momentum 0.9, weight decay 1e-3, lr 0.003 times 0.6 mid-training
        assert (cfg.lr_teacher, cfg.momentum, cfg.weight_decay, cfg.lr_decay_factor) == (0.003, 0.9, 1e-3, 0.6)


# ----------------------------------------------------------------------------------------------------------------------
# 3. mismatches are refused
# ----------------------------------------------------------------------------------------------------------------------


def test_distill_refuses_another_methods_buffer(preset_buffers, root, tmp_path, capsys):
    ftd_buffer, _ = preset_buffers("ftd", "cifar10-ipc10")
    art = tmp_path / "mtt.safetensors"
    code, _, err = _run(capsys, _distill("mtt", 10, root, ftd_buffer, art, "--set", "num_iterations=0"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "expert kind" in err and "check_buffer=false" in err and "Traceback" not in err
    assert not art.exists()


def test_distill_refuses_a_buffer_without_zca(plain_buffer, root, tmp_path, capsys):
    art = tmp_path / "mtt.safetensors"
    code, _, err = _run(capsys, _distill("mtt", 10, root, plain_buffer, art, "--set", "num_iterations=0"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "ZCA" in err and "expert kind" not in err
    assert not art.exists()


def test_check_buffer_false_runs_and_records_the_mismatch(plain_buffer, root, tmp_path, capsys):
    art = tmp_path / "mtt.safetensors"
    argv = _distill("mtt", 10, root, plain_buffer, art, "--set", "num_iterations=0", "--set", "check_buffer=false")
    code, _, err = _run(capsys, argv)
    assert code == 0, err
    meta = json.loads(art.with_suffix(".json").read_text())["meta"]
    assert meta["preset"] == "cifar10-ipc10"
    assert [m for m in meta["buffer_check"]["mismatches"] if "ZCA" in m], meta["buffer_check"]


def test_distill_refuses_a_shortened_decaying_buffer(root, tmp_path, capsys):
    """AST's experts decay their lr at epochs // 2 + 2: 21-epoch smooth experts are other trajectories than the
    paper's 50-epoch ones, although AST reads only epochs 0..21 (recorded without --preset, with its recipe)."""
    buffer = tmp_path / "short_ast"
    argv = ["experts", "--kind", "ast", "--zca", "--dataset", "cifar10", "--data-root", str(root), "--out", str(buffer)]
    assert main([*argv, "--experts", "1", "--epochs", "21", *WIDTH, "--quiet"]) == 0
    art = tmp_path / "ast.safetensors"
    code, _, err = _run(capsys, _distill("ast", 10, root, buffer, art, "--set", "num_iterations=0"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "epochs: needs 50" in err and "ZCA" not in err
    assert not art.exists()


def _experts(root: Path, out: Path, *extra: str, quiet: bool = True) -> list[str]:
    argv = ["experts", "--dataset", "cifar10", "--data-root", str(root), "--out", str(out), *extra]
    return [*argv, "--quiet"] if quiet else argv


#: (flags, what the one error line must say); all refused before any data is loaded
BAD_PRESET_FLAGS = [
    (["--preset", "mtt-cifar10-ipc10", "--model", "convnetd2"], "--model convnetd2 contradicts"),
    (["--preset", "mtt-cifar10-ipc10", "--kind", "flat"], "--kind flat contradicts"),
    (["--preset", "mtt-cifar10-ipc50", "--zca"], "--zca contradicts"),
    (["--preset", "mtt-cifar100-ipc10"], "another dataset"),
    (["--preset", "mtt-cifar10-ipc7"], "did you mean 'mtt-cifar10-ipc"),
    (["--preset", "mtt-cifar10-ipc10", "--epochs", "20"], "21"),
    (["--preset", "mtt-cifar10-ipc10", "--set", "lr_teacher=0.1"], "--set"),
    (["--preset", "dm-cifar10-ipc10"], "no expert buffer"),
    (["--for", "mtt"], "--ipc"),
    (["--ipc", "10"], "--for"),
]


@pytest.mark.parametrize(("flags", "says"), BAD_PRESET_FLAGS, ids=[" ".join(f) for f, _ in BAD_PRESET_FLAGS])
def test_experts_refuses_flags_that_contradict_the_preset(root, tmp_path, capsys, flags, says):
    out = tmp_path / "buf"
    code, stdout, err = _run(capsys, _experts(root, out, *flags))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert says in err and "Traceback" not in err
    assert not (out / "manifest.json").exists()


# ----------------------------------------------------------------------------------------------------------------------
# 4. default expert counts
# ----------------------------------------------------------------------------------------------------------------------


def _plan(*argv: str):
    args = build_parser().parse_args(["experts", "--dataset", "cifar10", "--out", "unused", *argv])
    _apply_buffer_preset(args)
    return args


@pytest.mark.parametrize(
    "argv", [("--preset", "mtt-cifar10-ipc10"), ("--for", "mtt", "--ipc", "10")], ids=["preset", "for"]
)
def test_a_preset_records_the_papers_100_experts(capsys, argv):
    args = _plan(*argv)
    # §2.1: 100 experts x 50 epochs of MTT's recipe; §2.3: CIFAR-10 IPC 10 with ZCA on ConvNet
    assert (args.experts, args.epochs, args.kind, args.model, args.zca) == (100, 50, "mtt", "convnet", True)
    assert "mtt-cifar10-ipc10: 100 mtt experts x 50 epochs" in capsys.readouterr().out


def test_experts_and_epochs_shrink_a_preset_recording():
    args = _plan("--preset", "datm-cifar10-ipc1", "--experts", "3", "--epochs", "5")
    assert (args.experts, args.epochs, args.kind, args.zca) == (3, 5, "datm", True)


def test_without_a_preset_the_cpu_defaults_stay():
    args = _plan()
    assert (args.experts, args.epochs, args.kind, args.model, args.zca) == (10, 50, "vanilla", None, False)


def test_the_printed_plan_of_a_real_run(root, tmp_path, capsys):
    """Through main: the plan line, then a fast failure (a model option ConvNet refuses) before any training."""
    out = tmp_path / "buf"
    argv = _experts(root, out, "--preset", "mtt-cifar10-ipc10", "--model-arg", "bogus=1", quiet=False)
    code, stdout, err = _run(capsys, argv)
    assert code == 2 and "bogus" in err, err
    assert "recording the buffer of preset mtt-cifar10-ipc10: 100 mtt experts x 50 epochs" in stdout
    assert "ZCA on" in stdout
    assert not (out / "manifest.json").exists()
