"""Sharded cell storage: round trip, determinism, resume/repair, atomicity, Dataset and sampler."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from heatlab.data import cells, shards
from heatlab.data.shards import CellSplit, open_split, parse_shards, verify, write_cells
from heatlab.seeds import derive_seed
from heatlab.errors import HeatlabError
from safetensors.torch import load_file

SIZE = max(48, cells.MIN_SIZE)
SHARD_SIZE = 20
SPLITS = {"train": 3, "val": 1, "test": 1}
SETTINGS = dict(size=SIZE, seed=7, shards=SPLITS, shard_size=SHARD_SIZE)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cells") / "data"
    write_cells(root, **SETTINGS)
    return root


@pytest.fixture
def copy(dataset, tmp_path) -> Path:
    """A private copy of the module dataset, free to damage."""
    return Path(shutil.copytree(dataset, tmp_path / "data"))


def test_round_trip_matches_generator(dataset):
    ds = open_split(dataset, "train")
    assert (len(ds), ds.num_shards, ds.size, ds.class_names) == (3 * SHARD_SIZE, 3, SIZE, list(cells.CLASS_NAMES))
    k = 1
    ref = cells.generate(SHARD_SIZE, size=SIZE, seed=derive_seed(7, "train", k))
    shard = ds.load_shard(k)
    assert shard["images"].dtype == torch.float32 and shard["images"].shape == (SHARD_SIZE, 3, SIZE, SIZE)
    assert (shard["images"] - ref.images).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal(shard["truth"], ref.truth.float())
    assert torch.equal(shard["labels"], ref.labels)
    assert torch.equal(shard["backgrounds"], ref.backgrounds)
    item = ds[k * SHARD_SIZE + 3]
    assert (item["shard"], item["index"]) == (k, 3)
    assert torch.equal(item["image"], shard["images"][3]) and torch.equal(item["truth"], shard["truth"][3])
    assert item["label"].dtype == torch.int64 and item["label"].ndim == 0 and int(item["label"]) == int(ref.labels[3])
    assert int(item["background"]) == int(ref.backgrounds[3])
    assert torch.equal(ds[-1]["image"], ds[len(ds) - 1]["image"])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_same_seed_gives_same_bytes(dataset, tmp_path):
    other = tmp_path / "again"
    write_cells(other, **SETTINGS)
    assert _files(other) == _files(dataset)
    write_cells(tmp_path / "seed8", **{**SETTINGS, "seed": 8})
    assert (tmp_path / "seed8" / "manifest.json").read_bytes() != (dataset / "manifest.json").read_bytes()


def test_shards_are_independent_and_balanced(dataset):
    ds = open_split(dataset, "train")
    manifest = shards.read_json(dataset / "manifest.json")
    assert manifest == write_cells(dataset, **SETTINGS)  # a complete folder: verified, returned, unchanged
    assert manifest["splits"]["train"]["count"] == 3 * SHARD_SIZE and manifest["settings"]["seed"] == 7
    labels = [ds.load_shard(k)["labels"] for k in range(ds.num_shards)]
    assert not torch.equal(ds.load_shard(0)["images"], ds.load_shard(1)["images"])
    for k, lab in enumerate(labels):
        counts = torch.bincount(lab, minlength=10)
        assert counts.tolist() == [SHARD_SIZE // 10] * 10
        assert manifest["splits"]["train"]["shards"][k]["class_counts"] == counts.tolist()
        assert manifest["splits"]["train"]["shards"][k]["count"] == SHARD_SIZE


def test_corrupt_shard_is_named_and_repaired(copy, dataset):
    target = copy / "train" / "shard-00001.safetensors"
    data = bytearray(target.read_bytes())
    data[-5] ^= 0xFF  # a pixel byte: the header still parses, only the hash can tell
    target.write_bytes(bytes(data))
    assert verify(copy) == ["train/shard-00001.safetensors"]
    with pytest.raises(HeatlabError, match="shard-00001.*--repair"):
        write_cells(copy, **SETTINGS)
    write_cells(copy, **SETTINGS, repair=True)
    assert verify(copy) == []
    assert _files(copy) == _files(dataset)


def test_deleted_shard_is_regenerated_with_same_bytes(copy, dataset):
    (copy / "val" / "shard-00000.safetensors").unlink()
    assert verify(copy) == ["val/shard-00000.safetensors"]
    calls = []
    write_cells(copy, **SETTINGS, progress=lambda task, done, total: calls.append((task, done, total)))
    assert _files(copy) == _files(dataset)
    assert calls == [("cells", i, 5) for i in range(1, 6)]


def test_failure_mid_run_leaves_no_temp_files_and_resumes(tmp_path, dataset, monkeypatch):
    real, count = cells.generate, {"n": 0}

    def flaky(*args, **kwargs):
        count["n"] += 1
        if count["n"] == 3:
            raise KeyboardInterrupt  # like a user pressing Ctrl-C while shard 3 is generated
        return real(*args, **kwargs)

    root = tmp_path / "data"
    monkeypatch.setattr(cells, "generate", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_cells(root, **SETTINGS)
    assert not list(root.rglob("*.tmp"))
    assert not (root / "manifest.json").exists()
    assert sorted(p.name for p in (root / "train").iterdir()) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    monkeypatch.setattr(cells, "generate", real)
    write_cells(root, **SETTINGS)
    assert _files(root) == _files(dataset)


def test_failure_during_save_leaves_no_temp_file(tmp_path, monkeypatch):
    def broken_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(shards, "save_file", broken_save)
    with pytest.raises(OSError):
        write_cells(tmp_path / "d", size=SIZE, shards={"train": 1}, shard_size=10)
    assert [p.name for p in (tmp_path / "d").rglob("*") if p.is_file()] == []


def test_unrecorded_shard_from_killed_run_is_rewritten(copy, dataset):
    # A run killed after renaming a shard but before recording it leaves a shard with no record.
    (copy / "manifest.json").unlink()
    (copy / "test" / "shard-00000.safetensors").write_bytes(b"not a shard")
    write_cells(copy, **SETTINGS)
    assert _files(copy) == _files(dataset)


def test_growing_a_split_keeps_existing_shards(copy, dataset):
    write_cells(copy, **{**SETTINGS, "shards": {**SPLITS, "val": 2}})
    assert open_split(copy, "val").num_shards == 2
    name = "train/shard-00000.safetensors"
    assert (copy / name).read_bytes() == (dataset / name).read_bytes()
    write_cells(copy, **SETTINGS)
    assert (copy / "manifest.json").read_bytes() == (dataset / "manifest.json").read_bytes()


def test_different_settings_in_same_folder_raise(copy):
    with pytest.raises(HeatlabError, match="different settings.*another output folder"):
        write_cells(copy, **{**SETTINGS, "seed": 8})


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(shard_size=0),
        dict(size=cells.MIN_SIZE - 1),
        dict(shards={"train": -1}),
        dict(shards={"train": 0}),
        dict(size=100_000),  # would need 186 GiB for one cell: an allocator error before
        dict(size=2048, shard_size=200),
        dict(shards={"bogus": 1}),
        dict(shards={}),
        dict(seed="0"),
    ],
)
def test_bad_arguments_create_nothing(tmp_path, kwargs):
    out = tmp_path / "new"
    with pytest.raises(HeatlabError):
        write_cells(out, **{**dict(size=SIZE, shards={"train": 1}, shard_size=10), **kwargs})
    assert not out.exists()


def test_a_shard_too_big_for_memory_names_a_shard_size_that_fits(tmp_path):
    with pytest.raises(HeatlabError, match=r"200 cells at 2048 px needs about 16 GiB.*pass --shard-size 51\."):
        write_cells(tmp_path / "big", size=2048, shards={"train": 1}, shard_size=200)
    assert shards.SHARD_MEMORY_LIMIT // (5 * 2048 * 2048 * 4) == 51  # 51 fit, 52 do not
    shards._check_memory(2048, 51)
    with pytest.raises(HeatlabError):
        shards._check_memory(2048, 52)


def test_output_path_that_is_a_file_raises(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(HeatlabError, match="is a file"):
        write_cells(tmp_path / "f", size=SIZE, shards={"train": 1}, shard_size=10)


def test_parse_shards():
    assert parse_shards("train=32,val=8,test=8") == {"train": 32, "val": 8, "test": 8}
    assert parse_shards(" train = 2 , test=1") == {"train": 2, "test": 1}


@pytest.mark.parametrize("text", ["", "train", "train=", "train=-1", "train=0", "train=x", "foo=3", "train=1,train=2",
                                  "train=1,"])
def test_parse_shards_rejects_bad_text(text):
    with pytest.raises(HeatlabError):
        parse_shards(text)


def test_sampler_visits_each_index_once_shard_by_shard(dataset):
    ds = open_split(dataset, "train")
    sampler = ds.shard_order_sampler(seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(len(ds))) and len(sampler) == len(ds)
    shard_seq = [ds.locate(i)[0] for i in order]
    runs = [s for i, s in enumerate(shard_seq) if i == 0 or s != shard_seq[i - 1]]
    assert sorted(runs) == list(range(ds.num_shards))  # each shard is one contiguous run
    assert order != list(range(len(ds)))
    assert list(ds.shard_order_sampler(seed=3)) == order
    sampler.set_epoch(1)
    assert list(sampler) != order
    assert list(ds.shard_order_sampler(shuffle=False)) == list(range(len(ds)))


def test_dataloader_with_sampler_decodes_each_shard_once(dataset, monkeypatch):
    loads = []
    real = shards.load
    monkeypatch.setattr(shards, "load", lambda data: loads.append(len(data)) or real(data))
    ds = open_split(dataset, "train")
    loader = torch.utils.data.DataLoader(ds, batch_size=8, sampler=ds.shard_order_sampler(seed=0))
    seen = 0
    for batch in loader:
        assert batch["image"].shape[1:] == (3, SIZE, SIZE) and batch["label"].dtype == torch.int64
        seen += len(batch["label"])
    assert seen == len(ds)
    assert len(loads) == ds.num_shards
    assert len(ds._cache) <= 2


def test_cellsplit_bad_folders(tmp_path, copy):
    with pytest.raises(HeatlabError, match="does not exist"):
        CellSplit(tmp_path / "missing", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HeatlabError, match="manifest.json"):
        CellSplit(tmp_path / "empty", "train")
    with pytest.raises(HeatlabError, match="'holdout'"):
        CellSplit(copy, "holdout")
    with pytest.raises(HeatlabError, match="leave 'val' out of --shards"):
        write_cells(tmp_path / "zero", size=SIZE, shards={"train": 1, "val": 0}, shard_size=10)
    assert not (tmp_path / "zero").exists()
    write_cells(tmp_path / "novel", size=SIZE, shards={"train": 1}, shard_size=10)
    with pytest.raises(HeatlabError, match="Split 'val' is not in .*; choose one of train"):
        CellSplit(tmp_path / "novel", "val")


def _rehash(root: Path, split: str, k: int) -> None:
    """Record the shard's current sha256 in the manifest (a consistent but wrong shard)."""
    manifest = shards.read_json(root / "manifest.json")
    manifest["splits"][split]["shards"][k]["sha256"] = shards.sha256_file(root / split / shards.shard_file(k))
    shards.write_json(root / "manifest.json", manifest)


