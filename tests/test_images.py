"""Image-folder loaders on tiny PNG fixtures: split rules (paper 000), conversion, errors, registry.

Every fixture image is a constant 8×8 grey level that is unique in its dataset, so a decoded
pixel tells exactly which file it came from.
"""

from __future__ import annotations

import math
import pickle
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
from heatlab.data.split import TRUTH_LEVELS
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


def _flat_root(root: Path, counts: dict[str, int], masks: bool = False) -> Path:
    value = 1
    for cls, n in counts.items():
        for i in range(n):
            _png(root / cls / f"img{i}.png", value)
            if masks:
                _mask_png(root / "masks" / cls / f"img{i}.png", np.where(np.arange(64).reshape(8, 8) < value, 255, 0))
            value += 1
    return root


def test_a_flat_class_folder_is_split_by_a_seeded_draw_per_class(tmp_path):
    root = _flat_root(tmp_path / "flat", {"cat": 20, "dog": 7, "owl": 3})
    splits = open_splits(f"folder:{root}", size=4, channels=1)
    names = lambda fs: {f"{Path(f).parent.name}/{Path(f).name}" for f in fs}  # noqa: E731
    files = {s: names(v.files) for s, v in splits.items()}
    assert all(v.class_names == ["cat", "dog", "owl"] for v in splits.values())
    per = {s: {c: sum(Path(f).parent.name == c for f in v.files) for c in ("cat", "dog", "owl")} for s, v in splits.items()}
    # 15% rounded half up, at least one: cat 20 -> 3/3/14, dog 7 -> 1/1/5, owl 3 -> 1/1/1
    assert per == {"val": {"cat": 3, "dog": 1, "owl": 1}, "test": {"cat": 3, "dog": 1, "owl": 1},
                   "train": {"cat": 14, "dog": 5, "owl": 1}}
    assert set.union(*files.values()) == {f"{c}/img{i}.png" for c, n in (("cat", 20), ("dog", 7), ("owl", 3)) for i in range(n)}
    assert sum(map(len, files.values())) == 30  # disjoint
    for s, v in splits.items():  # each decoded pixel is its file's own value, with its class's label
        got = _all(v)
        for path, x, y in zip(v.files, got["images"], got["labels"]):
            assert v.class_names[int(y)] == Path(path).parent.name
            assert round(float(x[0, 0, 0]) * 255) == int(np.asarray(Image.open(path))[0, 0])
    again = open_splits(f"folder:{root}", size=4, channels=1)
    assert {s: v.files for s, v in again.items()} == {s: v.files for s, v in splits.items()}
    other = open_splits(f"folder:{root}", size=4, channels=1, seed=1)
    assert names(other["test"].files) != files["test"]
    wider = open_splits(f"folder:{root}", size=4, channels=1, val_fraction=0.3, test_fraction=0.3)
    assert sum(Path(f).parent.name == "cat" for f in wider["val"].files) == 6


def test_a_flat_folder_reads_its_masks_and_refuses_too_few_images(tmp_path):
    root = _flat_root(tmp_path / "flat", {"a": 8, "b": 8}, masks=True)
    test = open_dataset(f"folder:{root}", "test", size=8)
    assert test.truth_kind == "mask" and test.class_names == ["a", "b"]  # masks/ is no class
    with pytest.raises(HeatlabError, match=r"holds 2 images, too few to split into train, val and test"):
        open_dataset(f"folder:{_flat_root(tmp_path / 'few', {'a': 5, 'b': 2})}", "train", size=8)
    with pytest.raises(HeatlabError, match=r"val_fraction \+ test_fraction must leave images for training"):
        open_dataset(f"folder:{root}", "train", size=8, val_fraction=0.5, test_fraction=0.5)


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


# ------------------------------------------------------------------------------------------- masks
MASKED = {"a": 4, "b": 5}  # 9 images per split: 3 shards of 3


def _codes(value: int, kind: str) -> np.ndarray:
    """The 8×8 code map (0/1 binary, 0/1/2 levels) drawn as the mask of the image of grey ``value``, in 2×2 blocks."""
    codes = np.random.default_rng(value).integers(0, 2 if kind == "mask" else 3, (4, 4))
    codes[0, :3] = (0, 1, 2) if kind == "levels" else (0, 1, 1)
    return np.kron(codes, np.ones((2, 2), dtype=np.int64))


def _mask_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)


