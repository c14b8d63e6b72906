"""Natural colour photographs, offline: CIFAR-10 and STL-10 from their *binary* versions.

Both loaders return ``{"train", "val", "test"}`` :class:`NaturalSplit` objects (an
:class:`~heatlab.data.split.ArraySplit`) serving ``images`` float32 ``N×3×H×W`` in [0, 1] and
``labels`` int64; there is no ground truth (``truth_kind`` is ``None``).

* ``cifar10:DIR`` reads ``data_batch_1.bin`` … ``data_batch_5.bin`` and ``test_batch.bin`` from
  DIR or its ``cifar-10-batches-bin`` subfolder (each record: 1 label byte 0..9, then 3072 pixel
  bytes, the R, G and B planes of 32×32 in row-major order). Images are 3×32×32.
* ``stl10:DIR`` reads ``train_X.bin``, ``train_y.bin``, ``test_X.bin``, ``test_y.bin`` from DIR
  or its ``stl10_binary`` subfolder (X: 3 planes of 96×96 per image, each plane column-major;
  y: one byte 1..10 per image, served as 0..9). Images are 3×96×96; the unlabeled set is ignored.

**test** is the test file(s) in file order; the training images (CIFAR-10: batches 1..5 in
order, 50,000; STL-10: 5,000) are cut by a seeded permutation into **val** (``val_fraction`` of
them, rounded, at least one) and **train** (the rest), both stored in that mixed order.
``info["index"]`` is each image's row in its source (for train/val: in the training images).

Nothing is ever unpickled: the CIFAR-10 Python version (``data_batch_1`` without ``.bin``) is
refused. Images are stored as uint8 (``split.inputs``) and divided by 255 shard by shard when
served; ``size=`` (default ``None``: native) resizes them then by bilinear interpolation
(``align_corners=False``, antialiased when shrinking), as :class:`~heatlab.data.digits.DigitSplit` does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from heatlab.data.digits import DEFAULT_SHARD_SIZE, DEFAULT_VAL_FRACTION, _check_fraction, _check_seed, _check_size
from heatlab.data.registry import SPLITS, mixed_order
from heatlab.data.split import ArraySplit, ShardedSplit
from heatlab.errors import HeatlabError

__all__ = [
    "NaturalSplit",
    "cifar10",
    "stl10",
    "CIFAR10_CLASSES",
    "STL10_CLASSES",
    "CIFAR10_FILES",
    "STL10_FILES",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_FILES = (*CIFAR10_TRAIN_FILES, "test_batch.bin")
STL10_FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
_CIFAR_SHAPE = (3, 32, 32)
_STL_SHAPE = (3, 96, 96)
_CIFAR_RECORD = 1 + 3 * 32 * 32  # 3073 bytes
_STL_IMAGE = 3 * 96 * 96  # 27648 bytes


# --------------------------------------------------------------------------------------- the split
class NaturalSplit(ArraySplit):
    """An :class:`ArraySplit` of uint8 colour images served as float32 in [0, 1], optionally resized.

    ``X`` is uint8 ``N×3×h×w`` and stays uint8 in ``inputs`` (50,000 CIFAR images take 150 MB, not
    600 MB); ``load_shard`` returns ``images`` ``n×3×size×size`` (native ``h×w`` when ``size`` is
    ``None``) and ``labels``.
    """

    truth_kind = None

    def __init__(
        self,
        X: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        class_names: Sequence[str],
        *,
        size: int | None = None,
        shard_size: int = DEFAULT_SHARD_SIZE,
        info: dict[str, np.ndarray] | None = None,
    ):
        X = torch.as_tensor(np.ascontiguousarray(X) if isinstance(X, np.ndarray) else X)
        y = torch.as_tensor(np.asarray(y) if isinstance(y, np.ndarray) else y)
        if X.dtype != torch.uint8 or X.dim() != 4 or X.shape[1] != 3:
            raise HeatlabError(f"NaturalSplit needs uint8 colour images N×3×H×W, got {X.dtype} {tuple(X.shape)}; "
                               "pass the raw pixel bytes.")
        if y.dim() != 1 or len(y) != len(X) or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise HeatlabError(f"NaturalSplit needs one whole-number label per image, got {tuple(y.shape)} for "
                               f"{len(X)} images; pass matching arrays.")
        if len(y) and not 0 <= int(y.min()) <= int(y.max()) < len(class_names):
            raise HeatlabError(f"Labels must be whole numbers in 0..{len(class_names) - 1}; pass one class index per image.")
        hw = tuple(X.shape[2:]) if size is None else (_check_size(size),) * 2
        # ArraySplit.__init__ would turn X into float32 whole; set its attributes here instead.
        ShardedSplit.__init__(self, len(y), class_names, shard_size=shard_size, input_shape=(3, *hw))
        self.inputs, self.labels = X.contiguous(), y.to(torch.int64).contiguous()
        self.info = {k: np.asarray(v) for k, v in (info or {}).items()}
        for key, value in self.info.items():
            if len(value) != len(y):
                raise HeatlabError(f"info['{key}'] has {len(value)} entries for {len(y)} images; pass one per image.")
        self.normalization = None
        self.feature_names = None
        self.size = size

    def _load(self, lo: int, hi: int) -> dict[str, torch.Tensor]:
        images = self.inputs[lo:hi].to(torch.float32).div_(255.0)
        hw = tuple(self.input_shape[1:])
        if tuple(images.shape[-2:]) != hw:
            shrink = images.shape[-2] > hw[0] or images.shape[-1] > hw[1]
            images = F.interpolate(images, size=hw, mode="bilinear", align_corners=False,
                                   antialias=shrink).clamp_(0.0, 1.0)
        return {"images": images, "labels": self.labels[lo:hi].clone()}


# --------------------------------------------------------------------------------------- helpers
def _folder(path: str | os.PathLike, subfolder: str, first: str, what: str) -> Path:
    """``path`` itself, or its ``subfolder`` when ``first`` is not in ``path`` but that subfolder exists."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise HeatlabError(f"'{folder}' is not a folder; pass the folder holding the {what} binary files.")
    inner = folder / subfolder
    return inner if not (folder / first).is_file() and inner.is_dir() else folder


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError as exc:
        raise HeatlabError(f"Cannot read '{p}' ({exc}); check its permissions or download it again.") from None


