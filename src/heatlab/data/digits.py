"""Hand-written digits for paper 004's nets: real MNIST / Fashion-MNIST and scikit-learn's 8×8 digits.

Every loader returns ``{"train", "val", "test"}`` :class:`DigitSplit` objects (an
:class:`~heatlab.data.split.ArraySplit`) serving images float32 ``N×1×size×size`` in [0, 1],
labels int64 and ``"truth"``: the digit's own pixels as a binary mask (``truth_kind == "mask"``),
pixel value > :data:`MASK_THRESHOLD` (0.5) of the served image, i.e. after scaling to [0, 1]
and after any resizing (paper 004 takes "the digit itself" as the assumed segmentation truth).

* ``mnist:DIR`` / ``fashion_mnist:DIR`` read the four IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` from DIR,
  each plain or gzip-compressed (``.gz``; the spelling ``train-images.idx3-ubyte`` is accepted
  too). Pixel bytes are divided by 255. **test** is the t10k set in file order; the training file
  is cut by a seeded permutation into **val** (``val_fraction`` of it, rounded, at least one
  image: 6,000 of 60,000 by default) and **train** (the rest), both stored in that mixed order.
  The paper trains on all 60,000 images; heatlab holds the validation images out.
* ``digits`` is scikit-learn's bundled 8×8 digits (1,797 images, values 0..16 divided by 16),
  offline, split by a seeded permutation into test (20%, rounded), val (20%) and train (the rest).

Images are stored at their source resolution and enlarged shard by shard when served, by bilinear
interpolation (``align_corners=False``, antialiased when shrinking) to ``size`` (28 by default;
140 for ``smallnet140`` / ``alexnetlike140``), so a 140-px MNIST never sits in memory whole.
``split.inputs`` therefore holds the source-resolution images (MNIST 28 px, digits 8 px), while
``input_shape`` and ``load_shard`` give ``1×size×size``. ``info["index"]`` is each image's row in
its source file (for digits: in scikit-learn's order).
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from heatlab.data.registry import SPLITS, mixed_order
from heatlab.data.split import ArraySplit
from heatlab.errors import HeatlabError

__all__ = [
    "DigitSplit",
    "read_idx",
    "mnist",
    "fashion_mnist",
    "digits",
    "MNIST_CLASSES",
    "FASHION_MNIST_CLASSES",
    "MNIST_FILES",
    "MASK_THRESHOLD",
    "DEFAULT_SIZE",
    "DEFAULT_VAL_FRACTION",
    "DIGITS_FRACTIONS",
]

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
#: The IDX files of a MNIST-style folder, by role.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: A served pixel belongs to the digit (truth mask 1) when its value in [0, 1] exceeds this.
MASK_THRESHOLD = 0.5
DEFAULT_SIZE = 28
DEFAULT_SHARD_SIZE = 1000
#: Share of the MNIST training file held out as the validation split.
DEFAULT_VAL_FRACTION = 0.1
#: (val, test) shares of scikit-learn's digits; train is the rest.
DIGITS_FRACTIONS = (0.2, 0.2)
_IDX_MAGIC = {"images": 2051, "labels": 2049}


# --------------------------------------------------------------------------------------- the split
class DigitSplit(ArraySplit):
    """An :class:`ArraySplit` of grey images that serves them resized to ``size`` with a digit mask as truth.

    ``X`` is ``N×1×h×w`` at the source resolution: float32 in [0, 1], or uint8 (divided by 255 when
    served). ``load_shard`` returns ``images`` ``n×1×size×size``, ``labels`` and ``truth``
    ``n×size×size`` in {0, 1} (pixel > :data:`MASK_THRESHOLD`).
    """

    truth_kind = "mask"

    def __init__(
        self,
        X: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        class_names: Sequence[str],
        *,
        size: int = DEFAULT_SIZE,
        shard_size: int = DEFAULT_SHARD_SIZE,
        info: dict[str, np.ndarray] | None = None,
    ):
        size = _check_size(size)
        X = torch.as_tensor(X)
        if X.dim() != 4 or X.shape[1] != 1:
            raise HeatlabError(f"DigitSplit needs grey images N×1×H×W, got {tuple(X.shape)}; add the channel axis.")
        if X.dtype == torch.uint8:
            X = X.to(torch.float32) / 255.0
        super().__init__(X, y, class_names, shard_size=shard_size, info=info)
        self.size = size
        self.input_shape = (1, size, size)

    def _load(self, lo: int, hi: int) -> dict[str, torch.Tensor]:
        images = self.inputs[lo:hi]
        if tuple(images.shape[-2:]) != (self.size, self.size):
            shrink = images.shape[-1] > self.size or images.shape[-2] > self.size
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                   antialias=shrink).clamp_(0.0, 1.0)
        else:
            images = images.clone()
        truth = (images[:, 0] > MASK_THRESHOLD).to(torch.float32)
        return {"images": images, "labels": self.labels[lo:hi].clone(), "truth": truth}


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 1024:
        raise HeatlabError(f"size must be a whole number of pixels from 1 to 1024, got {size!r}; pass e.g. size=28 or size=140.")
    return size


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise HeatlabError(f"seed must be an integer, got {seed!r}; pass e.g. seed=0.")
    return seed


def _check_fraction(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise HeatlabError(f"{what} must be a number between 0 and 1 (exclusive), got {value!r}; pass e.g. {what}=0.1.")
    return float(value)


# --------------------------------------------------------------------------------------------- IDX
#: Deflate inflates at most about 1032 : 1, so a gzip file whose IDX header announces more data
#: than that from its compressed size is damaged (or a decompression bomb): refused unread.
_MAX_INFLATE_RATIO = 1032


def read_idx(path: str | os.PathLike, kind: str | None = None) -> np.ndarray:
    """The array of an IDX file of unsigned bytes (plain, or gzip when the name ends in ``.gz``).

    ``kind`` ``"images"`` requires magic 2051 (N×rows×cols), ``"labels"`` magic 2049 (N); ``None``
    accepts either. The header's big-endian sizes must match the file's length exactly; otherwise
    (or for a wrong magic number, or a damaged gzip stream) a HeatlabError names the file. The
    header is read first and at most the bytes it announces (plus one) are read or inflated, so a
    gzip bomb is refused without inflating it and memory stays at the announced array's size.
    """
    p = Path(path)
    try:
        stored = p.stat().st_size
        if p.suffix == ".gz":
            with gzip.open(p, "rb") as fh:
                return _read_idx_stream(fh, p, kind, None, stored * _MAX_INFLATE_RATIO)
        with open(p, "rb") as fh:
            return _read_idx_stream(fh, p, kind, stored, stored)
    except FileNotFoundError:
        raise HeatlabError(f"IDX file '{p}' does not exist; check the path.") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise HeatlabError(f"Cannot read IDX file '{p}' ({exc}); download it again.") from None


def _read_idx_stream(fh, p: Path, kind: str | None, length: int | None, most: int) -> np.ndarray:
    """Read an IDX array from the binary stream ``fh``: ``length`` is the plain file's size (None
    for gzip), ``most`` the most bytes the stream can honestly hold."""
    wanted = (_IDX_MAGIC[kind],) if kind is not None else tuple(_IDX_MAGIC.values())
    head = fh.read(4)
    if len(head) < 4:
        raise HeatlabError(f"'{p}' is too short to be an IDX file ({len(head)} bytes); download it again.")
    magic = int.from_bytes(head, "big")
    if magic not in wanted:
        expected = " or ".join(str(m) for m in wanted)
        raise HeatlabError(
            f"'{p}' has IDX magic number {magic}, not {expected} ({kind or 'images or labels'} of unsigned bytes); "
            "check that it is the right MNIST file and not damaged."
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    sizes = fh.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise HeatlabError(f"'{p}' ends inside its IDX header ({4 + len(sizes)} bytes); the file is truncated, download it again.")
    dims = tuple(int(d) for d in np.frombuffer(sizes, dtype=">u4"))
    expected_len = header + math.prod(dims)

    def wrong(held: str, truncated: bool) -> HeatlabError:
        return HeatlabError(f"'{p}' holds {held} bytes but its IDX header {dims} needs {expected_len}; "
                            f"the file is {'truncated' if truncated else 'too long'}, download it again.")

    if length is not None and length != expected_len:
        raise wrong(str(length), length < expected_len)
    if expected_len > most:
        raise HeatlabError(f"'{p}' announces {dims} in its IDX header ({expected_len} bytes), more than its "
                           f"{most // _MAX_INFLATE_RATIO} compressed bytes can hold; the file is damaged, download it again.")
    out = np.empty(math.prod(dims), dtype=np.uint8)
    view, done = memoryview(out), 0
    while done < len(out):
        n = fh.readinto(view[done:])
        if not n:
            raise wrong(str(header + done), True)
        done += n
    if fh.read(1):
        raise wrong(f"more than {expected_len}", False)
    return out.reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    names = [stem, stem.replace("-idx", ".idx")]
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise HeatlabError(f"'{folder}' has no file {stem} (or {stem}.gz); put the four MNIST IDX files "
                       f"({', '.join(MNIST_FILES.values())}) in that folder.")


def _read_pair(folder: Path, images_stem: str, labels_stem: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = _find(folder, images_stem), _find(folder, labels_stem)
    images, labels = read_idx(images_path, "images"), read_idx(labels_path, "labels")
    if len(images) != len(labels):
        raise HeatlabError(
            f"'{images_path}' holds {len(images)} images but '{labels_path}' {len(labels)} labels; use files of one set."
        )
    if len(labels) and int(labels.max()) >= n_classes:
        raise HeatlabError(f"'{labels_path}' has label {int(labels.max())}, outside 0..{n_classes - 1}; use the original file.")
    if len(images) == 0:
        raise HeatlabError(f"'{images_path}' holds no images; download it again.")
    if 0 in images.shape[1:]:
        raise HeatlabError(f"'{images_path}' holds images of {images.shape[1]}×{images.shape[2]} pixels; "
                           "download the original file again.")
    return images[:, None], labels.astype(np.int64)


def _idx_dataset(
    name: str, path: str | os.PathLike, class_names: Sequence[str], *,
    size: int, seed: int, val_fraction: float, shard_size: int,
) -> dict[str, DigitSplit]:  # fmt: skip
    size, seed = _check_size(size), _check_seed(seed)
    val_fraction = _check_fraction("val_fraction", val_fraction)
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise HeatlabError(f"'{folder}' is not a folder; pass the folder holding the four {name} IDX files.")
    train_x, train_y = _read_pair(folder, MNIST_FILES["train_images"], MNIST_FILES["train_labels"], len(class_names))
    test_x, test_y = _read_pair(folder, MNIST_FILES["test_images"], MNIST_FILES["test_labels"], len(class_names))
    n = len(train_y)
    if n < 2:
        raise HeatlabError(f"The {name} training file holds {n} image; it needs at least 2 to give train and val.")
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    order = mixed_order(n, seed, name, "val")
    parts = {"val": order[:n_val], "train": order[n_val:], "test": np.arange(len(test_y))}
    out = {}
    for split in SPLITS:
        x, y = (test_x, test_y) if split == "test" else (train_x, train_y)
        idx = parts[split]
        out[split] = DigitSplit(x[idx], y[idx], class_names, size=size, shard_size=shard_size, info={"index": idx})
    return out


def mnist(
    path: str | os.PathLike, *, size: int = DEFAULT_SIZE, seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION, shard_size: int = DEFAULT_SHARD_SIZE,
) -> dict[str, DigitSplit]:  # fmt: skip
    """MNIST from the IDX files in folder ``path``: ``{"train", "val", "test"}`` (see the module docstring)."""
    return _idx_dataset("mnist", path, MNIST_CLASSES, size=size, seed=seed, val_fraction=val_fraction,
                        shard_size=shard_size)


def fashion_mnist(
    path: str | os.PathLike, *, size: int = DEFAULT_SIZE, seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION, shard_size: int = DEFAULT_SHARD_SIZE,
) -> dict[str, DigitSplit]:  # fmt: skip
    """Fashion-MNIST from the IDX files in folder ``path`` (same file names and splits as :func:`mnist`)."""
    return _idx_dataset("fashion_mnist", path, FASHION_MNIST_CLASSES, size=size, seed=seed,
                        val_fraction=val_fraction, shard_size=shard_size)


# ------------------------------------------------------------------------------- sklearn's digits
def digits(*, size: int = DEFAULT_SIZE, seed: int = 0, shard_size: int = DEFAULT_SHARD_SIZE) -> dict[str, DigitSplit]:
    """scikit-learn's bundled 8×8 digits served at ``size`` px (bilinear), split 60/20/20 by ``seed``; offline."""
    size, seed = _check_size(size), _check_seed(seed)
    from sklearn.datasets import load_digits  # imported here: opening MNIST needs no scikit-learn

    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    n = len(labels)
    n_val, n_test = (round(f * n) for f in DIGITS_FRACTIONS)
    order = mixed_order(n, seed, "digits", "split")
    parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    return {
        split: DigitSplit(images[idx], labels[idx], MNIST_CLASSES, size=size, shard_size=shard_size, info={"index": idx})
        for split, idx in ((s, parts[s]) for s in SPLITS)
    }
