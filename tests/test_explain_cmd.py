"""`heatlab explain` and `heatlab.report.overlay` (issue 11, item 2)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from heatlab.cli import app
from heatlab.errors import HeatlabError
from heatlab.explain import attribute
from heatlab.models import zoo
from heatlab.report import overlay
from heatlab.run.explain import load_explanations

runner = CliRunner()

MODEL_FILE = """
from torch import nn

def flat32(*, num_classes, in_channels):   # takes only 32-px images
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 32 * 32, num_classes))
"""


def _invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def _assert_refused(code, text, out, *needles):
    assert code != 0 and "error:" in text and "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text
    assert not out.exists()


@pytest.fixture
def images(tmp_path):
    """Three 32-px RGB PNGs, one in a subfolder, and the same pixels as float32 3×32×32 in [0, 1]."""
    folder = tmp_path / "images"
    (folder / "more").mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    paths = [folder / "a2.png", folder / "a10.png", folder / "more" / "b.png"]
    for path, arr in zip(paths, arrays):
        Image.fromarray(arr).save(path)
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    return folder, paths, pixels


@pytest.fixture
def cell_weights(tmp_path):
    """A heatlab safetensors file of a 3-class cellcnn (its spec is in the file's metadata)."""
    model = zoo.create("cellcnn", num_classes=3, seed=0)
    path = tmp_path / "cellcnn.safetensors"
    zoo.save_weights(model, path)
    return path, model.eval()


def test_stored_attributions_equal_attribute_called_directly(images, cell_weights, tmp_path):
    folder, paths, pixels = images
    weights, model = cell_weights
    out = tmp_path / "out"
    code, text = _invoke("explain", folder, "--weights", weights, "--methods", "Saliency,InputXGradient",
                         "--batch-size", 2, "--out", out)
    assert code == 0, text
    record, t = load_explanations(out)
    assert record["sources"] == [str(p) for p in paths]  # natural order: a2 before a10, subfolders searched
    assert record["methods"] == ["Saliency", "InputXGradient"] and record["model"]["name"] == "cellcnn"
    with torch.no_grad():
        predicted = model(pixels).argmax(1)
    assert torch.equal(t["predictions"], predicted) and torch.equal(t["targets"], predicted)
    for method in record["methods"]:
        reference = attribute(model, pixels, method, target=predicted)
        assert t[method].shape == pixels.shape
        assert torch.allclose(t[method], reference.half().float(), rtol=2e-3, atol=1e-7), method
    assert torch.allclose(t["inputs"], pixels, atol=1e-3)


def test_maps_without_negative_values_are_drawn_on_a_sequential_scale(images, cell_weights, tmp_path):
    folder, _, _ = images
    weights, _ = cell_weights
    out = tmp_path / "out"
    code, text = _invoke("explain", folder, "--weights", weights, "--methods", "Saliency,SmoothGrad,VarGrad,InputXGradient",
                         "--limit", 2, "--out", out)
    assert code == 0, text
    record, t = load_explanations(out)
    assert record["signs"] == {"Saliency": "absolute", "SmoothGrad": "absolute", "VarGrad": "absolute",
                               "InputXGradient": "all"}
    assert (t["InputXGradient"] < 0).any() and all((t[m] >= 0).all() for m in ("Saliency", "SmoothGrad", "VarGrad"))


def test_index_lists_every_image_and_method_with_prediction_and_target(images, cell_weights, tmp_path):
    folder, paths, _ = images
    out = tmp_path / "D[test][bold]x"  # rich markup in a path is printed literally
    before = sorted(p for p in tmp_path.rglob("*"))
    code, text = _invoke("explain", paths[0], paths[2], "--weights", cell_weights[0], "--target", 2, "--out", out)
    assert code == 0 and f"index: {out / 'index.html'}" in text, text
    assert sorted(p for p in tmp_path.rglob("*") if out not in p.parents and p != out) == before  # nothing outside --out
    page = (out / "index.html").read_text()
    record, t = load_explanations(out)
    shown = re.findall(r'<img src="([^"]+)"', page)
    assert len(shown) == 2 * 2 and len(set(shown)) == 4
    for sample_id in record["ids"]:
        for method in ("Saliency", "IntegratedGradients"):
            name = f"overlays/{sample_id}__{method}.png"
            assert name in shown and (out / name).is_file()
    assert page.count("target: 2") == 2 and torch.equal(t["targets"], torch.tensor([2, 2]))
    reference = attribute(cell_weights[1], images[2][[0, 2]], "Saliency", target=2)
    assert torch.allclose(t["Saliency"], reference.half().float(), rtol=2e-3, atol=1e-7)
    for pred in t["predictions"].tolist():
        assert f"predicted: {pred}" in page
    assert sorted(p.name for p in out.iterdir()) == ["attributions.safetensors", "index.html", "inputs", "overlays"]
    assert all((out / "inputs" / f"{i}.png").is_file() for i in record["ids"])


def test_a_runs_branch_on_its_dataset_names_classes(tiny_run, tmp_path):
    data = json.loads((tiny_run / "config.json").read_text())["data_root"]
    out = tmp_path / "out"
    code, text = _invoke("explain", data, "--run", tiny_run, "--branch", "branch-00", "--methods", "Saliency",
                         "--limit", 3, "--target", "RCell", "--out", out)
    assert code == 0, text
    record, t = load_explanations(out)
    names = record["class_names"]
    assert len(record["ids"]) == 3 and record["sources"][0] == "test/0/0" and t["labels"].shape == (3,)
    assert torch.equal(t["targets"], torch.full((3,), names.index("RCell")))
    assert "target: RCell" in (out / "index.html").read_text()


def test_bad_input_is_one_sentence_and_writes_nothing(images, cell_weights, tmp_path, monkeypatch):
    folder, paths, _ = images
    weights = cell_weights[0]
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_refused(*_invoke("explain", empty, "--weights", weights, "--out", out), out, "holds no images")
    _assert_refused(*_invoke("explain", folder, "--weights", weights, "--methods", "Saliency,Magic", "--out", out),
                    out, "Unknown method Magic")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    _assert_refused(*_invoke("explain", broken, "--weights", weights, "--out", out), out, "unreadable")
    model_file = tmp_path / "flat.py"
    model_file.write_text(MODEL_FILE)
    _assert_refused(*_invoke("explain", folder, "--model", f"{model_file}:flat32", "--num-classes", 2, "--size", 16,
                             "--out", out), out, "cannot take images of shape (3, 16, 16)")
    _assert_refused(*_invoke("explain", folder, "--model", f"{model_file}:flat32", "--out", out), out, "--num-classes")
    _assert_refused(*_invoke("explain", folder, "--weights", weights, "--target", "9", "--out", out), out, "0..2")
    code, text = _invoke("explain", folder, "--model", f"{model_file}:flat32", "--num-classes", 2, "--out", out)
    assert code == 0, text  # the same model at its own size works


ODD_MODELS = """
import torch
from torch import nn

class _Net(nn.Module):
    def __init__(self, num_classes, in_channels, mode):
        super().__init__()
        self.fc, self.mode = nn.Linear(in_channels * 32 * 32, num_classes), mode

    def forward(self, x):
        if self.mode == "raise":
            raise ValueError("this model refuses every input")
        y = self.fc(x.flatten(1))
        return (y, y) if self.mode == "tuple" else y

def pair(*, num_classes, in_channels):   # returns (logits, logits)
    return _Net(num_classes, in_channels, "tuple")

def angry(*, num_classes, in_channels):  # raises its own error
    return _Net(num_classes, in_channels, "raise")

def plain(*, num_classes, in_channels):
    return _Net(num_classes, in_channels, "plain")
"""


def test_a_models_own_error_or_tuple_output_is_one_sentence(images, tmp_path):
    folder = images[0]
    out = tmp_path / "out"
    model_file = tmp_path / "odd.py"
    model_file.write_text(ODD_MODELS)
    _assert_refused(*_invoke("explain", folder, "--model", f"{model_file}:pair", "--num-classes", 2, "--out", out),
                    out, f"Model '{model_file}:pair' returns a tuple, not one tensor of logits")
    _assert_refused(*_invoke("explain", folder, "--model", f"{model_file}:angry", "--num-classes", 2, "--out", out),
                    out, f"Model '{model_file}:angry' failed", "ValueError: this model refuses every input")


def test_sizes_and_channels_are_checked_before_anything_runs(images, cell_weights, tmp_path):
    folder, weights = images[0], cell_weights[0]
    out = tmp_path / "out"
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tiny / "t.png")
    _assert_refused(*_invoke("explain", tiny, "--weights", weights, "--out", out), out, "is 4 px high", "--size 224")
    model_file = tmp_path / "odd.py"
    model_file.write_text(ODD_MODELS)
    _assert_refused(*_invoke("explain", folder, "--model", f"{model_file}:plain", "--num-classes", 2,
                             "--in-channels", 0, "--out", out), out, "--in-channels", "got 0")
    code, text = _invoke("explain", tiny, "--weights", weights, "--size", 32, "--out", out)
    assert code == 0, text  # the same tiny image resized to a size the model takes


