"""ImageNette / ImageWoof / ImageNet-1K from tiny fake ImageFolder trees: the shipped class maps, the class order,
the layout errors, the memory-mapped cache (built once, reused, invalidated), and the resize + center crop."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from condense.data import imagenet, load_dataset
from condense.data.imagenet import ImageFolderCache, open_imagenet, read_class_map
from condense.errors import ConfigError, DataFormatError, DataNotFoundError


def _color(c: int, k: int) -> tuple[int, int, int]:
    """A flat colour that identifies class ``c`` (red) and image ``k`` (green)."""
    return (20 * c + 10, 40 * k + 20, 128)


def _tree(base: Path, name: str = "imagenette", per_class: int = 2, per_val: int = 1, size=(40, 30)) -> Path:
    """A fast.ai-style tree ``base/train/<wnid>/*.JPEG`` + ``base/val/<wnid>/*.JPEG`` of flat-coloured images."""
    wnids, _ = read_class_map(name)
    for split, n in (("train", per_class), ("val", per_val)):
        for c, w in reversed(list(enumerate(wnids))):  # created in reverse: the order must not come from the disk
            d = base / split / w
            d.mkdir(parents=True)
            for k in range(n):
                Image.new("RGB", size, _color(c, k)).save(d / f"{w}_{k}.JPEG", quality=95)
    return base


def _red(x: np.ndarray) -> np.ndarray:
    """Mean red value of each (N, S, S, 3) image."""
    return x[..., 0].reshape(len(x), -1).mean(1)


def test_class_maps_are_the_standard_ones() -> None:
    wnids, names = read_class_map("imagenet1k")
    assert len(wnids) == len(set(wnids)) == 1000 and wnids == sorted(wnids)
    assert (wnids[0], names[0]) == ("n01440764", "tench") and (wnids[-1], names[-1]) == ("n15075141", "toilet tissue")
    by_wnid = dict(zip(wnids, names))
    nette, nette_names = read_class_map("imagenette")
    woof, woof_names = read_class_map("imagewoof")
    assert nette == sorted(nette) and len(nette) == 10 and set(nette) <= set(wnids)
    assert woof == sorted(woof) and len(woof) == 10 and set(woof) <= set(wnids)
    assert nette_names == [by_wnid[w] for w in nette] and woof_names == [by_wnid[w] for w in woof]
    assert nette[9] == "n03888257" and nette_names[9] == "parachute"
    # the name is the WNID's, not the README's n-th breed (n02093754 is the Border terrier, not the Australian)
    assert by_wnid["n02093754"] == "Border terrier" and by_wnid["n02096294"] == "Australian terrier"
    with pytest.raises(ConfigError, match="imagenette"):
        read_class_map("imagenet")


def test_load_imagenette_labels_follow_the_map(tmp_path: Path) -> None:
    _tree(tmp_path / "imagenette2-160")
    data = load_dataset("imagenette", str(tmp_path))
    wnids, names = read_class_map("imagenette")
    assert data.kind == "images" and data.classes == wnids and data.extra["words"][wnids[0]] == names[0]
    assert data.x_train.shape == (20, 3, 128, 128) and data.x_test.shape == (10, 3, 128, 128)
    assert data.y_train.tolist() == [c for c in range(10) for _ in range(2)] and data.y_test.tolist() == list(range(10))
    # each image's colour is its folder's class: undo the normalization and read the red channel
    red = data.x_train[:, 0] * imagenet.IMAGENET_STD[0] + imagenet.IMAGENET_MEAN[0]
    want = torch.tensor([_color(int(c), 0)[0] / 255 for c in data.y_train])
    assert torch.allclose(red.mean((1, 2)), want, atol=3 / 255)
    assert (
        data.extra["source"] == str(tmp_path / "imagenette2-160") and "center crop 128x128" in data.extra["transform"]
    )


def test_class_order_is_the_maps_not_the_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path)
    wnids, names = read_class_map("imagenette")
    monkeypatch.setattr(imagenet, "read_class_map", lambda name: (wnids[::-1], names[::-1]))
    cache = open_imagenet("imagenette", tmp_path, split="val", image_size=32, cache_dir=tmp_path / "c")
    assert cache.classes == wnids[::-1] and cache.labels.tolist() == list(range(10))
    # class 0 of the reversed map is the last sorted folder: its images carry colour 9
    np.testing.assert_allclose(_red(cache.images(cache.indices_of_class(0))), [_color(9, 0)[0]], atol=3)


def test_missing_or_extra_class_folder_is_one_error_naming_it(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "imagewoof2", "imagewoof")
    wnids, _ = read_class_map("imagewoof")
    for p in (tree / "train" / wnids[3]).iterdir():
        p.unlink()
    (tree / "train" / wnids[3]).rmdir()
    with pytest.raises(DataNotFoundError, match=rf"missing class folders {wnids[3]}\..*not the folder listing"):
        load_dataset("imagewoof", str(tmp_path))
    (tree / "train" / wnids[3]).mkdir()
    with pytest.raises(DataNotFoundError, match=rf"no images in .*{wnids[3]}"):
        load_dataset("imagewoof", str(tmp_path))
    Image.new("RGB", (8, 8)).save(tree / "train" / wnids[3] / "a.JPEG")
    (tree / "val" / "n09999999").mkdir()
    with pytest.raises(DataFormatError, match=r"val' does not match .* class folders not in the map n09999999"):
        load_dataset("imagewoof", str(tmp_path))


def test_absent_tree_or_flat_val(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"ImageNette not found .*imagenette2/.*train/<wnid>/\*\.JPEG"):
        load_dataset("imagenette", str(tmp_path))
    with pytest.raises(DataNotFoundError, match=r"ImageNet-1K not found .*imagenet1k/"):
        load_dataset("imagenet1k", str(tmp_path))
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    wnids, _ = read_class_map("imagenette")
    for w in wnids:
        (tmp_path / "train" / w).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / "train" / w / "x.JPEG")
    with pytest.raises(DataFormatError, match=r"holds 1 images directly .*val/<wnid>/"):
        load_dataset("imagenette", str(tmp_path))  # the tree is the root itself


def test_cache_is_built_once_then_reused(tmp_path: Path) -> None:
    _tree(tmp_path)
    kw = dict(split="train", image_size=32, cache_dir=tmp_path / "cache", shard_size=1)
    first = open_imagenet("imagenette", tmp_path, **kw)
    assert first.num_decoded == 0 and first.invalidated is None  # opening decodes nothing
    x = first.images([5, 0, 19])  # lazily: only the shards holding these three
    assert first.num_decoded == 3 and x.shape == (3, 32, 32, 3) and x.dtype == np.uint8
    assert first.build() == 17 and first.num_decoded == 20
    shards = sorted(first.cache_dir.glob("shard-*.safetensors"))
    assert len(shards) == 20 and (first.cache_dir / "manifest.json").is_file()
    stamps = [p.stat().st_mtime_ns for p in shards]
    again = open_imagenet("imagenette", tmp_path, **kw)
    np.testing.assert_array_equal(again.images(range(20)), first.images(range(20)))
    assert again.num_decoded == 0 and again.invalidated is None and again.build() == 0
    assert [p.stat().st_mtime_ns for p in shards] == stamps and again.fingerprint == first.fingerprint
    xb, yb = again.batch(torch.tensor([2, 3]))
    assert xb.shape == (2, 3, 32, 32) and xb.dtype == torch.uint8 and yb.tolist() == [1, 1]
    assert [len(i) for i in again.class_indices()] == [2] * 10


def test_cache_reused_across_load_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path)
    calls = []
    real = imagenet._decode
    monkeypatch.setattr(imagenet, "_decode", lambda *a: calls.append(a[0]) or real(*a))
    a = load_dataset("imagenette", str(tmp_path), image_size=32)
    assert len(calls) == 30 and (tmp_path / ".condense_cache" / "imagenette" / "train-32px" / "manifest.json").is_file()
    b = load_dataset("imagenette", str(tmp_path), image_size=32)
    assert len(calls) == 30  # the second load decoded nothing
    assert torch.equal(a.x_train, b.x_train) and a.fingerprint == b.fingerprint


def test_changed_file_invalidates_the_cache(tmp_path: Path) -> None:
    _tree(tmp_path)
    kw = dict(split="val", image_size=32, cache_dir=tmp_path / "cache")
    old = open_imagenet("imagenette", tmp_path, **kw)
    old.build()
    wnid = old.classes[4]
    f = tmp_path / "val" / wnid / f"{wnid}_0.JPEG"
    Image.new("RGB", (40, 30), (250, 0, 0)).save(f, quality=95)
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))  # a clock tick coarser than the rewrite
    new = open_imagenet("imagenette", tmp_path, **kw)
    assert new.invalidated is not None and f"{wnid}/{wnid}_0.JPEG" in new.invalidated
    assert new.tree_sha256 != old.tree_sha256
    assert _red(new.images([4]))[0] > 240 and new.num_decoded == 1  # decoded anew, not read from the stale shard
    assert new.build() == 9  # every old shard was discarded
    # a setting change invalidates too; a truncated shard is decoded again
    other = open_imagenet("imagenette", tmp_path, **kw, shard_size=3)
    assert "settings changed (shard_size" in (other.invalidated or "")
    other.build()
    shard = sorted(other.cache_dir.glob("shard-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-5])
    healed = open_imagenet("imagenette", tmp_path, **kw, shard_size=3)
    assert healed.invalidated is None and healed.build() == 1  # class 0's one val image


@pytest.mark.parametrize("size, resize", [(128, 144), (224, 256)])
def test_resize_shorter_side_then_center_crop(tmp_path: Path, size: int, resize: int) -> None:
    from torchvision import transforms as T

    _tree(tmp_path, per_class=1, per_val=1)
    wnid = read_class_map("imagenette")[0][0]
    f = tmp_path / "train" / wnid / f"{wnid}_0.JPEG"
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (30, 70, 3), dtype=np.uint8))  # 70 wide, 30 high
    img.save(f.with_suffix(".png"))
    f.unlink()
    cache = open_imagenet("imagenette", tmp_path, image_size=size, cache_dir=tmp_path / "c")
    assert cache.resize_size == resize and f"resized to {resize}" in cache.transform
    want = np.asarray(T.CenterCrop(size)(T.Resize(resize)(img.convert("RGB"))))
    np.testing.assert_array_equal(cache.images([0])[0], want)
    x, y = cache[0]
    assert x.shape == (3, size, size) and y == 0
    data = load_dataset("imagenette", str(tmp_path), image_size=size, cache_dir=str(tmp_path / "c"))
    assert data.image_size == (size, size) and data.x_train.shape[0] == 10


def test_subsets_memory_guard_and_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path, per_class=3, per_val=2)
    data = load_dataset("imagenette", str(tmp_path), image_size=16, max_per_class=2, max_test_per_class=1)
    assert data.y_train.tolist() == [c for c in range(10) for _ in range(2)] and data.x_test.shape[0] == 10
    monkeypatch.setattr(imagenet, "IN_MEMORY_LIMIT_BYTES", 10_000)
    with pytest.raises(ConfigError, match=r"needs 0.1 MiB of float32 .*limit 0.0 MiB.*open_imagenet"):
        load_dataset("imagenette", str(tmp_path), image_size=16)
    with pytest.raises(ConfigError, match=r"image_size=8 is out of range"):
        open_imagenet("imagenette", tmp_path, image_size=8)
    with pytest.raises(ConfigError, match=r"resize_size=100 is out of range"):
        open_imagenet("imagenette", tmp_path, image_size=128, resize_size=100)
    with pytest.raises(ConfigError, match=r"split='test' is not allowed"):
        open_imagenet("imagenette", tmp_path, split="test")
    with pytest.raises(TypeError, match="max_per_class must be an integer"):
        load_dataset("imagenette", str(tmp_path), image_size=16, max_per_class=1.5)


def test_cache_pickles_without_its_maps_for_loader_workers(tmp_path: Path) -> None:
    _tree(tmp_path)
    cache = open_imagenet("imagenette", tmp_path, split="val", image_size=16, cache_dir=tmp_path / "c")
    cache.build()
    cache.images(range(10))
    blob = pickle.dumps(cache)
    assert len(blob) < 20_000  # the memory-mapped pixels do not travel
    clone = pickle.loads(blob)
    assert isinstance(clone, ImageFolderCache) and torch.equal(clone[3][0], cache[3][0])
    loader = torch.utils.data.DataLoader(cache, batch_size=4)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 3, 16, 16) and xb.dtype == torch.uint8 and yb.tolist() == [0, 1, 2, 3]
