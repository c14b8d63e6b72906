"""Sharded on-disk storage of the synthetic cell dataset (paper 002, §III-A) and a Dataset over it.

Layout written by :func:`write_cells`::

    out/manifest.json                       {"format_version", "settings", "splits": {split: {"count",
                                            "shards": [{file, count, sha256, class_counts, seed}]}}}
    out/<split>/shard-00000.safetensors     images uint8 N×3×S×S, truth uint8 N×S×S (band codes),
                                            labels int64 N, backgrounds int64 N

Stored images are quantised to 1/255 (``round(x·255)``), so a decoded image differs from the
generator's float image by at most 0.5/255; the ground truth is stored as band codes 0, 1, 2 and
decodes exactly to 0, 0.4, 0.9. Shard ``k`` of split ``s`` is generated from its own seed,
derived from ``(seed, s, k)``, so any shard can be regenerated alone with the same bytes.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file
from torch.utils.data import Dataset, Sampler

import heatlab
from heatlab.data import cells
from heatlab.data.split import TRUTH_LEVELS
from heatlab.errors import HeatlabError
from heatlab.files import atomic_path, ensure_dir, read_json, sha256_file, write_json
from heatlab.progress import Progress, report
from heatlab.seeds import derive_seed

DEFAULT_SHARDS = {"train": 32, "val": 8, "test": 8}
DEFAULT_SHARD_SIZE = 200
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Written after every new shard until manifest.json exists, so a killed run can verify on restart.
PARTIAL = ".manifest.partial.json"
_TENSOR_KEYS = ("images", "labels", "truth", "backgrounds")



def shard_file(k: int) -> str:
    """File name of shard ``k`` inside its split folder."""
    return f"shard-{k:05d}.safetensors"


def parse_shards(text: str) -> dict[str, int]:
    """Parse ``"train=32,val=8,test=8"`` into ``{"train": 32, "val": 8, "test": 8}``."""
    result: dict[str, int] = {}
    for part in str(text).split(","):
        name, sep, count = (s.strip() for s in part.partition("="))
        if not sep or not name or not count.isdigit():
            raise HeatlabError(f"Cannot read shard counts '{text}'; write them like 'train=32,val=8,test=8'.")
        if name in result:
            raise HeatlabError(f"Split '{name}' appears twice in '{text}'; give each split once.")
        result[name] = int(count)
    return _check_shards(result)


def _check_shards(shards: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(shards, Mapping) or not shards:
        raise HeatlabError("Shard counts must name at least one split; pass e.g. --shards train=32,val=8,test=8.")
    for name, count in shards.items():
        if name not in DEFAULT_SHARDS:
            raise HeatlabError(f"Unknown split '{name}'; use only {', '.join(DEFAULT_SHARDS)}.")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise HeatlabError(f"Shard count for '{name}' must be a whole number >= 1, got {count!r}; "
                               f"leave '{name}' out of --shards to write no {name} split.")
    return dict(shards)


def _check_int(name: str, value: object, minimum: int, flag: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise HeatlabError(f"{name} must be a whole number >= {minimum}, got {value!r}; pass {flag}.")
    return value


#: Memory one shard may take while it is generated (float32 images, truth and intermediates).
SHARD_MEMORY_LIMIT = 4 << 30


def _check_memory(size: int, shard_size: int) -> None:
    """One sentence instead of an allocator error when a shard of ``shard_size`` cells at ``size`` px cannot fit."""
    need = shard_size * 5 * size * size * 4  # 3 image channels, truth and one working copy, float32
    if need > SHARD_MEMORY_LIMIT:
        fit = max(1, SHARD_MEMORY_LIMIT // (5 * size * size * 4))
        fix = f"--shard-size {fit}" if fit >= 8 else "a smaller --size (the paper's is 512)"
        raise HeatlabError(f"A shard of {shard_size} cells at {size} px needs about {need / 2**30:.0f} GiB while it is "
                           f"generated (at most {SHARD_MEMORY_LIMIT >> 30} GiB); pass {fix}.")


def _settings(size: int, seed: int, shard_size: int) -> dict:
    return {
        "size": size,
        "seed": seed,
        "shard_size": shard_size,
        "class_names": list(cells.CLASS_NAMES),
        "background_names": list(cells.BACKGROUND_NAMES),
        "heatlab_version": heatlab.__version__,
        "generator_version": cells.GENERATOR_VERSION,
    }


def _encode(batch: "cells.CellBatch") -> dict[str, torch.Tensor]:
    """Generator batch -> storage tensors (uint8 images and band codes, int64 labels)."""
    images = (batch.images.float() * 255).round().clamp_(0, 255).to(torch.uint8)
    levels = torch.tensor(TRUTH_LEVELS, dtype=torch.float32)
    codes = (batch.truth.float().unsqueeze(-1) - levels).abs().argmin(-1).to(torch.uint8)
    if not torch.equal(levels[codes.long()], batch.truth.float()):
        raise RuntimeError("cells.generate returned ground truth outside {0, 0.4, 0.9}.")
    return {
        "images": images.contiguous(),
        "truth": codes.contiguous(),
        "labels": batch.labels.to(torch.int64).contiguous(),
        "backgrounds": batch.backgrounds.to(torch.int64).contiguous(),
    }


def _decode(raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Storage tensors -> float32 images N×3×S×S in [0,1], float32 truth N×S×S, int64 labels."""
    levels = torch.tensor(TRUTH_LEVELS, dtype=torch.float32)
    return {
        "images": raw["images"].to(torch.float32) / 255,
        "truth": levels[raw["truth"].long()],
        "labels": raw["labels"].clone(),
        "backgrounds": raw["backgrounds"].clone(),
    }


