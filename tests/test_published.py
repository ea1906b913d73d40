"""condense/published.py: every format written in its authors' on-disk layout (as their code saves it), imported on
digits; the DATM must-show (an imported DATM set evaluates exactly like the same tensors built natively); refusal of
anything that needs a full unpickler; round trips with ``condense export``."""

from __future__ import annotations

import collections
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from condense.cli import main
from condense.errors import ConfigError, DataFormatError, DataNotFoundError, MismatchError
from condense.published import FORMATS, import_published
from condense.synthetic import SyntheticSet

IPC = 2
K = 10


@pytest.fixture(scope="module")
def digits_zca():
    from condense.data import load_dataset

    return load_dataset("digits", zca=True)


def _real(data, ipc: int = IPC, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-major real images of ``data`` (in its space) with a little noise, as a distilled set starts."""
    idx = torch.cat([data.indices_of_class(c)[offset : offset + ipc] for c in range(K)])
    gen = torch.Generator().manual_seed(offset)
    x = data.x_train[idx].clone() + 0.05 * torch.randn(data.x_train[idx].shape, generator=gen)
    return x, torch.arange(K).repeat_interleave(ipc)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------- tensor formats


@pytest.mark.parametrize("fmt", ["dc", "dsa", "dm"])
def test_dc_result_file(tmp_path, digits, fmt):
    """``res_<M>_<ds>_<model>_<ipc>ipc.pt`` with numpy accuracies, as main.py / main_DM.py save it."""
    exps = [_real(digits, offset=o) for o in (0, 5)]
    data_save = [[x.detach().cpu(), y.detach().cpu()] for x, y in exps]
    path = tmp_path / f"res_{fmt.upper()}_digits_ConvNet_{IPC}ipc.pt"
    torch.save({"data": data_save, "accs_all_exps": {"ConvNet": [np.float64(0.81), np.float64(0.79)]}}, path)
    syn = import_published(path, fmt, digits, exp=1)
    assert torch.equal(syn.images, exps[1][0]) and not torch.equal(syn.images, exps[0][0])
    assert torch.equal(syn.labels, exps[1][1]) and syn.ipc == IPC and syn.method == fmt and syn.lr is None
    info = syn.meta["imported"]
    assert info["format"] == fmt and info["source"] == str(path.resolve()) and info["exp"] == 1
    assert info["files"] == {path.name: _sha(path)} and info["reported_accuracy"] == {"ConvNet": [0.81, 0.79]}
    assert syn.meta["model"] == "convnet"
    with pytest.raises(ConfigError, match="holds 2 experiments"):
        import_published(path, fmt, digits, exp=2)
    with pytest.raises(MismatchError, match="ipc=3"):
        import_published(path, fmt, digits, ipc=3)
    other = "dm" if fmt != "dm" else "dc"
    with pytest.raises(MismatchError, match=f"pass --format {fmt}"):
        import_published(path, other, digits)


def test_mtt_iterations_lr_and_provenance(tmp_path, digits):
    """MTT's images_<it>.pt / labels_<it>.pt / *_best.pt (distill.py 238-243); no lr file, so lr= is recorded."""
    run = tmp_path / "logged_files" / "digits" / "run"
    run.mkdir(parents=True)
    (x0, y), (x1, _) = _real(digits, offset=0), _real(digits, offset=3)
    torch.save(x0.cpu(), run / "images_1000.pt")
    torch.save(y.cpu(), run / "labels_1000.pt")
    torch.save(x1.cpu(), run / "images_best.pt")
    torch.save(y.cpu(), run / "labels_best.pt")
    best = import_published(run, "mtt", digits, lr=0.0123)
    assert torch.equal(best.images, x1) and best.lr == pytest.approx(0.0123)
    assert best.meta["imported"]["iteration"] == "best" and best.labels.dtype == torch.int64
    at = import_published(run / "images_1000.pt", "mtt", digits)
    assert torch.equal(at.images, x0) and at.lr is None and at.meta["imported"]["iteration"] == 1000
    assert at.meta["imported"]["files"] == {n: _sha(run / n) for n in ("images_1000.pt", "labels_1000.pt")}
    with pytest.raises(DataNotFoundError, match="iterations there: 1000, best"):
        import_published(run, "mtt", digits, it=5)


def test_ftd_ema_images(tmp_path, digits):
    """FTD's EMA copies (ema_logged_files/.../ema_images_best.pt, distill_FTD.py 367-372)."""
    (x, y), (xe, _) = _real(digits, offset=0), _real(digits, offset=1)
    torch.save(x, tmp_path / "images_best.pt")
    torch.save(y, tmp_path / "labels_best.pt")
    torch.save(xe, tmp_path / "ema_images_best.pt")
    torch.save(y, tmp_path / "ema_labels_best.pt")
    assert torch.equal(import_published(tmp_path, "ftd", digits).images, x)
    syn = import_published(tmp_path, "ftd", digits, ema=True)
    assert torch.equal(syn.images, xe) and syn.meta["imported"]["ema"] is True
    with pytest.raises(ConfigError, match="FTD"):
        import_published(tmp_path, "mtt", digits, ema=True)


def _datm_layout(root: Path, images: torch.Tensor, logits: torch.Tensor, lr: float) -> Path:
    """Write the triple exactly as DATM.py 397-404 does (labels and images still require grad; lr detached)."""
    normal = root / "logged_files" / "digits" / str(IPC) / "ConvNet" / "run" / "Normal"
    normal.mkdir(parents=True)
    image_syn = images.clone().requires_grad_(True)
    label_syn = logits.clone().requires_grad_(True)
    syn_lr = torch.tensor(lr).requires_grad_(True)
    torch.save(image_syn.cpu(), normal / "images_best.pt")
    torch.save(label_syn.cpu(), normal / "labels_best.pt")
    torch.save(syn_lr.detach().cpu(), normal / "lr_best.pt")
    return normal.parent


def test_datm_import_evaluates_like_the_native_set(tmp_path, digits_zca):
    """Must-show: DATM-layout files of a set give the same evaluation as the same tensors built natively."""
    from condense.eval import evaluate
    from condense.methods.datm import DATMConfig

    data = digits_zca
    x, y = _real(data)
    logits = 3.0 * torch.nn.functional.one_hot(y, K).float() + torch.randn(len(y), K, generator=torch.Generator())
    lr = float(torch.tensor(0.0173))  # DATM's alpha is a float32 tensor, and DATM.to_synthetic records float(alpha)
    # what DATM.to_synthetic + distill() record for a DATM preset set: logit labels at T = 1, the datm protocol
    native = SyntheticSet.from_tensors(
        x, logits, data, "datm", IPC, DATMConfig(), lr=lr,
        meta={"label_kind": "logits", "temperature": 1.0, "eval": {"protocol": "datm"}},
    )  # fmt: skip
    run = _datm_layout(tmp_path, x, logits, lr)
    syn = import_published(run, "datm", data, zca=True)
    assert torch.equal(syn.images, native.images) and torch.equal(syn.labels, native.labels)
    assert syn.lr == native.lr and syn.soft_labels and syn.ipc == IPC
    assert syn.meta["label_kind"] == "logits" and syn.meta["temperature"] == 1.0
    assert syn.preprocessing == native.preprocessing and set(syn.tensors) == set(native.tensors)
    # through the file, as `condense import` writes it
    syn = SyntheticSet.load(syn.save(tmp_path / "imported.safetensors"))
    kw = {"seeds": 1, "epochs": 2}
    row_native, row_imported = evaluate(native, data, **kw), evaluate(syn, data, **kw)
    assert row_imported["protocol"] == row_native["protocol"] == "datm"
    assert row_imported["lr"] == row_native["lr"] == pytest.approx(lr)
    assert row_imported["accuracy"] == row_native["accuracy"]
    # the comparison can fail: the same tensors with the default lr score differently
    other = evaluate(native, data, lr=0.5, **kw)
    assert other["accuracy"] != row_native["accuracy"]


def test_zca_space_is_checked(tmp_path, digits, digits_zca):
    """A ZCA set needs ZCA data; normalized tensors read as ZCA (or the reverse) are refused by their statistics."""
    xz, y = _real(digits_zca)
    torch.save(xz, tmp_path / "images_best.pt")
    torch.save(y, tmp_path / "labels_best.pt")
    assert torch.equal(import_published(tmp_path, "mtt", digits_zca).images, xz)  # zca=None: as the data is
    with pytest.raises(MismatchError, match="loaded without ZCA"):
        import_published(tmp_path, "mtt", digits, zca=True)
    with pytest.raises(MismatchError, match="look ZCA-whitened"):  # made with --zca, imported without
        import_published(tmp_path, "mtt", digits)
    syn = import_published(tmp_path, "mtt", digits, check_space=False)
    assert syn.preprocessing["zca"] is None
    xn, _ = _real(digits)
    torch.save(xn, tmp_path / "images_best.pt")
    with pytest.raises(MismatchError, match="do not look ZCA-whitened"):
        import_published(tmp_path, "mtt", digits_zca, zca=True)
    with pytest.raises(MismatchError, match="loaded with ZCA"):
        import_published(tmp_path, "mtt", digits_zca, zca=False)


def test_raw_pixels_saved_as_tensors_are_refused(tmp_path, digits):
    x, y = _real(digits)
    pix = (x * torch.tensor(digits.std).view(1, -1, 1, 1) + torch.tensor(digits.mean).view(1, -1, 1, 1)).clamp(0, 1)
    path = tmp_path / f"res_DM_digits_ConvNet_{IPC}ipc.pt"
    torch.save({"data": [[pix, y]], "accs_all_exps": {}}, path)
    with pytest.raises(MismatchError, match="raw pixels"):
        import_published(path, "dm", digits)


@pytest.mark.parametrize(
    "change, error, needle",
    [
        (lambda x, y: (x[:, :, :4, :4], y), MismatchError, "does not resize"),
        (lambda x, y: (x.expand(-1, 3, -1, -1).contiguous(), y), MismatchError, "does not resize"),
        (lambda x, y: (x.index_fill(0, torch.tensor([0]), float("nan")), y), DataFormatError, "non-finite"),
        (lambda x, y: (x * 1e6, y), DataFormatError, "over 1e4 x"),
        (lambda x, y: (x, y + 1), MismatchError, "labels span"),
        (lambda x, y: (x, y.index_fill(0, torch.tensor([0]), 1)), DataFormatError, "differ"),
        (lambda x, y: (x, y.float()), DataFormatError, "must be integers"),
        (lambda x, y: (x, torch.zeros(len(y), K + 1)), MismatchError, "soft labels"),
        (lambda x, y: (x, y[:-1]), DataFormatError, "labels for"),
    ],
    ids=["size", "channels", "nan", "huge", "range", "unbalanced", "float-hard", "soft-k", "count"],
)
def test_bad_tensors_are_refused(tmp_path, digits, change, error, needle):
    x, y = change(*_real(digits))
    torch.save(x, tmp_path / "images_best.pt")
    torch.save(y, tmp_path / "labels_best.pt")
    with pytest.raises(error, match=needle):
        import_published(tmp_path, "mtt", digits)


def test_datm_needs_its_lr_and_lr_is_not_given_twice(tmp_path, digits):
    x, y = _real(digits)
    torch.save(x, tmp_path / "images_best.pt")
    torch.save(torch.nn.functional.one_hot(y, K).float(), tmp_path / "labels_best.pt")
    with pytest.raises(DataNotFoundError, match="lr_best.pt"):
        import_published(tmp_path, "datm", digits)
    torch.save(torch.tensor(0.01), tmp_path / "lr_best.pt")
    with pytest.raises(ConfigError, match="do not pass lr"):
        import_published(tmp_path, "datm", digits, lr=0.02)
    torch.save(torch.tensor(-0.01), tmp_path / "lr_best.pt")
    with pytest.raises(DataFormatError, match="learned lr"):
        import_published(tmp_path, "datm", digits)


# ---------------------------------------------------------------------------------------------- refusing pickles

_RAN: list[str] = []


@dataclass
class _Payload:
    """A custom class: loading it needs a full unpickler, which would call its __reduce__."""

    images: torch.Tensor

    def __setstate__(self, state):  # a full unpickler calls this: code from the file's author runs
        _RAN.append("unpickled")
        self.__dict__.update(state)


class _Ordered(collections.OrderedDict):
    pass


@pytest.mark.parametrize("obj", ["dataclass", "odict_subclass"])
def test_a_file_that_needs_a_full_unpickler_is_refused(tmp_path, digits, obj):
    x, y = _real(digits)
    payload = _Payload(x) if obj == "dataclass" else _Ordered(data=[[x, y]])
    path = tmp_path / f"res_DC_digits_ConvNet_{IPC}ipc.pt"
    torch.save(payload if obj == "odict_subclass" else {"data": [[x, y]], "args": payload}, path)
    with pytest.raises(DataFormatError) as e:
        import_published(path, "dc", digits)
    msg = str(e.value)
    assert "full unpickler" in msg and "arbitrary code" in msg and "weights_only=False" in msg, msg
    assert "safetensors" in msg and ("_Payload" in msg or "_Ordered" in msg), msg
    assert _RAN == []


def test_a_converted_safetensors_file_is_read(tmp_path, digits):
    """The way out the refusal names: tensors saved with safetensors under the same stem."""
    from safetensors.torch import save_file

    x, y = _real(digits)
    save_file({"images": x.contiguous()}, str(tmp_path / "images_best.safetensors"))
    save_file({"labels": y.contiguous()}, str(tmp_path / "labels_best.safetensors"))
    assert torch.equal(import_published(tmp_path, "mtt", digits).images, x)


# ---------------------------------------------------------------------------------------------- image folders


def _pixels_u8(data, x: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) normalized -> uint8 (N, H, W) as SRe2L/RDED save them: (x * 255).astype(uint8), truncated."""
    m, s = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    return ((x * s + m).clamp(0, 1)[:, 0].numpy() * 255).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["sre2l", "rded"])
def test_decoupled_image_folders(tmp_path, digits, fmt):
    from PIL import Image

    x, y = _real(digits)
    u8 = _pixels_u8(digits, x)
    root = tmp_path / "syn_data"
    for i, (img, c) in enumerate(zip(u8, y.tolist())):
        j = i % IPC
        folder, name = (
            (f"new{c:03d}", f"class{c:03d}_id{j:03d}.png")
            if fmt == "sre2l"
            else (f"{c:05d}", f"class{c:05d}_id{j:05d}.png")
        )
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.repeat(img[..., None], 3, axis=2)).save(root / folder / name)  # RGB, as they write
    syn = import_published(root, fmt, digits)
    want = (torch.from_numpy(u8).float()[:, None] / 255 - digits.mean[0]) / digits.std[0]
    assert torch.allclose(syn.images, want, atol=1e-6) and torch.equal(syn.labels, y) and syn.ipc == IPC
    assert syn.meta["eval"] == {"protocol": "soft_label"} and syn.method == fmt
    info = syn.meta["imported"]
    assert len(info["files"]) == info["num_files"] == K * IPC
    first = import_published(root, fmt, digits, ipc=1)  # SRe2L's ImageFolderIPC: the first ipc per class
    assert first.ipc == 1 and torch.allclose(first.images, want[::IPC], atol=1e-6)
    edited = sorted((root / ("new000" if fmt == "sre2l" else "00000")).iterdir())[-1]
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(edited)  # one file changes: the tree digest changes
    assert import_published(root, fmt, digits).meta["imported"]["tree_sha256"] != info["tree_sha256"]


def test_sre2l_jpeg_as_its_code_writes_it(tmp_path, digits):
    """``pil_image.save('.../class000_id000.jpg')`` (PIL's default quality 75): lossy, so close to the source."""
    from PIL import Image

    x, y = _real(digits, ipc=1)
    u8 = _pixels_u8(digits, x)
    for img, c in zip(u8, y.tolist()):
        (tmp_path / f"new{c:03d}").mkdir()
        Image.fromarray(np.repeat(img[..., None], 3, axis=2)).save(tmp_path / f"new{c:03d}" / f"class{c:03d}_id000.jpg")
    syn = import_published(tmp_path, "sre2l", digits)
    src = torch.from_numpy(u8).float()[:, None] / 255
    err = (syn.pixels() - src).abs()
    assert float(err.mean()) < 0.03 and float(err.max()) < 0.25, (float(err.mean()), float(err.max()))
    assert torch.equal(syn.labels, y) and syn.ipc == 1


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--format", "png"], "invalid choice: 'png'"),
        (["--format", "mtt", "--it", "7"], "holds no images_7.pt"),
        (["--format", "mtt", "--lr", "-1"], "positive finite"),
        (["--format", "npz"], "not found"),
        (["--format", "mtt", "--model", "convnett"], "did you mean"),
    ],
)
def test_cli_import_errors_are_one_line(tmp_path, capsys, digits, argv, needle):
    x, y = _real(digits)
    torch.save(x, tmp_path / "images_best.pt")
    torch.save(y, tmp_path / "labels_best.pt")
    out = tmp_path / "out"
    src = str(tmp_path / ("x.npz" if "npz" in argv else ""))
    try:
        code = main(["import", src, *argv, "--dataset", "digits", "--out", str(out)])
    except SystemExit as e:  # argparse's own refusals exit (one line, through the CLI's parser)
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.with_suffix(".safetensors").exists()


