"""Class-per-folder image datasets, decoded lazily one shard at a time.

Images are decoded with Pillow to 8 bits (16-bit greyscale is scaled by 255/65535), converted
to greyscale (``channels=1``, Pillow's ITU-R 601-2 luma) or RGB (``channels=3``; a greyscale
image becomes three equal channels), resized to ``size × size`` (bilinear, aspect ratio not
kept, as in paper 000) and served as float32 in [0, 1]. Files are listed in natural order
("img2" before "img10") so every split rule below is deterministic. Each split is stored in a
seeded order (:func:`heatlab.data.registry.mixed_order`) so that every shard mixes the classes.

Split rules (paper 000):

* **Chest X-ray pneumonia** (``train/val/test/{NORMAL,PNEUMONIA}``, §4 of the paper): Kaggle's
  val folder holds only 16 images, so train and val are pooled per class and redrawn: the
  pooled files of a class are permuted with a generator seeded by ``(seed, class)`` and the
  first ``round(val_fraction · n)`` (halves rounded up) go to val, the rest to train. The paper
  drew 266/1349 healthy and 790/3883 pneumonia images (19.7%, 20.3%) for val, consistent with a
  random 20% draw, hence ``val_fraction=0.2``. The test folder is used untouched.
* **COVID-19 radiography** (``<class>/images/*``, Appendix A.4): within each class the i-th
  file (natural order, i = 0, 1, ...) goes to train if ``i mod 3 == 0``, to val if 1 and to test
  if 2. A class folder without an ``images`` subfolder is read directly (the older release).
"""

from __future__ import annotations