def _write_shard(path: Path, *, split: str, k: int, settings: dict) -> dict:
    """Generate shard ``k`` of ``split``, write it atomically, and return its manifest entry."""
    seed = derive_seed(settings["seed"], split, k)
    batch = cells.generate(settings["shard_size"], size=settings["size"], seed=seed)
    tensors = _encode(batch)
    # One metadata key: safetensors stores metadata in a hash map, so several keys come out in random order.
    info = {"split": split, "shard": k, "seed": seed, "format_version": FORMAT_VERSION}
    meta = {"heatlab": json.dumps(info, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=meta)
    counts = torch.bincount(tensors["labels"], minlength=len(settings["class_names"]))
    return {
        "file": path.name,
        "count": int(tensors["labels"].numel()),
        "sha256": sha256_file(path),
        "class_counts": counts.tolist(),
        "seed": seed,
    }


def _hash_ok(path: Path, sha: str) -> bool:
    try:
        return sha256_file(path) == sha
    except OSError:
        return False


def _check_same_settings(path: Path, record: dict, settings: dict) -> None:
    old = record.get("settings") if isinstance(record, dict) else None
    if old != settings:
        diffs = [k for k in settings if not isinstance(old, dict) or old.get(k) != settings[k]] or ["format"]
        raise HeatlabError(
            f"'{path.parent}' already holds a cell dataset with different settings ({', '.join(diffs)}); "
            "choose another output folder."
        )


def _known_entries(out: Path, settings: dict) -> dict[str, dict]:
    """Entries (keyed "split/file") from an existing manifest and/or the partial record of a killed run."""
    known: dict[str, dict] = {}
    for name in (MANIFEST, PARTIAL):
        path = out / name
        if path.exists():
            record = read_json(path)
            _check_same_settings(path, record, settings)
            if name == MANIFEST:
                for split, info in record["splits"].items():
                    known.update({f"{split}/{e['file']}": e for e in info["shards"]})
            else:
                known.update(record["shards"])
    return known


def write_cells(
    out: str | os.PathLike,
    *,
    size: int = 128,
    seed: int = 0,
    shards: Mapping[str, int] = DEFAULT_SHARDS,
    shard_size: int = DEFAULT_SHARD_SIZE,
    repair: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Write (or complete) the sharded cell dataset in ``out`` and return its manifest.

    Existing shards are checked against the recorded sha256 and kept; missing ones are generated.
    A corrupt shard raises HeatlabError unless ``repair`` is true, in which case it is regenerated.
    ``progress("cells", done_shards, total_shards)`` is called after each shard. Stored images are
    quantised to 1/255. Shard counts may grow or shrink between runs with the same settings.
    """
    shards = _check_shards(shards)
    _check_int("Shard size", shard_size, 1, "--shard-size 200")
    _check_int("Image size", size, cells.MIN_SIZE, f"--size {max(128, cells.MIN_SIZE)}")
    _check_memory(size, shard_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise HeatlabError(f"Seed must be a whole number, got {seed!r}; pass --seed 0.")
    out = ensure_dir(out)
    settings = _settings(size, seed, shard_size)
    known = _known_entries(out, settings)
    total, done = sum(shards.values()), 0
    splits: dict[str, list[dict]] = {}
    for split, count in shards.items():
        splits[split] = []
        for k in range(count):
            key = f"{split}/{shard_file(k)}"
            path = out / split / shard_file(k)
            entry = known.get(key)
            if entry is not None and path.exists() and _hash_ok(path, entry["sha256"]):
                pass  # complete and valid: keep it
            elif entry is not None and path.exists() and not repair:
                raise HeatlabError(
                    f"Shard '{path}' is corrupt (its sha256 does not match the record); "
                    "run again with --repair to regenerate it."
                )
            else:
                # Missing, corrupt with repair, or written by a run killed before recording it.
                entry = _write_shard(path, split=split, k=k, settings=settings)
                known[key] = entry
                write_json(out / PARTIAL, {"settings": settings, "shards": known})
            splits[split].append(entry)
            done += 1
            report(progress, "cells", done, total)
    manifest = {
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "splits": {s: {"count": sum(e["count"] for e in entries), "shards": entries} for s, entries in splits.items()},
    }
    if not (out / MANIFEST).exists() or read_json(out / MANIFEST) != manifest:
        write_json(out / MANIFEST, manifest)
    (out / PARTIAL).unlink(missing_ok=True)
    return manifest


def _read_manifest(root: str | os.PathLike) -> tuple[Path, dict]:
    root = Path(root)
    if not root.is_dir():
        raise HeatlabError(f"Data folder '{root}' does not exist; write the dataset there first (write_cells).")
    if not (root / MANIFEST).is_file():
        raise HeatlabError(f"'{root}' has no {MANIFEST}; write the dataset there first (write_cells).")
    manifest = read_json(root / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise HeatlabError(
            f"'{root / MANIFEST}' is not a cell-shard manifest of format {FORMAT_VERSION}; write the dataset again."
        )
    problem = _manifest_problem(manifest)
    if problem:
        raise HeatlabError(f"'{root / MANIFEST}' is damaged ({problem}); write the dataset again with "
                           "`heatlab data cells` into a new folder.")
    return root, manifest


def _manifest_problem(manifest: dict) -> str:
    """What is wrong with a manifest's fields ("" when nothing): every field the readers use is checked."""
    settings, splits = manifest.get("settings"), manifest.get("splits")
    if not isinstance(settings, dict):
        return "no settings"
    for key, kind in (("size", int), ("class_names", list), ("background_names", list)):
        if not isinstance(settings.get(key), kind) or isinstance(settings.get(key), bool):
            return f"settings.{key} is missing or not a {kind.__name__}"
    if not isinstance(splits, dict) or not splits:
        return "no splits"
    for split, info in splits.items():
        if split not in DEFAULT_SHARDS:
            return f"split name {split!r} is not one of {', '.join(DEFAULT_SHARDS)}"
        shards = info.get("shards") if isinstance(info, dict) else None
        if not isinstance(shards, list):
            return f"split {split} lists no shards"
        for i, e in enumerate(shards):
            ok = (isinstance(e, dict) and e.get("file") == shard_file(i) and isinstance(e.get("sha256"), str)
                  and isinstance(e.get("count"), int) and not isinstance(e.get("count"), bool) and e["count"] >= 1)
            if not ok:
                return f"shard {i} of split {split} lacks a valid file, count or sha256"
    return ""


def split_names(root: str | os.PathLike) -> list[str]:
    """Splits of the dataset at ``root`` that hold at least one shard (train, val, test order)."""
    _, manifest = _read_manifest(root)
    present = {s for s, info in manifest["splits"].items() if info["shards"]}
    return [s for s in DEFAULT_SHARDS if s in present]


def verify(root: str | os.PathLike) -> list[str]:
    """Names ("split/shard-00000.safetensors") of missing or corrupt shards; [] when all match."""
    root, manifest = _read_manifest(root)
    bad = []
    for split, info in manifest["splits"].items():
        for e in info["shards"]:
            path = root / split / e["file"]
            if not path.is_file() or not _hash_ok(path, e["sha256"]):
                bad.append(f"{split}/{e['file']}")
    return bad


def _check_raw(raw: Mapping[str, torch.Tensor], path: Path, n: int, size: int, fix: str) -> None:
    """Raise HeatlabError unless ``raw`` holds ``n`` stored samples of ``size`` pixels with valid codes."""
    expected = {
        "images": ((n, 3, size, size), torch.uint8),
        "truth": ((n, size, size), torch.uint8),
        "labels": ((n,), torch.int64),
        "backgrounds": ((n,), torch.int64),
    }
    for key, (shape, dtype) in expected.items():
        if key not in raw or tuple(raw[key].shape) != shape or raw[key].dtype != dtype:
            expect = f"expected {n} samples of size {size}"
            raise HeatlabError(f"Shard '{path}' does not match the manifest ({expect}); {fix}.")
    if n and int(raw["truth"].max()) >= len(TRUTH_LEVELS):
        raise HeatlabError(f"Shard '{path}' holds ground-truth codes other than 0, 1, 2; {fix}.")


class ShardOrderSampler(Sampler[int]):
    """Yields dataset indices one shard at a time (shard order and order within a shard shuffled).

    Call :meth:`set_epoch` before each epoch for a fresh order; the same (seed, epoch) gives the
    same order.
    """

    def __init__(self, counts: Sequence[int], *, shuffle: bool = True, seed: int = 0):
        self.counts = list(counts)
        self.offsets = [sum(self.counts[:k]) for k in range(len(self.counts))]
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(self.counts)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            yield from range(len(self))
            return
        g = torch.Generator().manual_seed(derive_seed(self.seed, "sampler", self.epoch))
        for k in torch.randperm(len(self.counts), generator=g).tolist():
            yield from (self.offsets[k] + torch.randperm(self.counts[k], generator=g)).tolist()


class CellSplit(Dataset):
    """One split of a sharded cell dataset, read lazily (at most ``cache_size`` shards in memory).

    Items are dicts: image float32 3×S×S in [0,1] (quantised to 1/255), label int64 scalar,
    truth float32 S×S in {0, 0.4, 0.9}, background int64 scalar, shard and index (ints).
    """

    def __init__(self, root: str | os.PathLike, split: str, *, cache_size: int = 2):
        self.root, manifest = _read_manifest(root)
        splits = manifest["splits"]
        if split not in splits:
            raise HeatlabError(f"Split '{split}' is not in '{self.root}'; choose one of {', '.join(splits)}.")
        if not splits[split]["shards"]:
            raise HeatlabError(f"Split '{split}' in '{self.root}' has no shards; write it with more than 0 shards.")
        self.split = split
        self.entries: list[dict] = splits[split]["shards"]
        settings = manifest["settings"]
        self.class_names: list[str] = list(settings["class_names"])
        self.background_names: list[str] = list(settings["background_names"])
        self.size: int = settings["size"]
        self.input_shape: tuple[int, ...] = (3, self.size, self.size)
        self.input_kind, self.truth_kind = "image", "levels"
        self.settings: dict = settings
        self.num_shards: int = len(self.entries)
        self._ends = [0]
        for e in self.entries:
            self._ends.append(self._ends[-1] + e["count"])
        self._cache_size = max(1, cache_size)
        self._cache: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()
        self._verified: dict[int, tuple[int, int]] = {}  # shard -> (size, mtime_ns) its sha256 was checked at

    def __len__(self) -> int:
        return self._ends[-1]

    def __repr__(self) -> str:
        return f"CellSplit(root='{self.root}', split='{self.split}', shards={self.num_shards}, samples={len(self)})"

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn get a copy without the cached shards.
        return {**self.__dict__, "_cache": OrderedDict()}

    def _raw(self, k: int) -> dict[str, torch.Tensor]:
        """Stored (uint8/int64) tensors of shard ``k``, via a small LRU cache."""
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        entry = self.entries[k]
        path = self.root / self.split / entry["file"]
        fix = "run write_cells on this folder again with repair=True (--repair)"
        if not path.is_file():
            raise HeatlabError(f"Shard '{path}' is missing; {fix}.")
        try:
            stat = path.stat()
            data = path.read_bytes()
        except OSError:
            raise HeatlabError(f"Shard '{path}' is unreadable; {fix}.") from None
        # Checked on the bytes that are decoded (one read), so a changed shard is never trained on;
        # once per file state: later reads of an unchanged file (same size and mtime) skip the hash.
        seen = (stat.st_size, stat.st_mtime_ns)
        if self._verified.get(k) != seen or len(data) != stat.st_size:
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise HeatlabError(f"Shard '{path}' does not match the sha256 in its manifest (changed or corrupt); {fix}.")
            self._verified[k] = seen
        try:
            raw = load(data)
        except (SafetensorError, OSError, ValueError, RuntimeError):
            raise HeatlabError(f"Shard '{path}' is unreadable or corrupt; {fix}.") from None
        _check_raw(raw, path, entry["count"], self.size, fix)
        self._cache[k] = raw
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return raw

    def load_shard(self, k: int) -> dict[str, torch.Tensor]:
        """Whole shard ``k``: images N×3×S×S float32, labels N int64, truth N×S×S float32, backgrounds N int64."""
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.num_shards:
            raise HeatlabError(f"Shard index {k!r} is out of range; use 0 to {self.num_shards - 1}.")
        return _decode(self._raw(k))

    def locate(self, i: int) -> tuple[int, int]:
        """(shard, index within shard) of dataset index ``i`` (negative indices count from the end)."""
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} is out of range for a split of {len(self)} samples")
        k = bisect.bisect_right(self._ends, i) - 1
        return k, i - self._ends[k]

    def __getitem__(self, i: int) -> dict:
        k, j = self.locate(i)
        raw = self._raw(k)
        one = _decode({key: raw[key][j : j + 1] for key in _TENSOR_KEYS})
        return {
            "image": one["images"][0],
            "label": one["labels"][0],
            "truth": one["truth"][0],
            "background": one["backgrounds"][0],
            "shard": k,
            "index": j,
        }

    def shard_order_sampler(self, *, shuffle: bool = True, seed: int = 0) -> ShardOrderSampler:
        """A sampler that visits shards one at a time, so a DataLoader decodes each shard once."""
        return ShardOrderSampler([e["count"] for e in self.entries], shuffle=shuffle, seed=seed)


def open_split(root: str | os.PathLike, split: str) -> CellSplit:
    """Open one split of a dataset written by :func:`write_cells`."""
    return CellSplit(root, split)
