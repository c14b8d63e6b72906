"""Digit datasets: the IDX reader on tiny written files (good and broken), MNIST splits, sklearn digits."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from heatlab.data import open_data
from heatlab.data.digits import MASK_THRESHOLD, DigitSplit, digits, fashion_mnist, mnist, read_idx
from heatlab.data.registry import available_datasets, open_splits
from heatlab.data.split import ArraySplit, iter_shards
from heatlab.errors import HeatlabError


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, data: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def _write_set(folder: Path, *, gz: bool, n_train: int = 20, n_test: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        _write(folder / name, _idx_bytes(array, 2051 if array.ndim == 3 else 2049), gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_good_files(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1, 0], dtype=np.uint8)
    p_img = _write(tmp_path / "img", _idx_bytes(images, 2051), gz)
    p_lab = _write(tmp_path / "lab", _idx_bytes(labels, 2049), gz)
    assert np.array_equal(read_idx(p_img, "images"), images)
    assert np.array_equal(read_idx(p_lab, "labels"), labels)
    assert read_idx(p_lab).dtype == np.uint8


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_broken_files_name_the_file(tmp_path, gz):
    images = np.zeros((2, 3, 4), dtype=np.uint8)
    good = _idx_bytes(images, 2051)
    cases = {
        "wrong_magic": _idx_bytes(images, 2049)[:4] + good[4:],
        "truncated": good[:-1],
        "too_long": good + b"\x00",
        "cut_header": good[:9],
        "tiny": b"\x00\x00",
    }
    for name, data in cases.items():
        path = _write(tmp_path / name, data, gz)
        with pytest.raises(HeatlabError) as info:
            read_idx(path, "images")
        assert str(path) in str(info.value), name
    with pytest.raises(HeatlabError, match="magic number 2051"):
        read_idx(_write(tmp_path / "labels_as_images", good, gz), "labels")


def test_read_idx_damaged_gzip_and_missing(tmp_path):
    data = gzip.compress(_idx_bytes(np.zeros((5, 28, 28), np.uint8), 2051))
    path = tmp_path / "cut.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(HeatlabError, match="cut.gz"):
        read_idx(path, "images")
    with pytest.raises(HeatlabError, match="does not exist"):
        read_idx(tmp_path / "nope", "images")


def _peak_bytes(fn) -> int:
    """Peak Python-heap bytes (tracemalloc; numpy and zlib buffers are traced) while ``fn`` runs."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    except HeatlabError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    """A header announcing 24 bytes followed by 64 MiB of zeros (64 KiB compressed), and a header
    announcing 3.6 GB in a file of a few dozen bytes: both refused, memory staying under 1 MiB."""
    small = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(bomb, "wb") as fh:
        fh.write(_idx_bytes(small, 2051))
        for _ in range(64):
            fh.write(bytes(1 << 20))
    with pytest.raises(HeatlabError, match="bomb-idx3-ubyte.gz' holds more than 40 bytes .* too long"):
        read_idx(bomb, "images")
    assert _peak_bytes(lambda: read_idx(bomb, "images")) < 1 << 20
    claims = tmp_path / "claims-idx3-ubyte.gz"
    claims.write_bytes(gzip.compress(_idx_bytes(np.zeros((0, 0, 0), np.uint8), 2051)[:4]
                                     + b"".join(d.to_bytes(4, "big") for d in (1, 60_000, 60_000)) + bytes(100)))
    with pytest.raises(HeatlabError, match=r"announces \(1, 60000, 60000\) .* more than its \d+ compressed bytes can hold"):
        read_idx(claims, "images")
    assert _peak_bytes(lambda: read_idx(claims, "images")) < 1 << 20


def test_idx_images_of_zero_pixels_are_refused(tmp_path):
    arrays = _write_set(tmp_path / "m", gz=False)
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (tmp_path / "m" / name).write_bytes(_idx_bytes(np.zeros((len(arrays[name]), 0, 0), np.uint8), 2051))
    with pytest.raises(HeatlabError, match="train-images-idx3-ubyte' holds images of 0×0 pixels"):
        mnist(tmp_path / "m")


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_splits(tmp_path, gz):
    arrays = _write_set(tmp_path / "mnist", gz=gz)
    splits = mnist(tmp_path / "mnist", shard_size=8)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [18, 2, 6]  # val: round(0.1 * 20)
    for split in splits.values():
        assert isinstance(split, ArraySplit) and isinstance(split, DigitSplit)
        assert split.input_shape == (1, 28, 28) and split.truth_kind == "mask" and split.input_kind == "image"
        assert split.class_names == [str(d) for d in range(10)]
    test = splits["test"].load_shard(0)
    assert test["images"].dtype == torch.float32 and test["images"].shape == (6, 1, 28, 28)
    expected = torch.from_numpy(arrays["t10k-images-idx3-ubyte"].astype(np.float32) / 255)[:, None]
    torch.testing.assert_close(test["images"], expected)
    assert torch.equal(test["labels"], torch.from_numpy(arrays["t10k-labels-idx1-ubyte"].astype(np.int64)))
    assert torch.equal(test["truth"], (expected[:, 0] > MASK_THRESHOLD).float())
    # train and val partition the training file; the stored order is its seeded permutation
    index = np.concatenate([splits["train"].info["index"], splits["val"].info["index"]])
    assert sorted(index.tolist()) == list(range(20))
    train_images = torch.cat([shard["images"] for _, shard in iter_shards(splits["train"])])
    first = splits["train"].info["index"][0]
    torch.testing.assert_close(train_images[0, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"][first] / 255).float())


def test_mnist_seed_size_and_options(tmp_path):
    _write_set(tmp_path / "m", gz=True)
    a, b = mnist(tmp_path / "m", seed=1), mnist(tmp_path / "m", seed=1)
    assert np.array_equal(a["val"].info["index"], b["val"].info["index"])
    assert torch.equal(a["train"].load_shard(0)["images"], b["train"].load_shard(0)["images"])
    c = mnist(tmp_path / "m", seed=2)
    assert not np.array_equal(a["train"].info["index"], c["train"].info["index"])
    assert len(mnist(tmp_path / "m", val_fraction=0.25)["val"]) == 5
    big = mnist(tmp_path / "m", size=140)["test"]
    shard = big.load_shard(0)
    assert big.input_shape == (1, 140, 140) and shard["images"].shape == (6, 1, 140, 140)
    assert shard["truth"].shape == (6, 140, 140)
    assert 0 <= shard["images"].min() and shard["images"].max() <= 1
    assert torch.equal(shard["truth"], (shard["images"][:, 0] > 0.5).float())
    fashion = fashion_mnist(tmp_path / "m")["test"]
    assert fashion.class_names[0] == "T-shirt/top" and len(fashion.class_names) == 10


def test_mnist_through_the_registry(tmp_path):
    _write_set(tmp_path / "m", gz=False)
    assert {"mnist", "fashion_mnist", "digits"} <= set(available_datasets())
    splits = open_splits(f"mnist:{tmp_path / 'm'}", shard_size=4)
    assert splits["train"].num_shards == 5
    assert len(open_data(f"fashion_mnist:{tmp_path / 'm'}", "test")) == 6
    with pytest.raises(HeatlabError, match="mnist:PATH"):
        open_data("mnist", "test")
    with pytest.raises(HeatlabError, match="does not apply"):
        open_data(f"mnist:{tmp_path / 'm'}", "test", colour=True)


def test_mnist_folder_problems(tmp_path):
    with pytest.raises(HeatlabError, match="not a folder"):
        mnist(tmp_path / "absent")
    folder = tmp_path / "partial"
    _write_set(folder, gz=False)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(HeatlabError, match="t10k-labels-idx1-ubyte"):
        mnist(folder)
    bad = tmp_path / "mismatch"
    _write_set(bad, gz=False)
    (bad / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(5, np.uint8), 2049))
    with pytest.raises(HeatlabError, match="6 images"):
        mnist(bad)
    broken = tmp_path / "broken"
    _write_set(broken, gz=False)
    path = broken / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(HeatlabError, match="train-images-idx3-ubyte"):
        mnist(broken)
    with pytest.raises(HeatlabError):
        mnist(folder.parent / "mismatch", val_fraction=1.5)
    with pytest.raises(HeatlabError):
        mnist(folder.parent / "mismatch", size=0)


def test_sklearn_digits():
    splits = digits()
    sizes = {s: len(v) for s, v in splits.items()}
    assert sizes == {"train": 1079, "val": 359, "test": 359}
    index = np.concatenate([splits[s].info["index"] for s in ("train", "val", "test")])
    assert sorted(index.tolist()) == list(range(1797))
    shard = splits["test"].load_shard(0)
    images, truth = shard["images"], shard["truth"]
    assert images.shape == (359, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and images.max() > 0.9
    assert truth.shape == (359, 28, 28) and set(truth.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(truth, (images[:, 0] > 0.5).float())
    assert 0.1 < truth.mean() < 0.6  # the digit's strokes, not the whole image
    assert shard["labels"].dtype == torch.int64 and shard["labels"].max() <= 9


def test_sklearn_digits_is_seeded_and_resizable():
    a, b, c = digits(seed=4)["val"], digits(seed=4)["val"], digits(seed=5)["val"]
    assert torch.equal(a.load_shard(0)["images"], b.load_shard(0)["images"])
    assert not np.array_equal(a.info["index"], c.info["index"])
    big = open_data("digits", "train", size=140, shard_size=100)
    shard = big.load_shard(0)
    assert big.input_shape == (1, 140, 140) and shard["images"].shape == (100, 1, 140, 140)
    assert big.num_shards == 11
    with pytest.raises(HeatlabError, match="takes no path"):
        open_data("digits:/tmp", "train")