import math
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from heatlab.data.registry import MOD3_REMAINDER, SPLITS, ShardedSplit, check_split, mixed_order
from heatlab.data.shards import derive_seed
from heatlab.errors import HeatlabError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
DEFAULT_SHARD_SIZE = 64  # 64 RGB images of 256² are 50 MB in float32
#: (class names, {split: {class: files}})
Partition = tuple[list[str], dict[str, dict[str, list[Path]]]]
_PIL_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers ("img2" < "img10"), then the name itself."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), name


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (by suffix, hidden files skipped), in natural order."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def class_folders(root: Path) -> list[str]:
    """Names of the (non-hidden) subfolders of ``root``, in natural order."""
    if not root.is_dir():
        raise HeatlabError(f"Image folder '{root}' does not exist; pass the folder that holds one subfolder per class.")
    names = sorted((p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key)
    if not names:
        raise HeatlabError(f"'{root}' holds no class subfolders; put the images of each class in a folder named after it.")
    return names


def _class_files(root: Path, classes: Sequence[str], subfolder: str = "") -> dict[str, list[Path]]:
    """Image files of each class folder ``root/<class>[/subfolder]``; every class must hold images."""
    present = set(class_folders(root))
    missing = [c for c in classes if c not in present]
    if missing:
        raise HeatlabError(f"'{root}' has no class folder {', '.join(repr(m) for m in missing)}; add it or check the path.")
    found = {}
    for c in classes:
        folder = root / c / subfolder if subfolder and (root / c / subfolder).is_dir() else root / c
        files = list_images(folder)
        if not files:
            raise HeatlabError(f"Folder '{folder}' holds no images ({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder.")
        found[c] = files
    return found


def _check_header(path: Path) -> None:
    """Raise HeatlabError unless Pillow recognises ``path`` (reads the header only, no decoding)."""
    try:
        with Image.open(path):
            pass
    except _PIL_ERRORS as exc:
        raise HeatlabError(f"Image '{path}' is unreadable or not an image ({type(exc).__name__}); remove or replace it.") from None


def decode_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One file -> uint8 array C×size×size (see the module docstring for the conversion)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "I" or im.mode.startswith("I;16"):
                scaled = np.asarray(im, dtype=np.float64) * (255 / 65535)
                im = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except _PIL_ERRORS as exc:
        raise HeatlabError(f"Image '{path}' is unreadable or corrupt ({type(exc).__name__}); remove or replace it.") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


class ImageSplit(ShardedSplit):
    """A split of image files decoded per shard (at most ``cache_shards`` shards kept in memory).

    ``files`` and ``labels`` are in stored order; ``load_shard(k)`` gives images float32
    N×C×size×size in [0, 1] and labels int64 N. Every file's header is checked on construction,
    so a non-image file fails at once; a file corrupt past its header fails when its shard loads.
    """

    def __init__(
        self,
        files: Sequence[Path],
        labels: Sequence[int],
        class_names: Sequence[str],
        *,
        size: int = 256,
        channels: int = 3,
        shard_size: int = DEFAULT_SHARD_SIZE,
        cache_shards: int = 2,
    ):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise HeatlabError(f"Image size must be a whole number >= 1, got {size!r}; pass e.g. size=256.")
        if channels not in (1, 3) or isinstance(channels, bool):
            raise HeatlabError(f"Channels must be 1 (greyscale) or 3 (RGB), got {channels!r}; pass channels=1 or 3.")
        if len(files) != len(labels):
            raise HeatlabError(f"Got {len(files)} files but {len(labels)} labels; pass one label per file.")
        super().__init__(len(files), class_names, shard_size=shard_size, input_shape=(channels, size, size))
        self.files = [Path(f) for f in files]
        self.labels = torch.as_tensor(list(labels), dtype=torch.int64)
        self.size, self.channels = size, channels
        for path in self.files:
            _check_header(path)
        self._cache_shards = max(1, cache_shards)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": OrderedDict()}

    def _decoded(self, lo: int, hi: int) -> np.ndarray:
        key = (lo, hi)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        arr = np.stack([decode_image(p, self.size, self.channels) for p in self.files[lo:hi]])
        self._cache[key] = arr
        while len(self._cache) > self._cache_shards:
            self._cache.popitem(last=False)
        return arr

    def _load(self, lo: int, hi: int) -> dict[str, torch.Tensor]:
        images = torch.from_numpy(self._decoded(lo, hi)).to(torch.float32).div_(255)
        return {"images": images, "labels": self.labels[lo:hi].clone()}


def _make_split(per_class: dict[str, list[Path]], class_names: Sequence[str], order_parts: tuple, *, seed: int, **kw) -> ImageSplit:
    """An ImageSplit of the files of each class, stored in a seeded mixed order."""
    files = [f for c in class_names for f in per_class.get(c, [])]
    labels = [i for i, c in enumerate(class_names) for _ in per_class.get(c, [])]
    if not files:
        raise HeatlabError("The split holds no images; check the folder layout.")
    order = mixed_order(len(files), seed, *order_parts)
    return ImageSplit([files[i] for i in order], [labels[i] for i in order], class_names, **kw)


def _check_fraction(value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise HeatlabError(f"The validation fraction must be in [0, 1), got {value!r}; pass e.g. val_fraction=0.2.")


def _two_classes(classes: Sequence[str], root: Path) -> None:
    if len(classes) < 2:
        raise HeatlabError(f"'{root}' holds only {len(classes)} class folder; a classifier needs at least two.")


def load_image_folder(
    root: str | os.PathLike,
    *,
    size: int = 256,
    channels: int = 3,
    classes: Sequence[str] | None = None,
    seed: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> ImageSplit:
    """All images of ``root/<class>/*`` as one split; ``classes`` fixes the class list and order
    (default: the subfolders in natural order)."""
    root = Path(root).expanduser()
    classes = list(classes) if classes is not None else class_folders(root)
    _two_classes(classes, root)
    per_class = _class_files(root, classes)
    return _make_split(per_class, classes, ("folder",), seed=seed, size=size, channels=channels, shard_size=shard_size)


def split_folder(
    root: str | os.PathLike,
    split: str,
    *,
    size: int = 256,
    channels: int = 3,
    seed: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> ImageSplit:
    """Split ``split`` of ``root/<split>/<class>/*``; the classes are those of ``root/train``."""
    check_split(split)
    root = Path(root).expanduser()
    classes = class_folders(root / "train")
    return load_image_folder(root / split, size=size, channels=channels, classes=classes, seed=seed, shard_size=shard_size)


def chest_xray_partition(root: str | os.PathLike, *, val_fraction: float = 0.2, seed: int = 0) -> Partition:
    """(class names, {split: {class: files}}) of the chest X-ray folders after the seeded redraw."""
    _check_fraction(val_fraction)
    root = Path(root).expanduser()
    classes = class_folders(root / "train")
    _two_classes(classes, root / "train")
    found = {s: _class_files(root / s, classes) for s in SPLITS}
    parts: dict[str, dict[str, list[Path]]] = {s: {} for s in SPLITS}
    for c in classes:
        pooled = sorted(found["train"][c] + found["val"][c], key=lambda p: (natural_key(p.name), p.parent.parent.name))
        g = torch.Generator().manual_seed(derive_seed(seed, "chest_xray", c))
        perm = torch.randperm(len(pooled), generator=g).tolist()
        n_val = math.floor(val_fraction * len(pooled) + 0.5)
        parts["val"][c] = [pooled[i] for i in perm[:n_val]]
        parts["train"][c] = [pooled[i] for i in perm[n_val:]]
        parts["test"][c] = found["test"][c]
    return classes, parts


def chest_xray(
    root: str | os.PathLike,
    split: str,
    *,
    size: int = 256,
    channels: int = 3,
    val_fraction: float = 0.2,
    seed: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> ImageSplit:
    """One split of the chest X-ray pneumonia folders, train+val redrawn (module docstring)."""
    check_split(split)
    classes, parts = chest_xray_partition(root, val_fraction=val_fraction, seed=seed)
    return _make_split(parts[split], classes, ("chest_xray", split), seed=seed, size=size, channels=channels, shard_size=shard_size)


def covid_partition(root: str | os.PathLike) -> Partition:
    """(class names, {split: {class: files}}) of the COVID-19 radiography folders, index mod 3."""
    root = Path(root).expanduser()
    classes = class_folders(root)
    _two_classes(classes, root)
    found = _class_files(root, classes, subfolder="images")
    parts = {s: {c: files[r::3] for c, files in found.items()} for s, r in MOD3_REMAINDER.items()}
    return classes, parts


def covid_radiography(
    root: str | os.PathLike,
    split: str,
    *,
    size: int = 256,
    channels: int = 1,
    seed: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> ImageSplit:
    """One split of the COVID-19 radiography folders (index mod 3 per class, module docstring)."""
    check_split(split)
    classes, parts = covid_partition(root)
    return _make_split(parts[split], classes, ("covid", split), seed=seed, size=size, channels=channels, shard_size=shard_size)