def test_rerun_into_an_output_folder_inside_the_sources_reads_only_the_sources(images, cell_weights, tmp_path):
    folder, paths, _ = images
    out = folder / "explained"
    for _ in range(2):
        code, text = _invoke("explain", folder, "--weights", cell_weights[0], "--out", out)
        assert code == 0, text
        record, t = load_explanations(out)
        assert record["sources"] == [str(p) for p in paths] and len(t["inputs"]) == 3  # not its own overlays
    overlay_png = next((out / "overlays").iterdir())
    _assert_refused(*_invoke("explain", overlay_png, "--weights", cell_weights[0], "--out", out),
                    tmp_path / "never", "lies inside the output folder")


def test_a_non_utf8_file_name_is_shown_escaped(images, cell_weights, tmp_path):
    folder = images[0]
    odd = os.fsdecode(folder / os.fsdecode(b"caf\xe9.png"))
    try:
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(odd)
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    out = tmp_path / "out"
    code, text = _invoke("explain", folder, "--weights", cell_weights[0], "--out", out)
    assert code == 0 and "Traceback" not in text, text
    record, _ = load_explanations(out)
    assert str(folder / "caf\\xe9.png") in record["sources"]
    assert "caf\\xe9.png" in (out / "index.html").read_text(encoding="utf-8")