def test_cellsplit_detects_damaged_shards(copy):
    (copy / "train" / "shard-00000.safetensors").write_bytes(b"\x00" * 40)
    (copy / "train" / "shard-00002.safetensors").unlink()
    shutil.copy(copy / "test" / "shard-00000.safetensors", copy / "train" / "shard-00001.safetensors")
    ds = open_split(copy, "train")
    with pytest.raises(HeatlabError, match="shard-00000.*does not match the sha256"):
        ds[0]
    _rehash(copy, "train", 0)
    with pytest.raises(HeatlabError, match="shard-00000.*unreadable"):
        open_split(copy, "train")[0]
    with pytest.raises(HeatlabError, match="shard-00002.*missing"):
        ds.load_shard(2)
    raw = load_file(copy / "train" / "shard-00001.safetensors")
    raw["truth"][0, 0, 0] = 7
    shards.save_file(raw, copy / "train" / "shard-00001.safetensors")
    _rehash(copy, "train", 1)
    with pytest.raises(HeatlabError, match="shard-00001.*codes other than"):
        open_split(copy, "train")[SHARD_SIZE]
    manifest = shards.read_json(copy / "manifest.json")
    manifest["splits"]["train"]["shards"][1]["count"] = SHARD_SIZE - 1
    shards.write_json(copy / "manifest.json", manifest)
    with pytest.raises(HeatlabError, match="shard-00001.*does not match"):
        open_split(copy, "train").load_shard(1)
    with pytest.raises(HeatlabError):
        ds.load_shard(3)