def _masked_root(tmp_path, kind: str, splits=("train", "test")) -> tuple[Path, dict[int, np.ndarray]]:
    """Folder ``set/<split>/<class>`` with masks in ``set/masks/<split>/<class>`` for ``splits``.

    Class "b" is stored as BMP: half its masks have the same name (.bmp), half the same stem with .png.
    Returns (root, {grey value of an image: its code map}).
    """
    root, codes, value = tmp_path / "set", {}, 1
    on = {"levels": np.array([0, 102, 229]), "mask": np.array([0, 255])}[kind]
    for split in ("train", "val", "test"):
        for cls, n in MASKED.items():
            for i in range(n):
                name = f"{cls}{i + 1}.{'bmp' if cls == 'b' else 'png'}"
                _png(root / split / cls / name, value)
                codes[value] = _codes(value, kind)
                drawn = on[codes[value]]
                if kind == "levels" and i == 1:
                    drawn = np.where(codes[value] == 2, 230, drawn)  # 0.9·255 = 229.5 rounded up
                if kind == "mask" and i == 2:
                    drawn = codes[value]  # a 0/1 mask
                if split in splits:
                    mask_name = name if cls == "a" or i % 2 else f"{cls}{i + 1}.png"
                    _mask_png(root / "masks" / split / cls / mask_name, drawn)
                value += 1
    return root, codes


def _all_truth(split) -> dict[str, torch.Tensor]:
    shards = [split.load_shard(k) for k in range(split.num_shards)]
    return {key: torch.cat([s[key] for s in shards]) for key in ("images", "labels", "truth")}


def _check_truth(split, codes, size: int, levels) -> None:
    data = _all_truth(split)
    n = len(split)
    assert data["truth"].shape == (n, size, size) and data["truth"].dtype == torch.float32
    values = (data["images"][:, 0, 0, 0] * 255).round().long().tolist()
    assert len(set(values)) == n
    for v, label, truth, f in zip(values, data["labels"].tolist(), data["truth"], split.files):
        assert split.class_names[label] == Path(f).parent.name
        expected = torch.tensor(levels, dtype=torch.float32)[torch.from_numpy(codes[v])]
        if size != 8:
            expected = expected[1::2, 1::2]  # NEAREST from 8 to 4 samples the centre of each 2×2 block
        assert torch.equal(truth, expected)


def test_folder_binary_masks_round_trip(tmp_path):
    root, codes = _masked_root(tmp_path, "mask")
    split = images.split_folder(root, "test", size=8, channels=1, shard_size=3)
    assert split.truth_kind == "mask" and split.input_kind == "image" and split.num_shards == 3
    assert split.class_names == ["a", "b"]  # "masks" is neither a class nor a split
    assert [m.parent.parent.name for m in split.masks] == ["test"] * 9
    assert {m.suffix for m in split.masks} == {".png", ".bmp"}  # same name, or same stem + .png
    _check_truth(split, codes, 8, (0.0, 1.0))
    # the same order with or without masks, and in every batch
    plain = images.split_folder(root, "test", size=8, channels=1, shard_size=3, masks=False)
    assert plain.files == split.files and plain.truth_kind is None and "truth" not in plain.load_shard(0)
    again = pickle.loads(pickle.dumps(split))
    assert torch.equal(again.load_shard(2)["truth"], split.load_shard(2)["truth"])


def test_folder_level_masks_round_trip_and_resize(tmp_path):
    root, codes = _masked_root(tmp_path, "levels")
    split = images.split_folder(root, "train", size=4, channels=3, shard_size=4)
    assert split.truth_kind == "levels" and split.num_shards == 3
    _check_truth(split, codes, 4, TRUTH_LEVELS)
    assert set(torch.unique(split.load_shard(0)["truth"]).tolist()) == {0.0, *torch.tensor(TRUTH_LEVELS[1:]).tolist()}
    full = images.split_folder(root, "train", size=8, channels=1, shard_size=4)
    _check_truth(full, codes, 8, TRUTH_LEVELS)


def test_folder_masks_through_the_registry(tmp_path):
    root, codes = _masked_root(tmp_path, "mask")
    split = open_dataset(f"folder:{root}", "test", size=8)
    assert split.truth_kind == "mask" and split.input_kind == "image"
    _check_truth(split, codes, 8, (0.0, 1.0))
    splits = open_splits(f"folder:{root}", size=8, shard_size=4)
    assert {s: v.truth_kind for s, v in splits.items()} == {"train": "mask", "val": None, "test": "mask"}
    assert "truth" not in splits["val"].load_shard(0)  # no masks/val folder: no masks for val
    assert _no_truth(open_dataset(f"folder:{root}", "test", size=8, masks=None))


def _no_truth(split) -> bool:
    return split.truth_kind is None and all("truth" not in split.load_shard(k) for k in range(split.num_shards))