def test_folder_errors(tmp_path, digits):
    from PIL import Image

    root = tmp_path / "f"
    for c in range(K - 1):
        (root / str(c)).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / str(c) / "a.png")
    with pytest.raises(DataFormatError, match="missing"):
        import_published(root, "imagefolder", digits)
    (root / "9").mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "9" / "a.png")
    with pytest.raises(DataFormatError, match="does not resize"):
        import_published(root, "imagefolder", digits)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "9" / "a.png")
    (root / "cat").mkdir()
    with pytest.raises(DataFormatError, match="names no class"):
        import_published(root, "imagefolder", digits)
    (root / "cat").rmdir()
    Image.fromarray(np.full((8, 8, 3), (0, 50, 100), np.uint8)).save(root / "9" / "a.png")
    with pytest.raises(DataFormatError, match="does not convert colour"):
        import_published(root, "imagefolder", digits)
    with pytest.raises(ConfigError, match="zca"):
        import_published(root, "imagefolder", digits, zca=True)
    with pytest.raises(ConfigError, match="allowed"):
        import_published(root, "png", digits)


# ---------------------------------------------------------------------------------------------- round trips (CLI)


def _native(tmp_path, data) -> Path:
    x, y = _real(data)
    from condense.methods.random_real import RandomRealConfig

    syn = SyntheticSet.from_tensors(x, y, data, "random_real", IPC, RandomRealConfig())
    return syn.save(tmp_path / "native.safetensors")