def test_a_changed_shard_is_never_trained_on(copy, tmp_path):
    """One pixel byte changed, the file still valid safetensors: training stops with the sha256 sentence."""
    from heatlab.models.training import TrainConfig
    from heatlab.run.training import train_run

    path = copy / "train" / "shard-00001.safetensors"
    raw = load_file(path)
    raw["images"][0, 0, 0, 0] ^= 1
    shards.save_file(raw, path)
    with pytest.raises(HeatlabError, match=r"shard-00001.safetensors' does not match the sha256 in its manifest"):
        train_run(copy, tmp_path / "run", TrainConfig(epochs=1, branches=0, batch_size=10))


@pytest.mark.parametrize("damage", [
    lambda m: m.pop("settings"),
    lambda m: m.pop("splits"),
    lambda m: m["settings"].pop("class_names"),
    lambda m: m["splits"]["train"]["shards"][0].pop("sha256"),
    lambda m: m["splits"]["train"]["shards"][0].update(count="ten"),
    lambda m: m["splits"].update({"../../x": m["splits"]["train"]}),
])
def test_a_damaged_manifest_is_one_sentence(copy, damage):
    manifest = shards.read_json(copy / "manifest.json")
    damage(manifest)
    shards.write_json(copy / "manifest.json", manifest)
    with pytest.raises(HeatlabError, match="manifest.json' is damaged"):
        open_split(copy, "train")