def _cut(name: str, n: int, seed: int, val_fraction: float) -> dict[str, np.ndarray]:
    """Row indices of val and train (a seeded cut of ``n`` training images)."""
    if n < 2:
        raise HeatlabError(f"The {name} training files hold {n} image; they need at least 2 to give train and val.")
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    order = mixed_order(n, seed, name, "val")
    return {"val": order[:n_val], "train": order[n_val:]}


def _splits(
    name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], class_names: Sequence[str],
    *, size: int | None, seed: int, val_fraction: float, shard_size: int,
) -> dict[str, NaturalSplit]:  # fmt: skip
    parts = {**_cut(name, len(train[1]), seed, val_fraction), "test": np.arange(len(test[1]))}
    out = {}
    for split in SPLITS:
        x, y = test if split == "test" else train
        idx = parts[split]
        out[split] = NaturalSplit(x[idx], y[idx], class_names, size=size, shard_size=shard_size, info={"index": idx})
    return out


def _check_options(size: object, seed: object, val_fraction: object) -> tuple[int | None, int, float]:
    return (None if size is None else _check_size(size)), _check_seed(seed), _check_fraction("val_fraction", val_fraction)


# -------------------------------------------------------------------------------------- CIFAR-10
def _read_cifar_batch(p: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = _read(p)
    if not raw or len(raw) % _CIFAR_RECORD:
        raise HeatlabError(
            f"'{p}' holds {len(raw)} bytes, not a positive multiple of {_CIFAR_RECORD} (one CIFAR-10 record); "
            "the file is truncated or not a CIFAR-10 binary batch, download it again."
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0]
    if int(labels.max()) > 9:
        row = int(np.argmax(labels > 9))
        raise HeatlabError(f"'{p}' has label {int(labels[row])} in record {row}, outside 0..9; "
                           "the file is damaged or not a CIFAR-10 batch, download it again.")
    return records[:, 1:].reshape(-1, *_CIFAR_SHAPE), labels.astype(np.int64)


def cifar10(
    path: str | os.PathLike, *, size: int | None = None, seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION, shard_size: int = DEFAULT_SHARD_SIZE,
) -> dict[str, NaturalSplit]:  # fmt: skip
    """CIFAR-10 from the binary batches in folder ``path``: ``{"train", "val", "test"}`` (see the module docstring)."""
    size, seed, val_fraction = _check_options(size, seed, val_fraction)
    outer = Path(path).expanduser()
    folder = _folder(outer, "cifar-10-batches-bin", CIFAR10_FILES[0], "CIFAR-10")
    missing = [name for name in CIFAR10_FILES if not (folder / name).is_file()]
    if missing:
        for name in missing:
            for where in (folder, outer / "cifar-10-batches-py"):
                if (where / name[: -len(".bin")]).is_file():
                    raise HeatlabError(
                        f"'{where / name[: -len('.bin')]}' is the CIFAR-10 Python version (pickled), which heatlab "
                        "never unpickles; download the binary version (cifar-10-binary.tar.gz) and pass its "
                        "cifar-10-batches-bin folder."
                    )
        raise HeatlabError(f"'{folder}' lacks {', '.join(missing)}; put the six CIFAR-10 binary files "
                           f"({', '.join(CIFAR10_FILES)}) in that folder or its cifar-10-batches-bin subfolder.")
    batches = [_read_cifar_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    train = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    del batches
    test = _read_cifar_batch(folder / CIFAR10_FILES[-1])
    return _splits("cifar10", train, test, CIFAR10_CLASSES, size=size, seed=seed, val_fraction=val_fraction,
                   shard_size=shard_size)


# ---------------------------------------------------------------------------------------- STL-10
def _read_stl_pair(x_path: Path, y_path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = _read(x_path)
    if not raw or len(raw) % _STL_IMAGE:
        raise HeatlabError(
            f"'{x_path}' holds {len(raw)} bytes, not a positive multiple of {_STL_IMAGE} (one 3×96×96 STL-10 image); "
            "the file is truncated or not STL-10 binary, download it again."
        )
    # Each plane is stored column-major: read (N, C, W, H) and swap the last two axes.
    images = np.frombuffer(raw, dtype=np.uint8).reshape(-1, *_STL_SHAPE).transpose(0, 1, 3, 2)
    labels = np.frombuffer(_read(y_path), dtype=np.uint8)
    if len(labels) != len(images):
        raise HeatlabError(f"'{y_path}' holds {len(labels)} labels but '{x_path}' {len(images)} images; "
                           "use the X and y files of one STL-10 set.")
    bad = (labels < 1) | (labels > 10)
    if bad.any():
        row = int(np.argmax(bad))
        raise HeatlabError(f"'{y_path}' has label {int(labels[row])} at row {row}, outside 1..10; "
                           "the file is damaged or not an STL-10 label file, download it again.")
    return images, labels.astype(np.int64) - 1


def stl10(
    path: str | os.PathLike, *, size: int | None = None, seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION, shard_size: int = DEFAULT_SHARD_SIZE,
) -> dict[str, NaturalSplit]:  # fmt: skip
    """STL-10 (labelled part) from the binary files in folder ``path``: ``{"train", "val", "test"}``."""
    size, seed, val_fraction = _check_options(size, seed, val_fraction)
    folder = _folder(path, "stl10_binary", STL10_FILES[0], "STL-10")
    missing = [name for name in STL10_FILES if not (folder / name).is_file()]
    if missing:
        raise HeatlabError(f"'{folder}' lacks {', '.join(missing)}; put the four STL-10 binary files "
                           f"({', '.join(STL10_FILES)}, from stl10_binary.tar.gz) in that folder or its "
                           "stl10_binary subfolder.")
    train = _read_stl_pair(folder / "train_X.bin", folder / "train_y.bin")
    test = _read_stl_pair(folder / "test_X.bin", folder / "test_y.bin")
    return _splits("stl10", train, test, STL10_CLASSES, size=size, seed=seed, val_fraction=val_fraction,
                   shard_size=shard_size)