@pytest.mark.parametrize("fmt", ["npz", "imagefolder"])
@pytest.mark.parametrize("zca", [False, True], ids=["normalized", "zca"])
def test_export_then_import_round_trip(tmp_path, capsys, digits, digits_zca, fmt, zca):
    data = digits_zca if zca else digits
    art = _native(tmp_path, data)
    target = tmp_path / ("x.npz" if fmt == "npz" else "folder")
    assert main(["export", str(art), "--format", fmt, "--out", str(target)]) == 0
    argv = ["import", str(target), "--format", fmt, "--dataset", "digits", "--out", str(tmp_path / "back")]
    argv += ["--zca"] if zca else []
    assert main([*argv, "--method", "random_real"]) == 0
    out = capsys.readouterr().out
    assert f"{K * IPC} images (1, 8, 8), {K} classes x ipc {IPC}, labels hard" in out and "back.json" in out
    before, back = SyntheticSet.load(art), SyntheticSet.load(tmp_path / "back.safetensors")
    assert torch.equal(back.labels, before.labels) and back.method == "random_real"
    assert back.meta["imported"]["format"] == fmt and back.preprocessing["zca"] == before.preprocessing["zca"]
    # the same pixels within PNG / uint8 quantization (half a grey level)
    assert float((back.pixels() - before.pixels()).abs().max()) <= 0.5 / 255 + 1e-6
    assert not torch.equal(back.images, torch.zeros_like(back.images))
    code = main([*argv, "--method", "random_real"])
    assert code == 2 and "pass --force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0


def test_cli_import_datm_and_eval(tmp_path, capsys, digits_zca):
    x, y = _real(digits_zca)
    run = _datm_layout(tmp_path, x, 4.0 * torch.nn.functional.one_hot(y, K).float(), 0.02)
    out = tmp_path / "datm.safetensors"
    argv = ["import", str(run), "--format", "datm", "--dataset", "digits", "--zca", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "labels logits, lr 0.02, read as zca -> ZCA" in printed, printed
    assert main(["eval", str(out), "--dataset", "digits", "--seeds", "1", "--epochs", "1", "--json"]) == 0
    assert "datm ipc 2" in capsys.readouterr().out
    sha = _sha(out)
    assert main(argv) == 2 and "pass --force" in capsys.readouterr().err and _sha(out) == sha


def test_every_format_is_tested():
    tested = {"dc", "dsa", "dm", "mtt", "ftd", "datm", "sre2l", "rded", "imagefolder", "npz"}
    assert set(FORMATS) == tested
