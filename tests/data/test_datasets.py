"""Every file-backed dataset loads tiny fake files written in its real on-disk format and fails clearly without them.

As torchvision's ``test/datasets_utils.py``: the fakes are a handful of images in ``tmp_path``; nothing downloads.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from condense.data import load_dataset
from condense.data.cifar import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, CIFAR100_CLASSES, CIFAR100_MEAN
from condense.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD
from condense.data.mnist import FASHION_CLASSES, MNIST_MEAN, MNIST_STD
from condense.data.svhn import SVHN_MEAN, SVHN_STD
from condense.errors import DataFormatError, DataNotFoundError


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _normalized(pixel: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (C,) -> what ImageData should hold for that pixel."""
    return (torch.tensor(pixel, dtype=torch.float32) / 255.0 - torch.tensor(mean)) / torch.tensor(std)


# ---------------------------------------------------------------------------------------------------------------
# CIFAR: fake pickled batches (the official layout) and npz shards
# ---------------------------------------------------------------------------------------------------------------


def _cifar_rows(n: int, num_classes: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = _rng(seed)
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, num_classes, n)]


class _Py2Pickler(pickle._Pickler):
    """Writes str/bytes as Python 2 ``str`` opcodes and names ``numpy.core``: how cPickle wrote the official batches."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        op = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(op + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin1"))

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def _dump(obj: object, fh, protocol: int | str) -> None:
    if protocol != "py2":
        pickle.dump(obj, fh, protocol=protocol)
        return
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    fh.write(buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))


def _write_cifar10_pickles(
    root: Path, protocol: int | str = "py2", n: int = 3
) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data, labels = _cifar_rows(n, 10, i)
        batch = {"batch_label": name, "labels": labels, "data": data, "filenames": [f"img_{j}.png" for j in range(n)]}
        with open(folder / name, "wb") as fh:
            _dump(batch, fh, protocol)
        written[name] = (data, labels)
    meta = {"num_cases_per_batch": n, "label_names": CIFAR10_CLASSES, "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as fh:
        _dump(meta, fh, protocol)
    return written


def _write_npz_shards(folder: Path, sizes: dict[str, int], num_classes: int = 10) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = {"train": [], "test": []}, {"train": [], "test": []}
    for i, (name, n) in enumerate(sizes.items()):
        rng = _rng(100 + i)
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, num_classes, size=n).astype(np.int64)
        np.savez_compressed(folder / name, x=x, y=y)
        split = name.split("-")[0]
        xs[split].append(x)
        ys[split].append(y)
    return {f"{k}_{s}": np.concatenate(v[s]) for k, v in (("x", xs), ("y", ys)) for s in ("train", "test")}


@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5])
def test_cifar10_pickled_batches(tmp_path: Path, protocol: int | str) -> None:
    written = _write_cifar10_pickles(tmp_path, protocol)
    data = load_dataset("cifar10", str(tmp_path))
    assert data.x_train.shape == (15, 3, 32, 32) and data.x_test.shape == (3, 3, 32, 32)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.classes == CIFAR10_CLASSES and data.mean == CIFAR10_MEAN and data.std == CIFAR10_STD
    labels = sum((written[f"data_batch_{k}"][1] for k in range(1, 6)), [])
    assert data.y_train.tolist() == labels
    assert data.y_test.tolist() == written["test_batch"][1]
    # Rows are channel-major (1024 R, 1024 G, 1024 B); check one pixel of the 4th training image (batch 2, row 0).
    row = written["data_batch_2"][0][0]
    h, w = 5, 17
    pixel = row[[c * 1024 + h * 32 + w for c in range(3)]]
    torch.testing.assert_close(data.x_train[3, :, h, w], _normalized(pixel, CIFAR10_MEAN, CIFAR10_STD))


def test_cifar10_npz_shards_folder_or_parent(tmp_path: Path) -> None:
    ref = _write_npz_shards(tmp_path / "cifar10", {"train-00.npz": 4, "train-01.npz": 3, "test-00.npz": 2})
    for root in (tmp_path, tmp_path / "cifar10"):
        data = load_dataset("cifar10", str(root))
        assert data.x_train.shape == (7, 3, 32, 32) and data.x_test.shape == (2, 3, 32, 32)
        assert data.y_train.tolist() == ref["y_train"].tolist() and data.y_test.tolist() == ref["y_test"].tolist()
        expected = _normalized(ref["x_train"][5, 9, 30], CIFAR10_MEAN, CIFAR10_STD)
        torch.testing.assert_close(data.x_train[5, :, 9, 30], expected)


def test_cifar100_pickles_and_npz(tmp_path: Path) -> None:
    folder = tmp_path / "pk" / "cifar-100-python"
    folder.mkdir(parents=True)
    rows = {}
    for i, name in enumerate(["train", "test"]):
        data, fine = _cifar_rows(5, 100, 10 + i)
        rows[name] = (data, fine)
        batch = {"filenames": ["a"] * 5, "batch_label": name, "fine_labels": fine, "coarse_labels": [0] * 5}
        batch["data"] = data
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(folder / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": CIFAR100_CLASSES, "coarse_label_names": ["x"] * 20}, fh)
    data = load_dataset("cifar100", str(tmp_path / "pk"))
    assert data.num_classes == 100 and data.classes[:3] == ["apple", "aquarium_fish", "baby"]
    assert data.y_train.tolist() == rows["train"][1] and data.mean == CIFAR100_MEAN
    assert data.x_train.shape == (5, 3, 32, 32)

    ref = _write_npz_shards(tmp_path / "np" / "cifar100", {"train-00.npz": 3, "test-00.npz": 2}, num_classes=100)
    data = load_dataset("cifar100", str(tmp_path / "np"))
    assert data.y_train.tolist() == ref["y_train"].tolist() and data.x_test.shape == (2, 3, 32, 32)


def test_cifar_missing_names_path_and_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("cifar10", str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path) in msg and "cifar-10-batches-py" in msg and "train-*.npz" in msg and "--data-root" in msg
    with pytest.raises(DataNotFoundError, match="cifar-100-python"):
        load_dataset("cifar100", str(tmp_path))
    # A partial torchvision folder names the missing file.
    _write_cifar10_pickles(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", str(tmp_path))


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_malicious_pickle_is_refused(tmp_path: Path) -> None:
    _write_cifar10_pickles(tmp_path)
    marker = tmp_path / "pwned"
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "wb") as fh:
        pickle.dump({"data": _Evil(marker), "labels": [0]}, fh)
    with pytest.raises(DataFormatError) as e:
        load_dataset("cifar10", str(tmp_path))
    assert str(path) in str(e.value) and "system" in str(e.value) and "not allowed" in str(e.value)
    assert not marker.exists()


def test_cifar_bad_npz_raises_format_error(tmp_path: Path) -> None:
    _write_npz_shards(tmp_path, {"train-00.npz": 2, "test-00.npz": 2})
    bad = tmp_path / "train-00.npz"
    np.savez(bad, x=np.zeros((2, 32, 32), np.uint8), y=np.zeros(2, np.int64))  # no channel axis
    with pytest.raises(DataFormatError, match=r"train-00\.npz.*\(N, 32, 32, 3\)"):
        load_dataset("cifar10", str(tmp_path))
    np.savez(bad, x=np.zeros((2, 32, 32, 3), np.uint8), y=np.array([0, 10]))  # label out of range
    with pytest.raises(DataFormatError, match=r"train-00\.npz.*\[0, 9\]"):
        load_dataset("cifar10", str(tmp_path))
    np.savez(bad, x=np.zeros((2, 32, 32, 3), np.uint8), y=np.array([None, 1], dtype=object))  # needs pickle
    with pytest.raises(DataFormatError, match=r"train-00\.npz"):
        load_dataset("cifar10", str(tmp_path))


# ---------------------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: IDX files, raw or gzipped
# ---------------------------------------------------------------------------------------------------------------


def _idx_bytes(arr: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes()


def _write_idx_set(folder: Path, gz: bool) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    rng = _rng(3)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 6).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4).astype(np.uint8),
    }
    for name, arr in arrays.items():
        if gz:
            with gzip.open(folder / (name + ".gz"), "wb") as fh:
                fh.write(_idx_bytes(arr))
        else:
            (folder / name).write_bytes(_idx_bytes(arr))
    return arrays


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_idx(tmp_path: Path, gz: bool, name: str, folder: str) -> None:
    arrays = _write_idx_set(tmp_path / folder / "raw", gz)
    data = load_dataset(name, str(tmp_path))
    assert data.x_train.shape == (6, 1, 28, 28) and data.x_test.shape == (4, 1, 28, 28)
    assert data.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert data.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert data.classes == (FASHION_CLASSES if name == "fashion_mnist" else [str(i) for i in range(10)])
    if name == "mnist":
        pix = arrays["t10k-images-idx3-ubyte"][2, 7, 11:12]
        torch.testing.assert_close(data.x_test[2, :, 7, 11], _normalized(pix, MNIST_MEAN, MNIST_STD))


def test_mnist_missing_and_bad_magic(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("mnist", str(tmp_path))
    assert str(tmp_path / "MNIST" / "raw") in str(e.value) and "--data-root" in str(e.value)
    _write_idx_set(tmp_path / "MNIST" / "raw", gz=False)
    bad = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    bad.write_bytes(_idx_bytes(np.zeros((6, 1), np.uint8)))  # 2-d labels: magic ...0802
    with pytest.raises(DataFormatError, match="train-labels-idx1-ubyte.*magic"):
        load_dataset("mnist", str(tmp_path))
    bad.write_bytes(_idx_bytes(np.zeros(6, np.uint8))[:-1])  # truncated
    with pytest.raises(DataFormatError, match="train-labels-idx1-ubyte"):
        load_dataset("mnist", str(tmp_path))


# ---------------------------------------------------------------------------------------------------------------
# SVHN: MATLAB .mat files
# ---------------------------------------------------------------------------------------------------------------


def test_svhn_mat(tmp_path: Path) -> None:
    from scipy.io import savemat

    rng = _rng(4)
    x = {s: rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8) for s, n in (("train", 5), ("test", 3))}
    y = {"train": np.array([[10], [1], [2], [10], [9]], np.uint8), "test": np.array([[3], [10], [4]], np.uint8)}
    for s in ("train", "test"):
        savemat(tmp_path / f"{s}_32x32.mat", {"X": x[s], "y": y[s]})
    data = load_dataset("svhn", str(tmp_path))
    assert data.x_train.shape == (5, 3, 32, 32) and data.x_test.shape == (3, 3, 32, 32)
    assert data.y_train.tolist() == [0, 1, 2, 0, 9] and data.y_test.tolist() == [3, 0, 4]
    torch.testing.assert_close(data.x_train[4, :, 6, 20], _normalized(x["train"][6, 20, :, 4], SVHN_MEAN, SVHN_STD))

    savemat(tmp_path / "test_32x32.mat", {"X": x["test"], "y": np.array([[3], [11], [4]], np.uint8)})
    with pytest.raises(DataFormatError, match=r"test_32x32\.mat.*1\.\.10"):
        load_dataset("svhn", str(tmp_path))
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(DataNotFoundError, match="test_32x32.mat"):
        load_dataset("svhn", str(tmp_path))


# ---------------------------------------------------------------------------------------------------------------
# Image folders and Tiny ImageNet
# ---------------------------------------------------------------------------------------------------------------


def _save(path: Path, color: tuple[int, int, int], size: int, fmt: str | None = None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path, format=fmt)


def _write_tiny(root: Path, flat_val: bool) -> Path:
    d = root / "tiny-imagenet-200"
    wnids = ["n02", "n01"]  # written unsorted, as wnids.txt is; classes must come out sorted
    (d).mkdir(parents=True)
    (d / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (d / "words.txt").write_text("n01\tgoldfish\nn02\ttabby cat\n")
    colors = {"n01": (250, 0, 0), "n02": (0, 0, 250)}
    for w in wnids:
        for i in range(2):
            _save(d / "train" / w / "images" / f"{w}_{i}.JPEG", colors[w], 64, "JPEG")
    if flat_val:
        lines = []
        for i, w in enumerate(["n02", "n01", "n02"]):
            _save(d / "val" / "images" / f"val_{i}.JPEG", colors[w], 64, "JPEG")
            lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
        (d / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    else:
        for i, w in enumerate(["n02", "n01", "n02"]):
            _save(d / "val" / w / "images" / f"val_{i}.JPEG", colors[w], 64, "JPEG")
    return d


@pytest.mark.parametrize("flat_val", [True, False])
def test_tinyimagenet_both_val_layouts(tmp_path: Path, flat_val: bool) -> None:
    _write_tiny(tmp_path, flat_val)
    data = load_dataset("tinyimagenet", str(tmp_path))
    assert data.classes == ["n01", "n02"] and data.extra["words"]["n02"] == "tabby cat"
    assert data.x_train.shape == (4, 3, 64, 64) and data.x_test.shape == (3, 3, 64, 64)
    assert data.y_train.tolist() == [0, 0, 1, 1] and sorted(data.y_test.tolist()) == [0, 1, 1]
    assert data.mean == IMAGENET_MEAN and data.std == IMAGENET_STD
    red = _normalized(np.array([250, 0, 0], np.uint8), IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(data.x_train[0, :, 30, 30], red, atol=0.05, rtol=0)  # JPEG is lossy


def test_tinyimagenet_missing_and_wrong_size(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("tinyimagenet", str(tmp_path))
    assert str(tmp_path / "tiny-imagenet-200") in str(e.value) and "val_annotations.txt" in str(e.value)
    d = _write_tiny(tmp_path, flat_val=True)
    _save(d / "val" / "images" / "val_0.JPEG", (0, 0, 250), 32, "JPEG")
    with pytest.raises(DataFormatError, match="val_0.JPEG"):
        load_dataset("tinyimagenet", str(tmp_path))


def test_imagefolder(tmp_path: Path) -> None:
    root = tmp_path / "flowers"
    colors = {"tulip": (10, 200, 30), "daisy": (240, 240, 20)}
    for c, col in colors.items():
        for i in range(3):
            _save(root / "train" / c / f"{i}.png", col, 16)
        _save(root / "val" / c / "0.jpg", col, 16)
    (root / "train" / "daisy" / "notes.txt").write_text("not an image")
    data = load_dataset(f"imagefolder:{root}")
    assert data.classes == ["daisy", "tulip"] and data.x_train.shape == (6, 3, 16, 16)
    assert data.y_train.tolist() == [0, 0, 0, 1, 1, 1] and data.y_test.tolist() == [0, 1]
    expected = _normalized(np.array(colors["tulip"], np.uint8), IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(data.x_train[4, :, 3, 3], expected)  # PNG: exact
    # A relative path resolves under root (--data-root).
    assert load_dataset("imagefolder:flowers", str(tmp_path)).x_test.shape == (2, 3, 16, 16)

    _save(root / "train" / "tulip" / "big.png", colors["tulip"], 20)
    with pytest.raises(DataFormatError, match=r"big\.png.*20x20"):
        load_dataset(f"imagefolder:{root}")
    from condense.data.imagefolder import load_imagefolder

    assert load_imagefolder(str(root), image_size=8).x_train.shape == (7, 3, 8, 8)


def test_imagefolder_missing(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as e:
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    assert str(tmp_path / "nope") in str(e.value) and "train/<class>" in str(e.value)
    _save(tmp_path / "ds" / "train" / "a" / "0.png", (0, 0, 0), 4)
    (tmp_path / "ds" / "train" / "b").mkdir()
    (tmp_path / "ds" / "test" / "a").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match=r"\['b'\]"):
        load_dataset(f"imagefolder:{tmp_path / 'ds'}")


# ---------------------------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.real_data
def test_real_cifar10_npz(shared_data: Path) -> None:
    if not (shared_data / "cifar10").is_dir():
        pytest.skip(f"'{shared_data / 'cifar10'}' is absent")
    data = load_dataset("cifar10", str(shared_data))
    assert data.x_train.shape == (50000, 3, 32, 32) and data.x_test.shape == (10000, 3, 32, 32)
    assert data.num_classes == 10 and data.classes == CIFAR10_CLASSES
    assert torch.bincount(data.y_train, minlength=10).tolist() == [5000] * 10
    assert data.y_train[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]  # official data_batch_1 order
    assert data.y_test[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    # Normalized with the dataset's own channel means, so each channel's mean is ~0.
    assert data.x_train[:5000].mean(dim=(0, 2, 3)).abs().max() < 0.05


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickled_batch_reader_matches_pickle(protocol: int) -> None:
    """The opcode-level reader rebuilds what pickle would, for every array layout a batch may hold, and refuses
    object arrays (they would need pickle to rebuild)."""
    from condense.data._pickle import read_pickled_batch

    obj = {
        "data": np.arange(24, dtype=np.uint8).reshape(4, 6),
        "big": np.arange(6, dtype=">i4").reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
        "labels": [1, 2, 3, 4],
        "names": ("a", b"b"),
        "n": 3,
        "x": 0.5,
        "none": None,
    }
    back = read_pickled_batch(pickle.dumps(obj, protocol=protocol))
    assert back.keys() == obj.keys() and back["labels"] == obj["labels"] and back["names"] == obj["names"]
    for k in ("data", "big", "fortran"):
        np.testing.assert_array_equal(back[k], obj[k])
        assert back[k].dtype == obj[k].dtype
    assert (back["n"], back["x"], back["none"]) == (3, 0.5, None)
    with pytest.raises(ValueError, match="object"):
        read_pickled_batch(pickle.dumps({"data": np.array([None, 1], dtype=object)}, protocol=protocol))