def test_temporary_files_of_a_killed_run_are_removed(images, cell_weights, tmp_path):
    import subprocess
    import sys

    from heatlab import files

    out = tmp_path / "out"
    assert _invoke("explain", images[0], "--weights", cell_weights[0], "--out", out)[0] == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / "overlays" / f".0000-a2__Saliency.png.{files._HOST}~{dead.pid}.x1y2.tmp"
    stale.write_bytes(b"half an overlay")
    mine = out / f".note.{files._HOST}~{os.getpid()}.abcd.tmp"  # a live writer's file stays
    mine.write_bytes(b"")
    assert _invoke("explain", images[0], "--weights", cell_weights[0], "--out", out)[0] == 0
    assert not stale.exists() and mine.exists()


# -------------------------------------------------------------------------------------- overlay
def _pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, 8, 10, generator=g), torch.randn(3, 8, 10, generator=g)


def test_overlay_takes_chw_and_hwc_torch_and_numpy_alike():
    image, heat = _pair()
    reference = overlay(image, heat)
    assert reference.shape == (8, 10, 3) and reference.min() >= 0 and reference.max() <= 1
    forms = [(image, heat), (image.permute(1, 2, 0), heat.permute(1, 2, 0)), (image.numpy(), heat.numpy()),
             (image.permute(1, 2, 0).numpy(), heat.permute(1, 2, 0).numpy())]
    for img, h in forms:
        np.testing.assert_array_equal(overlay(img, h), reference)
    np.testing.assert_allclose(overlay(image, heat.sum(0)), reference, atol=1e-6)  # H×W heatmap: summed in float32
    as_uint8 = (image * 255).round().to(torch.uint8)
    np.testing.assert_allclose(overlay(as_uint8, heat), overlay(as_uint8.float() / 255, heat), atol=1e-12)


