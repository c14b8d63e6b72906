"""CIFAR-10 / STL-10 binary loaders on tiny written files (good and broken), and the resnet18 zoo model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import heatlab.data
from heatlab.data.natural import CIFAR10_CLASSES, STL10_CLASSES, NaturalSplit, cifar10, stl10
from heatlab.data.registry import available_datasets
from heatlab.data.split import ArraySplit, iter_shards
from heatlab.errors import HeatlabError
from heatlab.models import zoo

CIFAR_BATCH_SIZES = (7, 5, 6, 4, 3)  # 25 training records over the five batches
CIFAR_TEST = 6
STL_TRAIN, STL_TEST = 9, 4
# (row, col) of the marked pixel and its value in the R, G and B planes.
MARK = (3, 11)
MARK_RGB = (200, 100, 50)


def _cifar_images(rng: np.random.Generator, n: int) -> np.ndarray:
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    images[0, :, MARK[0], MARK[1]] = MARK_RGB
    return images


def _cifar_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    return np.concatenate([labels[:, None].astype(np.uint8), images.reshape(len(images), -1)], axis=1).tobytes()


def _write_cifar(folder: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, n in zip(names, (*CIFAR_BATCH_SIZES, CIFAR_TEST)):
        images, labels = _cifar_images(rng, n), rng.integers(0, 10, n, dtype=np.uint8)
        (folder / name).write_bytes(_cifar_bytes(images, labels))
        written[name] = (images, labels)
    return written


def _stl_bytes(images: np.ndarray) -> bytes:
    # The STL-10 binary layout: each 96×96 plane written column-major (Fortran order).
    return np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes()


def _write_stl(folder: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for part, n in (("train", STL_TRAIN), ("test", STL_TEST)):
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        images[0, :, MARK[0], MARK[1]] = MARK_RGB
        labels = rng.integers(1, 11, n, dtype=np.uint8)
        labels[0] = 10
        (folder / f"{part}_X.bin").write_bytes(_stl_bytes(images))
        (folder / f"{part}_y.bin").write_bytes(labels.tobytes())
        written[part] = (images, labels)
    return written


def _served(split) -> tuple[torch.Tensor, torch.Tensor]:
    shards = [shard for _, shard in iter_shards(split)]
    return torch.cat([s["images"] for s in shards]), torch.cat([s["labels"] for s in shards])


# ------------------------------------------------------------------------------------- CIFAR-10
def test_cifar10_serves_the_written_pixels_labels_and_splits(tmp_path):
    written = _write_cifar(tmp_path)
    splits = cifar10(tmp_path, seed=3, val_fraction=0.2, shard_size=4)
    train_x = np.concatenate([written[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
    train_y = np.concatenate([written[f"data_batch_{i}.bin"][1] for i in range(1, 6)])
    assert set(splits) == {"train", "val", "test"}
    for split in splits.values():
        assert isinstance(split, NaturalSplit) and isinstance(split, ArraySplit)
        assert split.input_shape == (3, 32, 32) and split.truth_kind is None
        assert split.class_names == list(CIFAR10_CLASSES) and split.inputs.dtype == torch.uint8
    n_train = sum(CIFAR_BATCH_SIZES)
    assert len(splits["val"]) == 5 and len(splits["train"]) == n_train - 5 and len(splits["test"]) == CIFAR_TEST
    idx = {s: splits[s].info["index"] for s in splits}
    assert sorted(np.concatenate([idx["train"], idx["val"]]).tolist()) == list(range(n_train))
    assert idx["test"].tolist() == list(range(CIFAR_TEST))

    # The test split in file order: the marked pixel in each plane, and every pixel of every image.
    images, labels = _served(splits["test"])
    assert images.dtype == torch.float32 and images.shape == (CIFAR_TEST, 3, 32, 32)
    assert [round(float(images[0, c, MARK[0], MARK[1]]) * 255) for c in range(3)] == list(MARK_RGB)
    test_x, test_y = written["test_batch.bin"]
    assert torch.equal(images, torch.from_numpy(test_x).float() / 255)
    assert labels.dtype == torch.int64 and labels.tolist() == test_y.tolist()

    # train/val: each served image is the written row of the concatenated batches named by info["index"].
    for s in ("train", "val"):
        images, labels = _served(splits[s])
        assert torch.equal(images, torch.from_numpy(train_x[idx[s]]).float() / 255)
        assert labels.tolist() == train_y[idx[s]].tolist()
    # Row 7 is the first record of data_batch_2 (the batches are concatenated in order).
    row = int(np.flatnonzero(np.concatenate([idx["train"], idx["val"]]) == CIFAR_BATCH_SIZES[0])[0])
    where = "train" if row < len(idx["train"]) else "val"
    k = row if where == "train" else row - len(idx["train"])
    pixel = splits[where].load_shard(k // 4)["images"][k % 4, :, MARK[0], MARK[1]]
    assert [round(float(v) * 255) for v in pixel] == list(MARK_RGB)


def test_cifar10_seeded_split_subfolder_registry_and_size(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-bin")
    a, b, c = cifar10(tmp_path, seed=1), cifar10(tmp_path, seed=1), cifar10(tmp_path, seed=2)
    assert np.array_equal(a["train"].info["index"], b["train"].info["index"])
    assert not np.array_equal(a["train"].info["index"], c["train"].info["index"])
    assert len(a["val"]) == round(0.1 * sum(CIFAR_BATCH_SIZES))

    assert {"cifar10", "stl10"} <= set(available_datasets())
    test = heatlab.data.open(f"cifar10:{tmp_path}", "test")
    assert isinstance(test, NaturalSplit) and len(test) == CIFAR_TEST
    assert torch.equal(test.load_shard(0)["images"], a["test"].load_shard(0)["images"])

    big = cifar10(tmp_path, size=64)["test"]
    shard = big.load_shard(0)["images"]
    assert big.input_shape == (3, 64, 64) and shard.shape == (CIFAR_TEST, 3, 64, 64)
    assert 0.0 <= float(shard.min()) and float(shard.max()) <= 1.0
    for bad in (0, 2.5, True, "32"):
        with pytest.raises(HeatlabError, match="size must be"):
            cifar10(tmp_path, size=bad)


def _broken_cifar(tmp_path: Path, name: str, data: bytes | None) -> Path:
    folder = tmp_path / "broken"
    _write_cifar(folder)
    if data is None:
        (folder / name).unlink()
    else:
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize(
    ("case", "name", "match"),
    [
        ("truncated", "data_batch_3.bin", "multiple of 3073"),
        ("empty", "test_batch.bin", "multiple of 3073"),
        ("label", "data_batch_2.bin", "label 10"),
        ("missing", "data_batch_4.bin", "lacks data_batch_4.bin"),
    ],
)
def test_cifar10_broken_files_name_the_file(tmp_path, case, name, match):
    good = _cifar_bytes(np.zeros((2, 3, 32, 32), np.uint8), np.array([1, 10], np.uint8))
    data = {"truncated": good[:-1], "empty": b"", "label": good, "missing": None}[case]
    folder = _broken_cifar(tmp_path, name, data)
    with pytest.raises(HeatlabError, match=match) as info:
        cifar10(folder)
    assert name in str(info.value)
    if case == "missing":
        assert "data_batch_1.bin" in str(info.value) and "test_batch.bin" in str(info.value)


def test_cifar10_refuses_the_pickled_python_version(tmp_path):
    folder = _broken_cifar(tmp_path, "data_batch_1.bin", None)
    (folder / "data_batch_1").write_bytes(b"\x80\x04\x95 not to be unpickled")
    with pytest.raises(HeatlabError, match="Python version") as info:
        cifar10(folder)
    assert "data_batch_1'" in str(info.value) and "binary version" in str(info.value)
    with pytest.raises(HeatlabError, match="is not a folder"):
        cifar10(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------- STL-10
def test_stl10_transposes_planes_shifts_labels_and_splits(tmp_path):
    written = _write_stl(tmp_path / "stl10_binary")
    splits = stl10(tmp_path, seed=0, val_fraction=0.3, shard_size=3)
    assert len(splits["val"]) == 3 and len(splits["train"]) == STL_TRAIN - 3 and len(splits["test"]) == STL_TEST
    for split in splits.values():
        assert split.input_shape == (3, 96, 96) and split.class_names == list(STL10_CLASSES)
    images, labels = _served(splits["test"])
    assert [round(float(images[0, c, MARK[0], MARK[1]]) * 255) for c in range(3)] == list(MARK_RGB)
    test_x, test_y = written["test"]
    assert torch.equal(images, torch.from_numpy(test_x).float() / 255)
    assert labels.tolist() == (test_y.astype(int) - 1).tolist() and labels[0] == 9
    train_x, train_y = written["train"]
    for s in ("train", "val"):
        idx = splits[s].info["index"]
        images, labels = _served(splits[s])
        assert torch.equal(images, torch.from_numpy(train_x[idx]).float() / 255)
        assert labels.tolist() == (train_y[idx].astype(int) - 1).tolist()
    assert sorted(np.concatenate([splits["train"].info["index"], splits["val"].info["index"]]).tolist()) == list(
        range(STL_TRAIN)
    )
    small = heatlab.data.open(f"stl10:{tmp_path}", "test", size=32)
    assert small.input_shape == (3, 32, 32) and small.load_shard(0)["images"].shape == (STL_TEST, 3, 32, 32)


@pytest.mark.parametrize(
    ("case", "name", "match"),
    [
        ("truncated", "train_X.bin", "multiple of 27648"),
        ("empty", "test_X.bin", "multiple of 27648"),
        ("count", "train_y.bin", "labels but"),
        ("label0", "test_y.bin", "label 0"),
        ("label11", "train_y.bin", "label 11"),
        ("missing", "test_y.bin", "lacks test_y.bin"),
    ],
)
def test_stl10_broken_files_name_the_file(tmp_path, case, name, match):
    written = _write_stl(tmp_path)
    part = name.split("_")[0]
    images, labels = written[part]
    if case == "truncated":
        (tmp_path / name).write_bytes(_stl_bytes(images)[:-1])
    elif case == "empty":
        (tmp_path / name).write_bytes(b"")
    elif case == "count":
        (tmp_path / name).write_bytes(labels[:-1].tobytes())
    elif case.startswith("label"):
        bad = labels.copy()
        bad[-1] = int(case[len("label"):])
        (tmp_path / name).write_bytes(bad.tobytes())
    else:
        (tmp_path / name).unlink()
    with pytest.raises(HeatlabError, match=match) as info:
        stl10(tmp_path)
    assert name in str(info.value)


# -------------------------------------------------------------------------------------- resnet18
def test_resnet18_shapes_heads_and_torchvision_backbone(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model = zoo.create("resnet18", num_classes=10, in_channels=3, seed=0).eval()
    assert model.heatlab_spec["head"] == "torchvision" and "resnet18" in zoo.available()
    assert isinstance(model.fc, torch.nn.Linear) and model.fc.bias is not None
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    for head, kind in (("paper002", torch.nn.Conv2d), ("paper000", torch.nn.Linear)):
        other = zoo.create("resnet18", num_classes=10, seed=0, head=head).eval()
        assert isinstance(other.fc, kind) and (other.fc.bias is None) == (head == "paper000")
        with torch.no_grad():
            assert other(x).shape == (2, 10)
    with pytest.raises(HeatlabError, match="no head"):
        zoo.create("resnet18", num_classes=10, head="vit")

    torch.manual_seed(5)
    ref = torchvision.models.resnet18(num_classes=1000)
    with torch.no_grad():
        ref.bn1.running_mean.uniform_(-1, 1)
    path = tmp_path / "resnet18.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    loaded = zoo.create("resnet18", num_classes=10, seed=1, backbone_weights=path)
    mine, theirs = loaded.state_dict(), ref.state_dict()
    for key in ("conv1.weight", "layer4.1.conv2.weight", "bn1.running_mean", "layer2.0.downsample.0.weight"):
        assert torch.equal(mine[key], theirs[key]), key
    assert set(mine) == set(theirs)  # the same names as torchvision's, head included
    assert mine["fc.weight"].shape == (10, 512)
    fresh = zoo.create("resnet18", num_classes=10, seed=1)
    assert torch.equal(mine["fc.weight"], fresh.state_dict()["fc.weight"])  # the head is not loaded
