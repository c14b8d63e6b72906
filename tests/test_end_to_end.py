"""Every CLI stage on every kind of data: train -> evaluate -> ax -> gax -> report through `heatlab`.

Three datasets: the built-in cells, scikit-learn's wine table, and an image folder with masks
(cells written as PNG files, their ground truth as level masks or as binary masks), so the same
commands are proved on a cell folder, on a table and on a user's own images.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from heatlab.cli import app
from heatlab.data import cells

runner = CliRunner()


def _ok(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.output


def _pipeline(data: str, run, *, model: str, train_args=(), methods: str = "Saliency,IntegratedGradients") -> dict[str, str]:
    out = {"train": _ok("train", "--data", data, "--out", run, "--model", model, "--branches", 1, *train_args)}
    out["evaluate"] = _ok("evaluate", run, "--methods", methods)
    out["ax"] = _ok("ax", run, "--methods", methods)
    out["gax"] = _ok("gax", run, "--first-n-correct", 2, "--max-steps", 5, "--batch-size", 2)
    out["report"] = _ok("report", run)
    return out


def _page(run) -> str:
    return (run / "report" / "index.html").read_text(encoding="utf-8")


def _cell_folder(root, *, binary: bool, n: int = 48, size: int = 64, seed: int = 0, names=("ccell", "rcell")):
    """Cells of two classes (CCell, RCell) as PNG image folders, with their truth as mask PNGs."""
    batch = cells.generate(n * 6, size=size, seed=seed)
    keep = [i for i, label in enumerate(batch.labels.tolist()) if label in (0, 3)][:n]
    names = dict(zip((0, 3), names))
    for j, i in enumerate(keep):
        split = ("train", "train", "val", "test")[j % 4]
        cls = names[int(batch.labels[i])]
        image = (batch.images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        truth = batch.truth[i].numpy()
        mask = np.where(truth > 0, 255, 0) if binary else np.rint(truth * 255)
        for folder, array in ((root / split / cls, image), (root / "masks" / split / cls, mask.astype(np.uint8))):
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder / f"cell{j:03d}.png")
    return root


@pytest.fixture(scope="module")
def cell_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-cells")
    _ok("data", "cells", "--out", root / "data", "--size", 64, "--seed", 1, "--shards", "train=2,val=1,test=1",
        "--shard-size", 20)
    outputs = _pipeline(str(root / "data"), root / "run", model="cellcnn",
                        train_args=("--epochs", 1, "--branch-epochs", 1, "--batch-size", 10, "--eval-every", 2))
    return root / "run", outputs


def test_cells_go_through_every_stage(cell_run):
    run, outputs = cell_run
    for table in ("five_band", "roc", "localisation", "co", "co_gap"):
        assert (run / "tables" / f"{table}.parquet").is_file(), table
    assert (run / "heatmaps" / "test" / "branch-00" / "Saliency.safetensors").is_file()
    assert json.loads((run / "evaluate.json").read_text())["skipped"] == []
    assert (run / "gax" / "gax.json").is_file()
    page = _page(run)
    assert "Recall against precision" in page and "Generative AX" in page


def test_wine_goes_through_every_stage(tmp_path):
    run = tmp_path / "wine"
    outputs = _pipeline("wine", run, model="drybeanfpa",
                        train_args=("--epochs", 30, "--branch-epochs", 5, "--batch-size", 16, "--lr", 0.01))
    summary = json.loads((run / "evaluate.json").read_text())
    assert summary["input_kind"] == "table" and summary["truth_kind"] is None
    assert "ground truth" in outputs["evaluate"]  # says in one sentence what it skipped and why
    assert not (run / "tables" / "five_band.parquet").exists()
    co = pd.read_parquet(run / "tables" / "co.parquet")
    assert set(co["method"]) == {"Saliency", "IntegratedGradients"} and len(co) > 0
    stored = run / "heatmaps" / "test" / "branch-00" / "Saliency.safetensors"
    from safetensors.torch import load_file

    heatmaps = load_file(str(stored))
    assert heatmaps["attributions"].shape == (summary["samples"], 13)  # tables: every sample, one value a feature
    page = _page(run)
    assert "Augmentative eXplanation" in page
    assert "Recall against precision" not in page  # nothing to draw without ground truth


@pytest.mark.parametrize("binary", [False, True], ids=["level-masks", "binary-masks"])
def test_image_folder_with_masks_goes_through_every_stage(tmp_path, binary):
    # Class names with '$' (matplotlib read "true c$\\qq, predicted r$\\qq" as mathtext: a parse error).
    root = _cell_folder(tmp_path / "pets", binary=binary, names=("c$\\qq", "r$\\qq") if binary else ("ccell", "rcell"))
    run = tmp_path / "run"
    outputs = _pipeline(f"folder:{root}", run, model="cellcnn", methods="Saliency,LayerGradCam",
                        train_args=("--epochs", 2, "--branch-epochs", 1, "--batch-size", 8, "--eval-every", 2))
    summary = json.loads((run / "evaluate.json").read_text())
    assert summary["truth_kind"] == ("mask" if binary else "levels")
    loc = pd.read_parquet(run / "tables" / "localisation.parquet")
    assert len(loc) == 2 * summary["samples"] and loc["auc/cell"].notna().all()
    assert (run / "tables" / "five_band.parquet").exists() == (not binary)
    if binary:
        assert "binary" in outputs["evaluate"]
    assert (run / "heatmaps" / "test" / "branch-00" / "LayerGradCam.safetensors").is_file()
    assert "Augmentative eXplanation" in _page(run)
    if binary:
        assert "c$\\qq" in _page(run)


def test_bad_dataset_specs_get_one_sentence(tmp_path):
    for spec, needle in (("nosuchdata", "cells:PATH"), ("folder:", "folder:PATH"), ("wine:/x", "takes no path")):
        result = runner.invoke(app, ["train", "--data", spec, "--out", str(tmp_path / "r")])
        assert result.exit_code != 0 and "Traceback" not in result.output and needle in result.output, result.output
    assert not (tmp_path / "r").exists()
