"""Reading the heatmaps ``heatlab evaluate`` stored (``<run>/heatmaps/<split>/<branch>/<method>.safetensors``).

The report draws these files and nothing else: it never attributes, generates data or loads a
model. One file per (split, branch, method) holds ``attributions`` (float16, each sample divided
by its largest magnitude), ``scale``, ``inputs``, ``labels``, ``predictions``, ``shard``, ``index``
and, when the data has ground truth, ``truth``; its metadata key "heatlab" records split, branch,
method, input_kind, truth_kind and selection ("gallery": per shard the first correct and the first
wrong sample of each class; "all").
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from heatlab.errors import HeatlabError
from heatlab.run.rundir import RunDir

REQUIRED = ("attributions", "inputs", "labels", "predictions", "shard", "index")


@dataclass
class StoredHeatmaps:
    """The tensors of one stored heatmap file (CPU; attributions/inputs/truth as float32)."""

    meta: dict
    attributions: torch.Tensor
    inputs: torch.Tensor
    labels: torch.Tensor
    predictions: torch.Tensor
    shard: torch.Tensor
    index: torch.Tensor
    truth: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def input_kind(self) -> str:
        return str(self.meta.get("input_kind") or ("image" if self.inputs.dim() == 4 else "table"))

    @property
    def truth_kind(self) -> str | None:
        return self.meta.get("truth_kind") if self.truth is not None else None

    def rows_of(self, keys: list[tuple[int, int]]) -> torch.Tensor:
        """Row numbers of the samples ``(shard, index)``; a HeatlabError names a missing one."""
        where = {(int(k), int(i)): j for j, (k, i) in enumerate(zip(self.shard.tolist(), self.index.tolist()))}
        missing = [key for key in keys if key not in where]
        if missing:
            raise HeatlabError(f"The stored heatmaps of {self.meta.get('method')} lack sample(s) (shard, index) "
                               f"{missing[:3]}; run `heatlab evaluate` again.")
        return torch.tensor([where[key] for key in keys], dtype=torch.int64)

    def first_per_class(self) -> dict[int, list[int]]:
        """Per true class (ascending): rows of the first correctly and the first wrongly predicted
        sample in (shard, index) order (one or two rows)."""
        order = sorted(range(len(self)), key=lambda j: (int(self.shard[j]), int(self.index[j])))
        picked: dict[int, dict[bool, int]] = {}
        for j in order:
            label, ok = int(self.labels[j]), bool(self.labels[j] == self.predictions[j])
            picked.setdefault(label, {}).setdefault(ok, j)
        return {c: [r[ok] for ok in (True, False) if ok in r] for c, r in sorted(picked.items())}


def heatmap_path(run_dir: str | os.PathLike, split: str, branch: str, method: str):
    return RunDir(run_dir).heatmaps(split, branch, method)


def has_heatmaps(run_dir: str | os.PathLike, split: str, branch: str, method: str) -> bool:
    try:
        return heatmap_path(run_dir, split, branch, method).is_file()
    except HeatlabError:  # an unknown split or branch name
        return False


def load_heatmaps(run_dir: str | os.PathLike, split: str, branch: str, method: str) -> StoredHeatmaps:
    """The stored heatmaps of (``split``, ``branch``, ``method``), checked; HeatlabError names the fix."""
    from safetensors import safe_open

    path = heatmap_path(run_dir, split, branch, method)
    fix = f"run `heatlab evaluate {run_dir} --split {split}` again"
    if not path.is_file():
        raise HeatlabError(f"No stored heatmaps for {method} of {branch} ('{path}' is missing); {fix}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("heatlab")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(raw) if raw else {}
    except Exception:  # safetensors and json raise several types for a broken file
        raise HeatlabError(f"Stored heatmaps '{path}' are unreadable; {fix}.") from None
    missing = [k for k in REQUIRED if k not in tensors]
    n = len(tensors.get("labels", ()))
    if missing or not isinstance(meta, dict):
        raise HeatlabError(f"Stored heatmaps '{path}' lack {', '.join(missing) or 'their metadata'}; {fix}.")
    if any(t.dim() == 0 or t.shape[0] != n for t in tensors.values()):
        raise HeatlabError(f"The tensors of '{path}' have different sample counts; {fix}.")
    if tensors["attributions"].shape != tensors["inputs"].shape:
        raise HeatlabError(f"The attributions and inputs of '{path}' differ in shape; {fix}.")
    truth = tensors.get("truth")
    return StoredHeatmaps(
        meta=meta, attributions=tensors["attributions"].float(), inputs=tensors["inputs"].float(),
        labels=tensors["labels"].long(), predictions=tensors["predictions"].long(), shard=tensors["shard"].long(),
        index=tensors["index"].long(), truth=None if truth is None else truth.float(),
    )