def test_overlay_colours_follow_the_sign_and_keep_the_image_where_h_is_zero():
    image = torch.full((3, 4, 4), 0.5)
    heat = torch.zeros(4, 4)
    heat[0, 0], heat[1, 1], heat[2, 2] = 1.0, -1.0, 0.25
    out = overlay(image, heat, sign="all", alpha=0.6)
    np.testing.assert_array_equal(out[3, 3], [0.5, 0.5, 0.5])  # h = 0: the image itself
    red, blue = out[0, 0], out[1, 1]
    assert red[0] > 0.7 and red[1] < 0.3 and red[2] < 0.3  # bwr's top colour, weight 0.6
    assert blue[2] > 0.7 and blue[0] < 0.3 and blue[1] < 0.3
    weak = out[2, 2]  # weight 0.6 * 0.25 of a light red: between the image and red
    assert 0.5 < weak[0] < red[0] and weak[0] > weak[1] == weak[2]
    positive = overlay(image, heat, sign="positive")
    np.testing.assert_array_equal(positive[1, 1], [0.5, 0.5, 0.5])  # negative values dropped
    np.testing.assert_array_equal(overlay(image, heat, sign="absolute"), overlay(image, -heat, sign="absolute"))
    grey = overlay(image[:1], heat)
    np.testing.assert_array_equal(grey, out)
    for bad in ({"sign": "both"}, {"alpha": 2}):
        with pytest.raises(HeatlabError):
            overlay(image, heat, **bad)
    with pytest.raises(HeatlabError, match="image's size"):
        overlay(image, torch.zeros(5, 5))


def test_overlay_draws_on_axes_with_a_colour_bar():
    from heatlab.report.figures import new_figure

    fig = new_figure(3, 3)
    ax = fig.add_subplot(1, 1, 1)
    image, heat = _pair(1)
    rgb = overlay(image, heat, ax=ax)
    assert len(fig.axes) == 2  # the image and its colour bar
    np.testing.assert_array_equal(ax.images[0].get_array(), rgb)
    assert fig.axes[1].get_ylim() == (-1.0, 1.0)


def test_explain_has_help_naming_its_options():
    code, text = _invoke("explain", "--help")
    assert code == 0 and "Usage" in text
    for flag in ("--run", "--branch", "--model", "--weights", "--methods", "--target", "--limit", "--device", "--out"):
        assert flag in text


def test_one_extreme_pixel_does_not_fade_the_rest():
    image = torch.full((3, 10, 10), 0.5)
    heat = torch.ones(10, 10)
    heat[0, 0] = 1000.0
    default = overlay(image, heat)  # scale: the 99th percentile of |h|, values clipped
    np.testing.assert_allclose(default[5, 5], default[0, 0])
    by_max = overlay(image, heat, outlier_perc=0)  # scale max|h|: the rest is nearly the image
    np.testing.assert_allclose(by_max[5, 5], [0.5, 0.5, 0.5], atol=2e-3)
    assert by_max[0, 0][0] > 0.7
    with pytest.raises(HeatlabError, match="outlier_perc"):
        overlay(image, heat, outlier_perc=100)