def test_folder_without_masks_has_no_truth(tmp_path):
    root, _ = _masked_root(tmp_path, "mask", splits=())
    assert not (root / "masks").exists()
    split = images.split_folder(root, "test", size=8, shard_size=4)
    assert _no_truth(split) and split.masks is None and split.input_kind == "image"
    assert _no_truth(open_dataset(f"folder:{root}", "val", size=8))


def test_explicit_mask_folder_overrides_the_default(tmp_path):
    root, codes = _masked_root(tmp_path, "mask")
    other = tmp_path / "elsewhere"
    for f in (root / "test").rglob("*.*"):
        with Image.open(f) as im:
            value = int(np.asarray(im)[0, 0])
        _mask_png(other / "test" / f.parent.name / f.name, np.array([0, 102, 229])[_codes(value, "levels")])
    split = images.split_folder(root, "test", size=8, shard_size=4, masks=other)
    assert split.truth_kind == "levels" and all(str(m).startswith(str(other)) for m in split.masks)
    split = images.split_folder(root, "test", size=8, shard_size=4, masks=str(other))
    _check_truth(split, {v: _codes(v, "levels") for v in codes}, 8, TRUTH_LEVELS)
    assert images.split_folder(root, "train", size=8, masks=other).truth_kind is None  # no elsewhere/train


def test_construction_reads_headers_and_only_the_first_shard_of_masks(tmp_path, monkeypatch):
    root, _ = _masked_root(tmp_path, "mask")
    calls = []
    real = images.read_mask
    monkeypatch.setattr(images, "read_mask", lambda *a: calls.append(a[0]) or real(*a))
    split = images.split_folder(root, "test", size=8, shard_size=3)
    assert calls == split.masks[:3]
    split.load_shard(0)
    assert len(calls) == 3  # shard 0's masks were kept
    split.load_shard(1)
    assert calls[3:] == split.masks[3:6]


def test_missing_mask_is_named(tmp_path):
    root, _ = _masked_root(tmp_path, "mask")
    (root / "masks" / "test" / "a" / "a3.png").unlink()
    (root / "masks" / "test" / "b" / "b1.png").unlink()  # b1.bmp's mask (same stem + .png)
    with pytest.raises(HeatlabError) as err:
        images.split_folder(root, "test", size=8)
    message = str(err.value)
    assert f"Image '{root / 'test' / 'a' / 'a3.png'}' has no mask" in message
    assert str(root / "masks" / "test" / "a" / "a3.png") in message and "1 more images" in message
    assert "masks=False" in message
    assert images.split_folder(root, "test", size=8, masks=False).truth_kind is None
    # a whole class folder of masks missing
    for f in (root / "masks" / "train" / "b").iterdir():
        f.unlink()
    (root / "masks" / "train" / "b").rmdir()
    with pytest.raises(HeatlabError, match=r"b1\.bmp' has no mask.*\(or '.*b1\.png'\)"):
        open_dataset(f"folder:{root}", "train", size=8)


def test_mask_size_mismatch_is_named(tmp_path):
    root, _ = _masked_root(tmp_path, "mask")
    bad = root / "masks" / "test" / "b" / "b4.bmp"
    _mask_png(bad, np.zeros((12, 10)))
    with pytest.raises(HeatlabError) as err:
        images.split_folder(root, "test", size=8)
    assert f"Mask '{bad}' is 10×12 pixels" in str(err.value) and "is 8×8" in str(err.value)
    assert str(root / "test" / "b" / "b4.bmp") in str(err.value)
    (root / "masks" / "test" / "b" / "b4.bmp").write_bytes(b"not an image")
    with pytest.raises(HeatlabError, match="Mask '.*b4.bmp' is unreadable"):
        images.split_folder(root, "test", size=8)


def test_bad_mask_values_are_rejected(tmp_path):
    root, _ = _masked_root(tmp_path, "mask")
    split = images.split_folder(root, "test", size=8, shard_size=3)
    bad = split.masks[1]  # in shard 0: decided at construction
    arr = np.zeros((8, 8))
    arr[0, :3] = (17, 255, 128)
    _mask_png(bad, arr)
    with pytest.raises(HeatlabError) as err:
        images.split_folder(root, "test", size=8, shard_size=3)
    message = str(err.value)
    assert f"Mask '{bad}' holds the pixel values 0, 17, 128, 255" in message
    assert "only 0 and one other value" in message and "0, 102 and 229/230" in message


def test_first_shard_must_agree_on_the_truth_kind(tmp_path):
    root, codes = _masked_root(tmp_path, "mask")
    split = images.split_folder(root, "test", size=8, shard_size=3)
    levels = np.array([0, 102, 229])[_codes(1, "levels")]
    _mask_png(split.masks[2], levels)
    with pytest.raises(HeatlabError, match=r"is drawn in levels \(values 0, 102, 229\) but mask '.*' is binary"):
        images.split_folder(root, "test", size=8, shard_size=3)


