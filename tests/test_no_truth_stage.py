"""`heatlab evaluate` scores every dataset with the no-truth metrics: tables/no_truth.parquet on a table
(wine) and on an image folder without masks, equal to direct calls of the metric functions (the slow
reference: one call per metric on the same inputs and attributions), Random always among the methods,
resumable per unit, --metrics selection, and bad input in one sentence with nothing written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from heatlab.cli import app
from heatlab.explain.attribution import attribute
from heatlab.models.training import predict
from heatlab.run.rundir import RunDir
from heatlab.score import complexity, faithfulness, randomisation

runner = CliRunner()


def _ok(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _fail(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _reference(run_dir, branch: str, method: str, fn, **options) -> np.ndarray:
    """The slow reference: one direct call of ``fn`` on the whole test split of ``branch``."""
    run = RunDir(run_dir)
    model = run.load_model(branch).eval()
    data = run.open_data("test")
    x = torch.cat([data.load_shard(k)["images"] for k in range(data.num_shards)])
    y = predict(model, (x, torch.zeros(len(x), dtype=torch.long)), 25)[0]
    seed = run.seed()
    explain = lambda m, xx, yy: attribute(m, xx, method, target=yy, seed=seed, batch_size=25).detach()  # noqa: E731
    a = explain(model, x, y)
    kw = {"explain_func": explain} if fn is randomisation.emprt else {}
    return fn(model, x, y, a, seed=seed, **kw, **options).numpy()


@pytest.fixture()
def wine(tiny_wine_run, tmp_path):
    run = tmp_path / "wine"
    shutil.copytree(tiny_wine_run, run)
    return run


def test_wine_gets_no_truth_scores_equal_to_direct_calls(wine):
    out = _ok("evaluate", wine, "--methods", "Saliency,InputXGradient", "--replace", "--metrics", "deletion,sparseness,emprt")
    table = pd.read_parquet(RunDir(wine).no_truth_table)
    assert list(table.columns) == ["branch", "method", "metric", "sample", "value"]
    branches, n = RunDir(wine).require_branches(), len(RunDir(wine).open_data("test"))
    assert len(table) == len(branches) * 3 * 3 * n  # branch × (2 methods + Random) × metric × sample
    assert list(table["method"].unique()) == ["Saliency", "InputXGradient", "Random"]
    assert list(table["metric"].unique()) == ["deletion", "sparseness", "emprt"]
    for b in branches:
        for method in ("Saliency", "Random"):
            for metric, fn in (("deletion", faithfulness.deletion), ("sparseness", complexity.sparseness),
                               ("emprt", randomisation.emprt)):
                rows = table[(table.branch == b) & (table.method == method) & (table.metric == metric)]
                assert rows["sample"].tolist() == list(range(n))
                np.testing.assert_allclose(rows["value"].to_numpy(), _reference(wine, b, method, fn), rtol=1e-10)
    summary = json.loads((wine / "no_truth.json").read_text())
    assert summary["control"] == "Random" and "Random" in out and "floor" in out
    assert set(summary["best"]) == {"deletion", "sparseness", "emprt"}


def test_default_set_and_family_selection(wine):
    _ok("evaluate", wine, "--methods", "Saliency", "--replace")
    summary = json.loads((wine / "no_truth.json").read_text())
    assert set(summary["metrics"]) == {"deletion", "insertion", "sparseness", "complexity"}  # none re-explains
    assert summary["metrics"]["deletion"]["options"] == {"n_steps": 10}
    _ok("evaluate", wine, "--methods", "Saliency", "--replace", "--metrics", "randomisation,sparseness")
    table = pd.read_parquet(RunDir(wine).no_truth_table)
    assert list(table["metric"].unique()) == ["mprt", "emprt", "smprt", "random_logit", "sparseness"]
    out = _ok("evaluate", wine, "--methods", "Saliency", "--replace", "--metrics", "faithfulness")
    assert "irof" in out and "need image inputs" in out  # a family leaves out what tables cannot feed, and says so
    assert "irof" not in set(pd.read_parquet(RunDir(wine).no_truth_table)["metric"])


def test_resume_after_deleting_a_marker_recomputes_only_that_unit(wine):
    _ok("evaluate", wine, "--methods", "Saliency", "--replace", "--metrics", "sparseness,deletion")
    parts = RunDir(wine).parts("no_truth", "test")
    markers = sorted(parts.rglob("*.done.json"))
    assert len(markers) == 2  # (Saliency, Random) × one branch × one shard
    before = {p: p.stat().st_mtime_ns for p in markers}
    table = pd.read_parquet(RunDir(wine).no_truth_table)
    gone = markers[0]
    gone.unlink()
    _ok("evaluate", wine, "--methods", "Saliency", "--metrics", "sparseness,deletion")
    assert gone.is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p != gone)
    pd.testing.assert_frame_equal(pd.read_parquet(RunDir(wine).no_truth_table), table)
    # other metrics change every unit's settings: all are recomputed
    _ok("evaluate", wine, "--methods", "Saliency", "--metrics", "sparseness")
    assert all(p.stat().st_mtime_ns != t for p, t in before.items() if p != gone)


def _png_folder(root, n: int = 24, size: int = 32):
    """Two classes of PNGs (bright left half or bright right half, with noise), no masks."""
    g = np.random.default_rng(0)
    for i in range(n):
        cls = i % 2
        img = g.integers(0, 60, (size, size, 3)).astype(np.uint8)
        img[:, cls * size // 2:(cls + 1) * size // 2] += 150
        folder = root / ("left", "right")[cls]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"img{i:03d}.png")
    return root


def test_image_folder_without_masks_gets_no_truth_scores(tmp_path):
    from heatlab.models.training import TrainConfig
    from heatlab.run.training import train_run

    root = _png_folder(tmp_path / "pics")
    run = tmp_path / "run"
    train_run(f"folder:{root}", run, TrainConfig(model="cellcnn", epochs=1, branches=1, branch_epochs=1,
                                                    batch_size=8, eval_every=1, seed=1), data_options={"size": 32})
    out = _ok("evaluate", run, "--methods", "Saliency", "--metrics", "region_perturbation_morf,sparseness")
    assert "ground truth" in out
    summary = json.loads((run / "no_truth.json").read_text())
    assert summary["metrics"]["region_perturbation_morf"]["options"] == {"patch_size": 2}  # 32 px / 16
    table = pd.read_parquet(RunDir(run).no_truth_table)
    n = len(RunDir(run).open_data("test"))
    assert len(table) == 1 * 2 * 2 * n and set(table["method"]) == {"Saliency", "Random"}
    b = RunDir(run).require_branches()[0]
    rows = table[(table.branch == b) & (table.method == "Saliency") & (table.metric == "region_perturbation_morf")]
    np.testing.assert_allclose(rows["value"].to_numpy(),
                               _reference(run, b, "Saliency", faithfulness.region_perturbation, patch_size=2), rtol=1e-10)
    message = _fail("evaluate", run, "--patch-size", "33")
    assert "--patch-size 33 does not fit the 32×32 images" in message


def test_bad_input_is_one_sentence_naming_the_problem(wine, tiny_run):
    cases = [
        ((wine, "--metrics", "nosuch"), ["'nosuch'", "faithfulness", "randomisation", "sparseness"]),
        ((wine, "--metrics", "region_perturbation_morf"), ["needs image inputs", "irof"]),
        ((wine, "--metrics", "auc/cell"), ["needs ground truth"]),
        ((wine, "--metrics", "localisation"), ["needs ground truth"]),
        ((wine, "--perturb-baseline", "purple"), ["purple", "black, white, mean, uniform, blur"]),
        ((wine, "--perturb-baseline", "blur"), ["blurs images"]),
        ((tiny_run, "--patch-size", "65"), ["does not fit the 64×64 images"]),
    ]
    before = sorted(p.name for p in wine.rglob("*"))
    for args, needles in cases:
        message = _fail("evaluate", *args)
        assert all(w in message for w in needles), message
    assert sorted(p.name for p in wine.rglob("*")) == before


def test_nan_heatmaps_are_one_sentence_and_write_nothing(wine):
    from safetensors.torch import load_file, save_file

    from heatlab.files import sha256_file

    run = RunDir(wine)
    b = run.require_branches()[0]
    weights = load_file(str(run.weights(b)))
    weights = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, str(run.weights(b)))
    info_path = run.model_dir(b) / "model.json"
    info = json.loads(info_path.read_text())
    info["weights_sha256"] = sha256_file(run.weights(b))
    info_path.write_text(json.dumps(info))
    message = _fail("evaluate", wine, "--methods", "Saliency", "--replace", "--metrics", "sparseness")
    assert "Saliency gave NaN or infinite heatmaps" in message
    assert not run.no_truth_table.exists()