def test_a_model_without_weights_gets_one_warning_and_cam_uses_its_last_conv(images, tmp_path):
    """`explain --model torchvision:resnet18` without --weights: one warning line on the CLI and the page;
    LayerGradCam at the last convolution (layer4.1.conv2), named on the CLI and the page; --layer chooses another."""
    from safetensors.torch import save_file

    folder, _, pixels = images
    out = tmp_path / "out"
    code, text = _invoke("explain", folder, "--model", "torchvision:resnet18", "--num-classes", 3,
                         "--methods", "Saliency,LayerGradCam", "--out", out)
    assert code == 0, text
    flat = " ".join(text.split())
    warning = ("warning: torchvision:resnet18 has random weights (no --weights given); its explanations say nothing "
               "about a trained model")
    assert flat.count(warning) == 1 and flat.count("warning:") == 1
    assert "CAM layer: layer4.1.conv2 (the last nn.Conv2d; LayerGradCam and GuidedGradCam use it)" in flat
    record, t = load_explanations(out)
    assert (record["cam_layer"], record["random_weights"]) == ("layer4.1.conv2", True)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "<b>layer4.1.conv2</b> (the last nn.Conv2d)" in page and "has random weights" in page
    net = zoo.create("torchvision:resnet18", num_classes=3, in_channels=3, seed=0).eval()
    x = t["inputs"]
    expected = attribute(net, x, "LayerGradCam", target=t["targets"], layer="layer4.1.conv2")
    torch.testing.assert_close(t["LayerGradCam"], expected.half().float(), atol=1e-3, rtol=1e-2)

    # with the same network's weights: no warning; --layer picks the layer, and the page says so
    weights = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    out2 = tmp_path / "out2"
    code, text = _invoke("explain", folder, "--model", "torchvision:resnet18", "--num-classes", 3, "--weights", weights,
                         "--methods", "LayerGradCam", "--layer", "layer3.1.conv2", "--out", out2)
    assert code == 0, text
    assert "warning:" not in text and "CAM layer: layer3.1.conv2 (chosen with --layer" in " ".join(text.split())
    record, _ = load_explanations(out2)
    assert (record["cam_layer"], record["random_weights"]) == ("layer3.1.conv2", False)
    assert "has random weights" not in (out2 / "index.html").read_text(encoding="utf-8")


def test_a_layer_the_model_lacks_lists_its_convolutions_and_writes_nothing(images, cell_weights, tmp_path):
    folder, _, _ = images
    weights, model = cell_weights
    out = tmp_path / "out"
    convs = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    code, text = _invoke("explain", folder, "--weights", weights, "--methods", "LayerGradCam", "--layer", "nope",
                         "--out", out)
    _assert_refused(code, text, out, "Layer 'nope' is not a module of the model (its convolutional layers are "
                    f"{', '.join(convs)}); pass --layer NAME with one of them.")
    assert " ".join(text.split()).count("error:") == 1


def test_a_killed_explain_resumes_its_unfinished_units_to_the_same_file(tiny_run, tmp_path, monkeypatch):
    """One unit per (method, shard of images): stopped after 3 of 6 units, the same request again runs
    only the other 3 and writes the bytes of a run that never stopped; then the parts are gone."""
    from heatlab.run import explain

    monkeypatch.setattr(explain, "SHARD", 4)  # 10 images: shards of 4, 4, 2 per method
    data = json.loads((tiny_run / "config.json").read_text())["data_root"]
    args = dict(methods="Saliency,IntegratedGradients", run=tiny_run, branch="0", limit=10, batch_size=2)
    explain.explain_run(data, tmp_path / "whole", **args)

    class Kill(Exception):
        pass

    def kill_after_three(task, done, total):
        if task == "explain" and done == 3:
            raise Kill

    cut = tmp_path / "cut"
    with pytest.raises(Kill):
        explain.explain_run(data, cut, progress=kill_after_three, **args)
    assert not (cut / "attributions.safetensors").exists() and len(list((cut / "parts").rglob("*.done.json"))) == 3
    seen = []
    explain.explain_run(data, cut, progress=lambda task, done, total: task == "explain" and seen.append((done, total)), **args)
    assert seen == [(3, 6), (4, 6), (5, 6), (6, 6)]
    assert (cut / "attributions.safetensors").read_bytes() == (tmp_path / "whole" / "attributions.safetensors").read_bytes()
    assert not (cut / "parts").exists()
