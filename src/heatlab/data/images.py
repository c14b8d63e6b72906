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
* **A flat folder** (``folder:DIR`` with ``DIR/<class>/*`` and no train/val/test subfolder): per
  class a seeded draw gives 15% to val, 15% to test and the rest to train (:func:`flat_partition`;
  masks, if any, in ``DIR/masks/<class>/``).
* **COVID-19 radiography** (``<class>/images/*``, Appendix A.4): within each class the i-th
  file (natural order, i = 0, 1, ...) goes to train if ``i mod 3 == 0``, to val if 1 and to test
  if 2. A class folder without an ``images`` subfolder is read directly (the older release).

Masks (``folder:DIR``, :func:`split_folder`): a user's folder may carry ground-truth masks::

    DIR/<split>/<class>/<name>            the images
    DIR/masks/<split>/<class>/<name>      their masks: the same file name (any format Pillow reads),
                                          or the same stem with ``.png`` (``cat1.jpg`` -> ``cat1.png``)

``masks=True`` (the default) reads ``DIR/masks`` when it exists, ``masks=PATH`` reads a folder
with the same ``<split>/<class>/`` layout instead, and ``masks=False`` (or ``masks=None``)
ignores masks. ``DIR/masks`` is never read as a split or class folder. A split whose folder
``<masks>/<split>`` is absent has no masks (``truth_kind is None``, no ``"truth"`` key); when it
is present every image of the split needs a mask of the same pixel size (checked from the
headers at construction). Masks are decoded to 8-bit greyscale (16-bit masks whose values are
all <= 255 keep them, otherwise they are scaled by 255/65535; float masks in [0, 1] by 255) and
resized NEAREST to ``size × size``. Each mask's pixel values (at full resolution) make it one
of two kinds, and the masks of the first shard decide the split's ``truth_kind`` (each later
shard must agree when it loads):

* ``"levels"``: only values near 0, 0.4·255 and 0.9·255 (0, 101-103, 228-231; a 0/102 or 0/230
  mask counts as levels) -> truth exactly 0, 0.4, 0.9 (:data:`heatlab.data.split.TRUTH_LEVELS`);
* ``"mask"``: only 0 and one other value (255, 1, ...; it may differ from mask to mask) -> truth
  0 and 1. A mask that is all 0 fits either kind; a first shard of only all-0 masks makes the
  split a ``"mask"`` split.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from heatlab.data.registry import MOD3_REMAINDER, SPLITS, ShardedSplit, check_split, mixed_order
from heatlab.seeds import derive_seed
from heatlab.data.split import TRUTH_LEVELS
from heatlab.errors import HeatlabError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
DEFAULT_SHARD_SIZE = 64  # 64 RGB images of 256² are 50 MB in float32
#: (class names, {split: {class: files}})
Partition = tuple[list[str], dict[str, dict[str, list[Path]]]]
_PIL_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
#: The most pixels (width × height) heatlab decodes from one file, checked from its header before
#: decoding: 40 megapixels (e.g. 6,000 × 6,000 px, about 120 MB as RGB); larger files are refused.
MAX_PIXELS = 40_000_000
#: Default mask folder of ``folder:DIR``: ``DIR/masks/<split>/<class>/``.
MASK_FOLDER = "masks"
#: Shares of each class a flat ``<class>/*`` folder gives to val and test (the rest is train).
FLAT_FRACTIONS = {"val": 0.15, "test": 0.15}
#: 8-bit mask values read as each ground-truth level: 0 -> 0, 101..103 -> 0.4, 228..231 -> 0.9.
LEVEL_VALUES = {TRUTH_LEVELS[0]: (0, 0), TRUTH_LEVELS[1]: (101, 103), TRUTH_LEVELS[2]: (228, 231)}
_LEVEL_OF_VALUE = np.full(256, np.nan, dtype=np.float32)
for _level, (_lo, _hi) in LEVEL_VALUES.items():
    _LEVEL_OF_VALUE[_lo : _hi + 1] = _level
_SAME_KIND = "either all binary (0 and one other value) or all in levels (0, 102 and 229/230)"
_ACCEPTED_MASKS = "only 0 and one other value (a binary mask, e.g. 0 and 255) or only 0, 102 and 229/230 (the levels 0, 0.4, 0.9)"


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


def _open(path: Path, what: str = "Image") -> Image.Image:
    """``path`` opened by Pillow (header read, nothing decoded); HeatlabError unless Pillow recognises
    it and it has at most :data:`MAX_PIXELS` pixels (so no decompression-bomb warning is printed)."""
    too_big = (f"{what} '{path}' has {{}} pixels, more than the {MAX_PIXELS // 1_000_000} megapixels heatlab decodes; "
               "shrink it first (e.g. to 4096×4096).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError:
        raise HeatlabError(too_big.format(f"over {2 * (Image.MAX_IMAGE_PIXELS or 0) // 1_000_000} million")) from None
    except _PIL_ERRORS as exc:
        raise HeatlabError(f"{what} '{path}' is unreadable or not an image ({type(exc).__name__}); remove or replace it.") from None
    width, height = im.size
    if width * height > MAX_PIXELS:
        im.close()
        raise HeatlabError(too_big.format(f"{width}×{height}"))
    return im


def _without_palette(im: Image.Image) -> Image.Image:
    """A palette image with a transparent colour as RGBA (Pillow warns when it is converted directly)."""
    return im.convert("RGBA") if im.mode in ("P", "PA") and "transparency" in im.info else im


def _check_header(path: Path, what: str = "Image") -> tuple[int, int]:
    """Pixel size (width, height) of ``path``; HeatlabError unless Pillow recognises it and it has at
    most :data:`MAX_PIXELS` pixels (header only, no decoding)."""
    with _open(path, what) as im:
        return im.size


def decode_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One file -> uint8 array C×size×size (see the module docstring for the conversion)."""
    try:
        with _open(path) as im:
            im.load()
            im = _without_palette(im)
            if im.mode == "I" or im.mode.startswith("I;16"):
                scaled = np.asarray(im, dtype=np.float64) * (255 / 65535)
                im = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except HeatlabError:
        raise
    except _PIL_ERRORS as exc:
        raise HeatlabError(f"Image '{path}' is unreadable or corrupt ({type(exc).__name__}); remove or replace it.") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def read_mask(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One mask file -> (uint8 size×size resized NEAREST, sorted distinct 8-bit values at full resolution)."""
    try:
        with _open(path, "Mask") as im:
            im.load()
            im = _without_palette(im)
            if im.mode in ("I", "F") or im.mode.startswith("I;16"):
                raw = np.asarray(im, dtype=np.float64)
                top = float(raw.max(initial=0))
                scale = 255.0 if im.mode == "F" and top <= 1 else 255 / 65535 if top > 255 else 1.0
                im = Image.fromarray(np.clip(np.rint(raw * scale), 0, 255).astype(np.uint8))
            im = im.convert("L")
            values = np.flatnonzero(np.bincount(np.asarray(im, dtype=np.uint8).ravel(), minlength=256))
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.NEAREST)
            arr = np.asarray(im, dtype=np.uint8)
    except HeatlabError:
        raise
    except _PIL_ERRORS as exc:
        raise HeatlabError(f"Mask '{path}' is unreadable or corrupt ({type(exc).__name__}); remove or replace it.") from None
    return arr, values


def mask_kind(values: np.ndarray) -> str | None:
    """"levels", "mask" or "empty" (all 0) for the distinct 8-bit values of a mask; None if it is neither."""
    nonzero = values[values > 0]
    if nonzero.size == 0:
        return "empty"
    if not np.isnan(_LEVEL_OF_VALUE[values]).any():
        return "levels"
    return "mask" if nonzero.size == 1 else None


def _show_values(values: np.ndarray, most: int = 8) -> str:
    shown = ", ".join(str(int(v)) for v in values[:most])
    return shown + (f", ... ({len(values)} values)" if len(values) > most else "")


def _describe_kind(kind: str, values: np.ndarray) -> str:
    return f"{'binary' if kind == 'mask' else 'drawn in levels'} (values {_show_values(values)})"


def mask_truth(masks: np.ndarray, kind: str) -> torch.Tensor:
    """uint8 masks -> float32 truth: the levels 0/0.4/0.9 (``kind == "levels"``) or 0/1 (``"mask"``)."""
    if kind == "levels":
        return torch.from_numpy(_LEVEL_OF_VALUE[masks])
    return torch.from_numpy(masks > 0).to(torch.float32)


class ImageSplit(ShardedSplit):
    """A split of image files decoded per shard (at most ``cache_shards`` shards kept in memory).

    ``files`` and ``labels`` are in stored order; ``load_shard(k)`` gives images float32
    N×C×size×size in [0, 1] and labels int64 N. Every file's header is checked on construction,
    so a non-image file fails at once; a file corrupt past its header fails when its shard loads.

    ``masks`` (optional, one file per image in the same order, each of its image's pixel size)
    adds ``"truth"`` float32 N×size×size; ``truth_kind`` ("levels" or "mask", see the module
    docstring) is decided from the masks of shard 0 on construction and every later shard must
    agree. Without masks ``truth_kind`` is None and there is no ``"truth"`` key.
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
        masks: Sequence[Path] | None = None,
    ):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise HeatlabError(f"Image size must be a whole number >= 1, got {size!r}; pass e.g. size=256.")
        if channels not in (1, 3) or isinstance(channels, bool):
            raise HeatlabError(f"Channels must be 1 (greyscale) or 3 (RGB), got {channels!r}; pass channels=1 or 3.")
        if len(files) != len(labels):
            raise HeatlabError(f"Got {len(files)} files but {len(labels)} labels; pass one label per file.")
        if masks is not None and len(masks) != len(files):
            raise HeatlabError(f"Got {len(files)} files but {len(masks)} masks; pass one mask per file, or masks=None.")
        super().__init__(len(files), class_names, shard_size=shard_size, input_shape=(channels, size, size))
        self.files = [Path(f) for f in files]
        self.labels = torch.as_tensor(list(labels), dtype=torch.int64)
        self.size, self.channels = size, channels
        sizes = [_check_header(path) for path in self.files]
        self._cache_shards = max(1, cache_shards)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._mask_cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.masks = None if masks is None else [Path(m) for m in masks]
        if self.masks is not None:
            for path, (w, h), mask in zip(self.files, sizes, self.masks):
                mw, mh = _check_header(mask, "Mask")
                if (mw, mh) != (w, h):
                    raise HeatlabError(
                        f"Mask '{mask}' is {mw}×{mh} pixels (width×height) but its image '{path}' is {w}×{h}; "
                        f"save the mask at its image's pixel size."
                    )
            self._first_shard_empty = False
            self.truth_kind = self._decide_truth_kind()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": OrderedDict(), "_mask_cache": OrderedDict()}

    def _read_masks(self, lo: int, hi: int) -> tuple[np.ndarray, list[tuple[Path, str, np.ndarray]]]:
        """uint8 masks n×size×size of samples lo:hi and (file, kind, values) of each; HeatlabError on bad values."""
        arrays, found = [], []
        for path in self.masks[lo:hi]:
            arr, values = read_mask(path, self.size)
            kind = mask_kind(values)
            if kind is None:
                raise HeatlabError(
                    f"Mask '{path}' holds the pixel values {_show_values(values)}, but a mask may hold {_ACCEPTED_MASKS}; "
                    f"redraw it with those values (save it as PNG, not JPEG), or pass masks=False to ignore masks."
                )
            arrays.append(arr)
            found.append((path, kind, values))
        return np.stack(arrays), found

    def _decide_truth_kind(self) -> str:
        """The truth kind of the masks of shard 0 (which are kept in the cache)."""
        key = self.shard_bounds(0)
        arr, found = self._read_masks(*key)
        first = {}
        for path, kind, values in found:
            if kind != "empty":
                first.setdefault(kind, (path, values))
        if len(first) > 1:
            (lev, lev_values), (bin_, bin_values) = first["levels"], first["mask"]
            raise HeatlabError(
                f"Mask '{lev}' is {_describe_kind('levels', lev_values)} but mask '{bin_}' is {_describe_kind('mask', bin_values)}; "
                f"draw every mask of a split the same way, {_SAME_KIND}."
            )
        self._first_shard_empty = not first
        self._mask_cache[key] = arr
        return next(iter(first), "mask")

    def _decoded_masks(self, lo: int, hi: int) -> np.ndarray:
        key = (lo, hi)
        if key in self._mask_cache:
            self._mask_cache.move_to_end(key)
            return self._mask_cache[key]
        arr, found = self._read_masks(lo, hi)
        for path, kind, values in found:
            if kind not in ("empty", self.truth_kind):
                why = " (they are all 0, which counts as binary)" if self._first_shard_empty else ""
                raise HeatlabError(
                    f"Mask '{path}' in shard {lo // self.shard_size} is {_describe_kind(kind, values)}, but the masks of "
                    f"shard 0{why} made this split's truth_kind '{self.truth_kind}'; draw every mask of a split the same "
                    f"way, {_SAME_KIND}."
                )
        self._mask_cache[key] = arr
        while len(self._mask_cache) > self._cache_shards:
            self._mask_cache.popitem(last=False)
        return arr

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
        shard = {"images": images, "labels": self.labels[lo:hi].clone()}
        if self.masks is not None:
            shard["truth"] = mask_truth(self._decoded_masks(lo, hi), self.truth_kind)
        return shard


def _make_split(
    per_class: dict[str, list[Path]],
    class_names: Sequence[str],
    order_parts: tuple,
    *,
    seed: int,
    masks: dict[str, list[Path]] | None = None,
    **kw,
) -> ImageSplit:
    """An ImageSplit of the files of each class (and their masks, same layout), stored in a seeded mixed order."""
    files = [f for c in class_names for f in per_class.get(c, [])]
    labels = [i for i, c in enumerate(class_names) for _ in per_class.get(c, [])]
    if not files:
        raise HeatlabError("The split holds no images; check the folder layout.")
    order = mixed_order(len(files), seed, *order_parts)
    mask_files = None
    if masks is not None:
        every = [m for c in class_names for m in masks.get(c, [])]
        mask_files = [every[i] for i in order]
    return ImageSplit([files[i] for i in order], [labels[i] for i in order], class_names, masks=mask_files, **kw)


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


def _mask_split_folder(root: Path, split: str, masks: object) -> Path | None:
    """The folder ``<masks>/<split>`` holding this split's masks, or None when the split has none."""
    if masks is None or masks is False:
        return None
    if masks is True:
        base = root / MASK_FOLDER
        if not base.is_dir():
            return None
    elif isinstance(masks, (str, os.PathLike)) and str(masks).strip():
        base = Path(masks).expanduser()
        if not base.is_dir():
            raise HeatlabError(
                f"Mask folder '{base}' does not exist; pass masks= a folder laid out as <split>/<class>/ like the "
                f"images, or masks=False to ignore masks."
            )
    else:
        raise HeatlabError(
            f"masks must be True (read DIR/masks when present), False (ignore masks) or a folder path, got {masks!r}; "
            f"pass e.g. masks='/data/pets-masks'."
        )
    if not any((base / s).is_dir() for s in SPLITS):
        raise HeatlabError(
            f"Mask folder '{base}' holds no {', '.join(SPLITS[:-1])} or {SPLITS[-1]} folder; lay the masks out as "
            f"'{base}/<split>/<class>/<image file name>', or pass masks=False to ignore them."
        )
    folder = base / split
    return folder if folder.is_dir() else None


def _match_masks(per_class: dict[str, list[Path]], mask_root: Path) -> dict[str, list[Path]]:
    """The mask of every image: ``mask_root/<class>/<same name>``, else ``<same stem>.png``; HeatlabError if any lacks one."""
    found: dict[str, list[Path]] = {}
    missing: list[tuple[Path, Path]] = []
    for cls, files in per_class.items():
        folder = mask_root / cls
        names = set(os.listdir(folder)) if folder.is_dir() else set()
        found[cls] = []
        for image in files:
            for name in dict.fromkeys((image.name, image.stem + ".png")):
                if name in names and (folder / name).is_file():
                    found[cls].append(folder / name)
                    break
            else:
                missing.append((image, folder / image.name))
    if missing:
        image, expected = missing[0]
        alt = expected.with_name(image.stem + ".png")
        also = f" (or '{alt}')" if alt != expected else ""
        more = f", and {len(missing) - 1} more images lack one" if len(missing) > 1 else ""
        raise HeatlabError(
            f"Image '{image}' has no mask: expected '{expected}'{also}{more}; add the missing masks, or pass "
            f"masks=False to ignore masks."
        )
    return found


def split_folder(
    root: str | os.PathLike,
    split: str,
    *,
    size: int = 256,
    channels: int = 3,
    seed: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
    masks: str | os.PathLike | bool | None = True,
    val_fraction: float = FLAT_FRACTIONS["val"],
    test_fraction: float = FLAT_FRACTIONS["test"],
) -> ImageSplit:
    """Split ``split`` of ``root/<split>/<class>/*``; the classes are those of ``root/train``.

    ``masks``: True (default) reads masks from ``root/masks/<split>/<class>/`` when that folder
    exists, a path reads them from ``PATH/<split>/<class>/``, False or None ignores masks (module
    docstring: file names, sizes, values and ``truth_kind``). A flat ``root/<class>/*`` folder
    (no train, val or test subfolder) is split per class with a seeded draw of ``val_fraction``
    and ``test_fraction`` (:func:`flat_partition`); its masks are in ``root/masks/<class>/``.
    """
    check_split(split)
    root = Path(root).expanduser()
    if root.is_dir() and not any((root / s).is_dir() for s in SPLITS):
        return _flat_split(root, split, size=size, channels=channels, seed=seed, shard_size=shard_size, masks=masks,
                           val_fraction=val_fraction, test_fraction=test_fraction)
    classes = class_folders(root / "train")
    mask_root = _mask_split_folder(root, split, masks)
    if mask_root is None:
        return load_image_folder(root / split, size=size, channels=channels, classes=classes, seed=seed, shard_size=shard_size)
    _two_classes(classes, root / split)
    per_class = _class_files(root / split, classes)
    mask_files = _match_masks(per_class, mask_root)
    return _make_split(per_class, classes, ("folder",), seed=seed, masks=mask_files, size=size, channels=channels,
                       shard_size=shard_size)


def flat_partition(root: str | os.PathLike, *, val_fraction: float = FLAT_FRACTIONS["val"],
                   test_fraction: float = FLAT_FRACTIONS["test"], seed: int = 0) -> Partition:
    """(class names, {split: {class: files}}) of a flat ``root/<class>/*`` folder.

    Per class, the files (natural order) are permuted with a generator seeded by ``(seed, class)``;
    the first ``round(val_fraction · n)`` go to val, the next ``round(test_fraction · n)`` to test
    (at least one each), the rest to train. The same seed always gives the same split.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise HeatlabError(f"{name} must be a share between 0 and 1, got {value!r}; pass e.g. {name}=0.15.")
    if val_fraction + test_fraction >= 1:
        raise HeatlabError(f"val_fraction + test_fraction must leave images for training, got {val_fraction} + "
                           f"{test_fraction}; pass e.g. val_fraction=0.15, test_fraction=0.15.")
    root = Path(root).expanduser()
    classes = [c for c in class_folders(root) if c != MASK_FOLDER]
    _two_classes(classes, root)
    found = _class_files(root, classes)
    parts: dict[str, dict[str, list[Path]]] = {s: {} for s in SPLITS}
    for c in classes:
        files = found[c]
        n_val = max(1, math.floor(val_fraction * len(files) + 0.5))
        n_test = max(1, math.floor(test_fraction * len(files) + 0.5))
        if len(files) < n_val + n_test + 1:
            raise HeatlabError(f"Class folder '{root / c}' holds {len(files)} images, too few to split into train, val "
                               f"and test; add images (at least {n_val + n_test + 1}) or lay the folder out as "
                               "train/val/test/<class>/.")
        g = torch.Generator().manual_seed(derive_seed(seed, "flat", c))
        perm = torch.randperm(len(files), generator=g).tolist()
        parts["val"][c] = [files[i] for i in perm[:n_val]]
        parts["test"][c] = [files[i] for i in perm[n_val : n_val + n_test]]
        parts["train"][c] = [files[i] for i in perm[n_val + n_test :]]
    return classes, parts


def _flat_split(root: Path, split: str, *, size: int, channels: int, seed: int, shard_size: int, masks: object,
                val_fraction: float, test_fraction: float) -> ImageSplit:
    classes, parts = flat_partition(root, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    per_class = {c: sorted(files, key=lambda p: natural_key(p.name)) for c, files in parts[split].items()}
    mask_files = None
    if masks is True and (root / MASK_FOLDER).is_dir():
        mask_files = _match_masks(per_class, root / MASK_FOLDER)
    elif isinstance(masks, (str, os.PathLike)) and str(masks).strip():
        if not Path(masks).expanduser().is_dir():
            raise HeatlabError(f"Mask folder '{masks}' does not exist; pass masks= a folder laid out as <class>/ like "
                               "the images, or masks=False to ignore masks.")
        mask_files = _match_masks(per_class, Path(masks).expanduser())
    elif masks not in (True, False, None):
        raise HeatlabError(f"masks must be True, False or a folder path, got {masks!r}; pass e.g. masks=False.")
    return _make_split(per_class, classes, ("flat", split), seed=seed, masks=mask_files, size=size, channels=channels,
                       shard_size=shard_size)


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
