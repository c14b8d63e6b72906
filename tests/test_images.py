"""Image-folder loaders on tiny PNG fixtures: split rules (paper 000), conversion, errors, registry.

Every fixture image is a constant 8×8 grey level that is unique in its dataset, so a decoded
pixel tells exactly which file it came from.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heatlab.data import images
from heatlab.data.images import (
    ImageSplit,
    chest_xray,
    chest_xray_partition,
    covid_partition,
    covid_radiography,
    load_image_folder,
    natural_key,
)
from heatlab.data.registry import open_dataset, open_splits
from heatlab.errors import HeatlabError
from heatlab.models.training import iter_batches

# Chest X-ray fixture: (split, class) -> number of images; Kaggle's layout in miniature.
CHEST = {("train", "NORMAL"): 10, ("val", "NORMAL"): 2, ("test", "NORMAL"): 3,
         ("train", "PNEUMONIA"): 13, ("val", "PNEUMONIA"): 2, ("test", "PNEUMONIA"): 4}  # fmt: skip
COVID = {"COVID": 11, "Lung_Opacity": 5, "Normal": 4}


def _png(path: Path, value, mode_dtype=np.uint8, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size) if np.ndim(value) == 0 else (size, size, len(value))
    Image.fromarray(np.full(shape, value, dtype=mode_dtype)).save(path)


@pytest.fixture()
def chest_root(tmp_path) -> tuple[Path, dict[int, tuple[str, str]]]:
    """Chest X-ray folders; returns (root, {grey value: (split folder, class)})."""
    root, ids, value = tmp_path / "chest_xray", {}, 1
    for (split, cls), n in CHEST.items():
        for i in range(n):
            _png(root / split / cls / f"{cls.lower()}-{i + 1}.jpeg.png", value)
            ids[value] = (split, cls)
            value += 1
    return root, ids


@pytest.fixture()
def covid_root(tmp_path) -> Path:
    root = tmp_path / "COVID-19_Radiography_Dataset"
    value = 1
    for cls, n in COVID.items():
        for i in range(n):
            _png(root / cls / "images" / f"{cls}-{i + 1}.png", value)
            _png(root / cls / "masks" / f"{cls}-{i + 1}.png", 255)  # must be ignored
            value += 1
    (root / "COVID.metadata.xlsx").write_bytes(b"not a class folder")
    return root


def _all(split) -> dict[str, torch.Tensor]:
    shards = [split.load_shard(k) for k in range(split.num_shards)]
    return {key: torch.cat([s[key] for s in shards]) for key in ("images", "labels")}


def _names(files) -> set[str]:
    return {f"{Path(f).parent.parent.name}/{Path(f).name}" for f in files}


# ------------------------------------------------------------------------------------- chest X-ray
def test_chest_xray_counts_follow_the_redraw_rule(chest_root):
    root, _ = chest_root
    for fraction in (0.2, 0.5):
        classes, parts = chest_xray_partition(root, val_fraction=fraction, seed=0)
        assert classes == ["NORMAL", "PNEUMONIA"]
        for cls in classes:
            pooled = CHEST[("train", cls)] + CHEST[("val", cls)]
            n_val = math.floor(fraction * pooled + 0.5)  # halves round up: 0.5·15 = 7.5 -> 8
            assert len(parts["val"][cls]) == n_val
            assert len(parts["train"][cls]) == pooled - n_val
            assert len(parts["test"][cls]) == CHEST[("test", cls)]
    # the hand-computed numbers for the default fraction
    _, parts = chest_xray_partition(root)
    assert [len(parts["val"][c]) for c in ("NORMAL", "PNEUMONIA")] == [2, 3]  # round(2.4), round(3.0)


def test_chest_xray_redraw_is_seeded_and_keeps_test_untouched(chest_root):
    root, _ = chest_root
    _, a = chest_xray_partition(root, seed=0)
    _, b = chest_xray_partition(root, seed=0)
    _, c = chest_xray_partition(root, seed=1)
    for cls in ("NORMAL", "PNEUMONIA"):
        assert a["val"][cls] == b["val"][cls] and a["train"][cls] == b["train"][cls]
        pooled = set(a["train"][cls]) | set(a["val"][cls])
        assert not set(a["train"][cls]) & set(a["val"][cls])
        assert pooled == set((root / "train" / cls).iterdir()) | set((root / "val" / cls).iterdir())
        assert a["test"][cls] == c["test"][cls] == sorted((root / "test" / cls).iterdir(), key=lambda p: natural_key(p.name))
    assert any(set(a["val"][cls]) != set(c["val"][cls]) for cls in ("NORMAL", "PNEUMONIA"))


def test_chest_xray_split_decodes_each_file_with_its_label(chest_root):
    root, ids = chest_root
    split = chest_xray(root, "train", size=4, channels=3, shard_size=5, seed=2)
    assert len(split) == 10 + 13 + 2 + 2 - 2 - 3 and split.num_shards == math.ceil(len(split) / 5)
    data = _all(split)
    assert data["images"].shape == (len(split), 3, 4, 4) and data["images"].dtype == torch.float32
    values = (data["images"][:, 0, 0, 0] * 255).round().long().tolist()
    assert len(set(values)) == len(split)  # every file exactly once
    for v, label, f in zip(values, data["labels"].tolist(), split.files):
        folder, cls = ids[v]
        assert folder in ("train", "val") and split.class_names[label] == cls == Path(f).parent.name
    test = chest_xray(root, "test", size=4, seed=2)
    test_values = (_all(test)["images"][:, 0, 0, 0] * 255).round().long().tolist()
    assert sorted(ids[v][0] for v in test_values) == ["test"] * 7


# ------------------------------------------------------------------------------------------ COVID
def test_covid_index_mod_3_split_in_natural_order(covid_root):
    classes, parts = covid_partition(covid_root)
    assert classes == ["COVID", "Lung_Opacity", "Normal"]
    # 11 COVID files in natural order COVID-1 .. COVID-11: index i = number - 1
    expected = {s: {f"COVID-{i + 1}.png" for i in range(11) if i % 3 == r} for s, r in (("train", 0), ("val", 1), ("test", 2))}
    for s in ("train", "val", "test"):
        assert {p.name for p in parts[s]["COVID"]} == expected[s]
        for cls, n in COVID.items():
            assert len(parts[s][cls]) == len(range({"train": 0, "val": 1, "test": 2}[s], n, 3))
            assert all(p.parent.name == "images" for p in parts[s][cls])
    assert {p.name for p in parts["train"]["COVID"]} == {"COVID-1.png", "COVID-4.png", "COVID-7.png", "COVID-10.png"}


def test_covid_split_object_and_registry(covid_root):
    split = covid_radiography(covid_root, "val", size=6)
    assert split.input_shape == (1, 6, 6) and len(split) == 4 + 2 + 1  # i = 1, 4, 7, 10 | 1, 4 | 1
    same = open_dataset(f"covid:{covid_root}", "val", size=6)
    assert same.files == split.files
    assert torch.equal(_all(same)["images"], _all(split)["images"])
    assert (_all(split)["images"] < 1).all()  # no mask (255) was read


# ----------------------------------------------------------------------------- conversion and size
def test_channels_size_and_grey_conversion(tmp_path):
    root = tmp_path / "pets"
    _png(root / "cat" / "grey.png", 77)
    _png(root / "dog" / "red.png", (255, 0, 0))
    _png(root / "dog" / "deep.png", 25700, np.uint16)  # 16-bit grey: 25700·255/65535 = 100
    one = load_image_folder(root, size=4, channels=1)
    three = load_image_folder(root, size=5, channels=3)
    assert one.input_shape == (1, 4, 4) and three.input_shape == (3, 5, 5)
    for split, shape in ((one, (1, 4, 4)), (three, (3, 5, 5))):
        data = _all(split)
        assert data["images"].shape == (3, *shape)
        assert data["images"].min() >= 0 and data["images"].max() <= 1
        by_name = {Path(f).name: (img, int(lab)) for f, img, lab in zip(split.files, data["images"], data["labels"])}
        assert split.class_names == ["cat", "dog"] and by_name["grey.png"][1] == 0 and by_name["red.png"][1] == 1
        assert torch.allclose(by_name["grey.png"][0], torch.full(shape, 77 / 255))
        assert torch.allclose(by_name["deep.png"][0], torch.full(shape, 100 / 255))
    red_grey = _all(one)["images"][[Path(f).name == "red.png" for f in one.files]]
    assert torch.allclose(red_grey, torch.full((1, 1, 4, 4), 76 / 255))  # ITU-R 601-2: 255·0.299 = 76
    red_rgb = _all(three)["images"][[Path(f).name == "red.png" for f in three.files]][0]
    assert torch.allclose(red_rgb[0], torch.ones(5, 5)) and torch.allclose(red_rgb[1:], torch.zeros(2, 5, 5))


def test_shards_decode_once_and_cover_every_file(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    for i in range(7):
        _png(root / ("a" if i % 2 else "b") / f"{i}.png", 10 * i + 5)
    calls = []
    real = images.decode_image
    monkeypatch.setattr(images, "decode_image", lambda *a: calls.append(a[0]) or real(*a))
    split = load_image_folder(root, size=8, channels=1, shard_size=3)
    assert split.num_shards == 3 and [split.shard_bounds(k) for k in range(3)] == [(0, 3), (3, 6), (6, 7)]
    first = split.load_shard(0)
    again = split.load_shard(0)
    assert len(calls) == 3 and torch.equal(first["images"], again["images"])
    values = sorted((_all(split)["images"][:, 0, 0, 0] * 255).round().long().tolist())
    assert values == [10 * i + 5 for i in range(7)]
    with pytest.raises(HeatlabError, match="out of range"):
        split.load_shard(3)


def test_image_split_feeds_the_training_batches(tmp_path):
    root = tmp_path / "imgs"
    for i in range(6):
        _png(root / ("a" if i < 3 else "b") / f"{i}.png", 20 * i)
    split = load_image_folder(root, size=4, channels=3, shard_size=4)
    batches = list(iter_batches(split, 5, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [5, 1]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == [0, 0, 0, 1, 1, 1]


def test_folder_spec_reads_split_folders(tmp_path):
    root = tmp_path / "set"
    value = 1
    for split in ("train", "val", "test"):
        for cls in ("x", "y"):
            for i in range(2):
                _png(root / split / cls / f"{i}.png", value)
                value += 1
    splits = open_splits(f"folder:{root}", size=4, channels=1)
    assert {s: len(v) for s, v in splits.items()} == {"train": 4, "val": 4, "test": 4}
    assert all(v.class_names == ["x", "y"] for v in splits.values())
    assert all(Path(f).parent.parent.name == s for s, v in splits.items() for f in v.files)


# ------------------------------------------------------------------------------------------ errors
def test_broken_folders_are_rejected(tmp_path, chest_root):
    root = tmp_path / "bad"
    (root / "a").mkdir(parents=True)
    _png(root / "b" / "1.png", 3)
    with pytest.raises(HeatlabError, match="holds no images"):
        load_image_folder(root)
    with pytest.raises(HeatlabError, match="does not exist"):
        load_image_folder(tmp_path / "nowhere")
    (tmp_path / "none").mkdir()
    with pytest.raises(HeatlabError, match="no class subfolders"):
        load_image_folder(tmp_path / "none")
    with pytest.raises(HeatlabError, match="at least two"):
        load_image_folder(root / "b" / "..", classes=["b"])
    chest, _ = chest_root
    for f in (chest / "test" / "PNEUMONIA").iterdir():
        f.unlink()
    (chest / "test" / "PNEUMONIA").rmdir()
    with pytest.raises(HeatlabError, match="PNEUMONIA"):
        chest_xray(chest, "train")
    with pytest.raises(HeatlabError, match="is not one of train, val, test"):
        chest_xray(chest, "holdout")
    with pytest.raises(HeatlabError, match="Channels"):
        load_image_folder(root / "b" / "..", classes=["b", "b"], channels=2)


def test_corrupt_images_are_named(tmp_path):
    root = tmp_path / "imgs"
    _png(root / "a" / "good.png", 1)
    _png(root / "b" / "good.png", 2)
    (root / "b" / "garbage.png").write_bytes(np.random.default_rng(0).bytes(200))
    with pytest.raises(HeatlabError, match="garbage.png"):
        load_image_folder(root)
    (root / "b" / "garbage.png").unlink()
    noise = np.random.default_rng(1).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(noise).save(root / "b" / "cut.png")
    data = (root / "b" / "cut.png").read_bytes()
    (root / "b" / "cut.png").write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    split = load_image_folder(root, shard_size=10)
    with pytest.raises(HeatlabError, match="cut.png"):
        split.load_shard(0)


def test_image_split_validates_arguments(tmp_path):
    _png(tmp_path / "a.png", 1)
    with pytest.raises(HeatlabError, match="Image size"):
        ImageSplit([tmp_path / "a.png"], [0], ["a", "b"], size=0)
    with pytest.raises(HeatlabError, match="one label per file"):
        ImageSplit([tmp_path / "a.png"], [0, 1], ["a", "b"])
    with pytest.raises(HeatlabError, match="Shard size"):
        ImageSplit([tmp_path / "a.png"], [0], ["a", "b"], shard_size=0)