def test_preview_figure(dataset, tmp_path):
    from heatlab.report.preview import preview_figure

    png = preview_figure(dataset, tmp_path / "fig" / "preview.png")
    with Image.open(png) as im:
        width, height = im.size
    assert 800 <= width <= 4000 and 500 <= height <= 3000 and width > height
    assert not list((tmp_path / "fig").glob("*.tmp"))


def test_preview_generates_missing_combinations(tmp_path, monkeypatch):
    from heatlab.report import preview

    root = tmp_path / "tiny"
    write_cells(root, size=SIZE, shards={"val": 1}, shard_size=10)  # at most 10 of the 30 pairs
    calls = []
    real = cells.generate
    monkeypatch.setattr(cells, "generate", lambda *a, **k: calls.append(k) or real(*a, **k))
    png = preview.preview_figure(root, tmp_path / "p.png", split="val")
    assert png.is_file() and 20 <= len(calls) <= 30
    assert all(len(k["classes"]) == 1 and len(k["backgrounds"]) == 1 and k["size"] == SIZE for k in calls)


def test_a_shard_is_hashed_once_per_file_state_and_a_later_change_is_still_caught(copy, monkeypatch):
    import hashlib

    hashed = []

    class Counting:
        @staticmethod
        def sha256(data):
            hashed.append(len(data))
            return hashlib.sha256(data)

    monkeypatch.setattr(shards, "hashlib", Counting)
    ds = CellSplit(copy, "train")
    for _ in range(3):
        ds._cache.clear()
        ds.load_shard(0)
    assert len(hashed) == 1  # unchanged file: verified once, read three times
    path = copy / "train" / "shard-00000.safetensors"
    raw = load_file(path)
    raw["images"][0, 0, 0, 0] ^= 1
    shards.save_file(raw, path)  # a new file state (mtime), same manifest
    ds._cache.clear()
    with pytest.raises(HeatlabError, match="does not match the sha256 in its manifest"):
        ds.load_shard(0)