def test_later_shard_disagreeing_with_the_truth_kind_fails_on_load(tmp_path):
    root, _ = _masked_root(tmp_path, "mask")
    split = images.split_folder(root, "test", size=8, shard_size=3)
    _mask_png(split.masks[-1], np.array([0, 102, 229])[_codes(1, "levels")])  # in the last shard
    split.load_shard(0), split.load_shard(1)
    with pytest.raises(HeatlabError) as err:
        split.load_shard(2)
    message = str(err.value)
    assert f"Mask '{split.masks[-1]}' in shard 2 is drawn in levels (values 0, 102, 229)" in message
    assert "truth_kind 'mask'" in message
    # a first shard of empty masks counts as binary, and says so
    for m in split.masks[:3]:
        _mask_png(m, np.zeros((8, 8)))
    empty_first = images.split_folder(root, "test", size=8, shard_size=3)
    assert empty_first.truth_kind == "mask" and not empty_first.load_shard(0)["truth"].any()
    with pytest.raises(HeatlabError, match="all 0, which counts as binary"):
        empty_first.load_shard(2)


def test_mask_option_and_folder_errors(tmp_path):
    root, _ = _masked_root(tmp_path, "mask")
    with pytest.raises(HeatlabError, match=f"Mask folder '{tmp_path / 'nowhere'}' does not exist.*masks=False"):
        images.split_folder(root, "test", masks=tmp_path / "nowhere")
    with pytest.raises(HeatlabError, match="masks must be True"):
        images.split_folder(root, "test", masks=3)
    with pytest.raises(HeatlabError, match="holds no train, val or test folder"):
        images.split_folder(root, "test", masks=root / "masks" / "test")  # one level too deep
    with pytest.raises(HeatlabError, match="one mask per file"):
        ImageSplit([root / "test" / "a" / "a1.png"], [0], ["a", "b"], masks=[])


def test_mask_file_modes_decode_to_the_drawn_mask(tmp_path):
    root = tmp_path / "modes"
    drawn = _codes(7, "mask")
    masks = {"wide01.png": drawn.astype(np.uint16), "wide.png": drawn.astype(np.uint16) * 65535,
             "bilevel.png": None, "rgb.png": np.stack([drawn * 255] * 3, -1).astype(np.uint8)}  # fmt: skip
    for i, (name, arr) in enumerate(masks.items()):
        _png(root / "train" / ("a" if i % 2 else "b") / name, 10 + i)
        path = root / "masks" / "train" / ("a" if i % 2 else "b") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if arr is None:
            Image.fromarray(drawn.astype(bool)).save(path)  # mode "1"
        else:
            Image.fromarray(arr).save(path)
    split = images.split_folder(root, "train", size=8, shard_size=4)
    assert split.truth_kind == "mask"
    truth = split.load_shard(0)["truth"]
    assert all(torch.equal(t, torch.from_numpy(drawn).float()) for t in truth)


@pytest.mark.parametrize("side", [7_000, 10_000, 20_000])  # 49 MP; 100 MP (Pillow warns); 400 MP (Pillow refuses)
def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, side, png_claiming):
    path = png_claiming(tmp_path / "huge.png", side, side)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for call in (lambda: images._check_header(path), lambda: images.decode_image(path, 8, 3)):
            with pytest.raises(HeatlabError, match="huge.png' has .* pixels, more than the 40 megapixels heatlab decodes"):
                call()
    assert images.MAX_PIXELS == 40_000_000
    small = png_claiming(tmp_path / "ok.png", 6_000, 6_000)  # 36 MP: under the limit, so its header passes
    assert images._check_header(small) == (6_000, 6_000)


def test_a_palette_png_with_transparency_decodes_without_a_warning(tmp_path):
    import warnings

    index = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    im = Image.fromarray(index, mode="P")
    im.putpalette([10, 20, 30, 200, 100, 0, 0, 0, 255] + [0] * (253 * 3))
    im.save(tmp_path / "p.png", transparency=b"\xff\x00\x80")  # alpha per palette entry (tRNS bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = images.decode_image(tmp_path / "p.png", 2, 3)
        grey = images.decode_image(tmp_path / "p.png", 2, 1)
    palette = np.array([[10, 20, 30], [200, 100, 0], [0, 0, 255]], dtype=np.uint8)
    assert np.array_equal(rgb, palette[index].transpose(2, 0, 1))  # the colours, the alpha dropped
    luma = (palette[index] @ np.array([299, 587, 114]) + 500) // 1000  # ITU-R 601-2, as Pillow rounds it
    assert np.abs(grey[0].astype(int) - luma).max() <= 1
