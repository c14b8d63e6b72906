"""The opt-in methods (NoiseTunnel, Occlusion, FeatureAblation, KernelShap, Lime), create_graph and
the CAM layer default: each against Captum called directly, and the stages' default set unchanged."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import torch
from captum.attr import (
    DeepLift, FeatureAblation, InputXGradient, IntegratedGradients, KernelShap, Lime, NoiseTunnel, Occlusion, Saliency,
)
from captum._utils.models.linear_model import SkLearnLasso
from torch import nn

from heatlab.errors import HeatlabError
from heatlab.explain import METHODS, OPT_IN_METHODS, attribute, cam_layer
from heatlab.explain.methods import REGISTRY, lookup
from heatlab.explain.methods.selection import parse_methods
from heatlab.report.heatmaps import load_heatmaps

# The reference calls Captum directly, which warns about hooks and inputs that did not require grad.
pytestmark = pytest.mark.filterwarnings("ignore:Setting forward, backward hooks", "ignore:Input Tensor 0 did not")

ELEVEN = ("Saliency", "InputXGradient", "DeepLift", "DeepLiftShap", "GradientShap", "GuidedBackprop", "Deconvolution",
          "GuidedGradCam", "LayerGradCam", "IntegratedGradients", "LRP")
OPT_IN = ("NoiseTunnel", "Occlusion", "FeatureAblation", "KernelShap", "Lime", "Random", "SmoothGrad", "SmoothGradSq", "VarGrad")


class TinyCNN(nn.Module):
    """3×16×16 -> 4 logits, one module per activation."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, stride=2)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(6 * 4 * 4, 4)
        self.pool = nn.AdaptiveAvgPool2d(4)

    def forward(self, x):
        return self.fc(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x))))).flatten(1))


def _cnn(seed=0):
    torch.manual_seed(seed)
    return TinyCNN().eval()


def _mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(dtype).eval()


def _images(n=3, seed=1):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _table(n=4, seed=2, dtype=torch.float32):
    return torch.randn(n, 5, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _one_sentence(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg.endswith(".") and ". " not in msg.replace("e.g. ", "") and "\n" not in msg, msg
    return msg


def _patches(c=3, h=16, w=16, side=2):
    """The test's own square-patch mask (row-major ids, all channels together)."""
    mask = torch.zeros(1, c, h, w, dtype=torch.long)
    per_row = math.ceil(w / side)
    for i in range(h):
        for j in range(w):
            mask[0, :, i, j] = (i // side) * per_row + j // side
    return mask


# --- the default set ------------------------------------------------------------------------


def test_default_method_set_is_the_eleven_and_opt_in_names_run_only_when_named():
    from heatlab.cli_common import METHODS_HELP
    from heatlab.run.demo import demo_plan

    assert METHODS == ELEVEN
    assert tuple(parse_methods("all")) == ELEVEN
    assert tuple(parse_methods("all", "table")) == tuple(m for m in ELEVEN if "Cam" not in m)
    assert set(OPT_IN_METHODS) == set(OPT_IN)
    assert not any(REGISTRY[m].default for m in OPT_IN if m in REGISTRY)
    for plan in (demo_plan(), demo_plan(full=True)):  # the demo's plan names no opt-in method
        assert plan.methods == "all" and not set(parse_methods(plan.ax_methods)) & set(OPT_IN)
    for name in OPT_IN:  # the CLI help names every opt-in method
        assert name in METHODS_HELP
    assert parse_methods("VarGrad-DeepLift,Occlusion,Saliency,SmoothGrad") == [
        "Saliency", "Occlusion", "VarGrad-DeepLift", "SmoothGrad"]
    assert parse_methods("KernelShap,SmoothGrad", "table") == ["KernelShap", "SmoothGrad"]
    with pytest.raises(HeatlabError, match="not a gradient method"):  # refused before a stage starts
        parse_methods("Saliency,SmoothGrad-Lime")
    with pytest.raises(HeatlabError) as err:
        parse_methods("Saliency,SmoothGrad-Magic")
    assert "'Magic', which is not a gradient method" in _one_sentence(err)
    with pytest.raises(HeatlabError) as err:
        parse_methods("Saliency,Magic")
    msg = _one_sentence(err)
    assert "Magic" in msg and all(name in msg for name in OPT_IN)


# --- NoiseTunnel ----------------------------------------------------------------------------


def _captum_nt(model, x, target, seed, captum_base, **kw):
    """Captum's NoiseTunnel, one sample at a time, each after torch.manual_seed(seed)."""
    out = []
    for i in range(x.shape[0]):
        torch.manual_seed(seed)
        out.append(NoiseTunnel(captum_base(model)).attribute(x[i : i + 1], target=int(target[i]), **kw))
    return torch.cat(out)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_equals_captum_with_the_same_seed_and_leaves_the_rng(nt_type):
    model, x, t = _cnn(), _images(), torch.tensor([0, 2, 1])
    state = torch.get_rng_state()
    ours = attribute(model, x, "NoiseTunnel", target=t, nt_type=nt_type, nt_samples=5, stdevs=0.2, seed=7, abs=False,
                     nt_samples_batch_size=2)
    assert torch.equal(torch.get_rng_state(), state)
    ref = _captum_nt(model, x, t, 7, Saliency, nt_type=nt_type, nt_samples=5, stdevs=0.2, abs=False)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    if nt_type == "vargrad":
        assert bool((ours >= 0).all()) and float(ours.max()) > 0


@pytest.mark.parametrize("name, base, kw", [("SmoothGrad-IntegratedGradients", IntegratedGradients, {"n_steps": 4}),
                                            ("SmoothGrad-DeepLift", DeepLift, {}),
                                            ("VarGrad-InputXGradient", InputXGradient, {})])
def test_noise_tunnel_over_other_bases_equals_captum(name, base, kw):
    model, x, t = _cnn(), _images(2), torch.tensor([3, 1])
    ours = attribute(model, x, name, target=t, nt_samples=3, stdevs=0.1, seed=2, **kw)
    nt_type = lookup(name)[1]["nt_type"]
    ref = _captum_nt(model, x, t, 2, base, nt_type=nt_type, nt_samples=3, stdevs=0.1, **kw)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # the same through the registry entry with base= and nt_type=
    same = attribute(model, x, "NoiseTunnel", base=name.split("-")[1], nt_type=nt_type, target=t, nt_samples=3,
                     stdevs=0.1, seed=2, **kw)
    assert torch.equal(ours, same)


@pytest.mark.parametrize("base", ["Saliency", "IntegratedGradients", "GuidedBackprop", "DeepLiftShap"])
def test_noise_tunnel_without_noise_equals_the_base(base):
    model, x = _cnn(), _images()
    plain = attribute(model, x, base, target=1, n_steps=4, n_baselines=2)
    smooth = attribute(model, x, "NoiseTunnel", base=base, target=1, n_steps=4, n_baselines=2, nt_samples=1, stdevs=0.0)
    assert torch.equal(plain, smooth)


def test_noise_tunnel_is_seeded_and_independent_of_the_batch():
    model, x = _cnn(), _images(4)
    a = attribute(model, x, "SmoothGrad", target=2, seed=5)
    assert torch.equal(a, attribute(model, x, "SmoothGrad", target=2, seed=5))
    assert not torch.allclose(a, attribute(model, x, "SmoothGrad", target=2, seed=6))
    torch.testing.assert_close(a, attribute(model, x, "SmoothGrad", target=2, seed=5, batch_size=1))
    # per-sample base options (DeepLift's N×... baselines) follow their sample through chunks and noise copies
    b = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    kw = {"target": 2, "nt_samples": 3, "nt_samples_batch_size": 2}
    whole = attribute(model, x, "SmoothGrad-DeepLift", baselines=b, **kw)
    torch.testing.assert_close(whole[1:2], attribute(model, x[1:2], "SmoothGrad-DeepLift", baselines=b[1:2], **kw))
    torch.testing.assert_close(whole, attribute(model, x, "SmoothGrad-DeepLift", baselines=b, batch_size=3, **kw))


def test_noise_tunnel_bad_options_are_one_sentence():
    model, x = _cnn(), _images(1)
    cases = [({"nt_type": "smooth"}, "nt_type"), ({"base": "Occlusion"}, "not a gradient method"),
             ({"base": "LayerGradCam"}, "not a gradient method"), ({"nt_samples": 0}, "nt_samples"),
             ({"stdevs": -1.0}, "stdevs"), ({"bogus": 1}, "bogus")]
    for kw, word in cases:
        with pytest.raises(HeatlabError) as err:
            attribute(model, x, "NoiseTunnel", target=0, **kw)
        assert word in _one_sentence(err)
    with pytest.raises(HeatlabError) as err:
        attribute(model, x, "SmoothGrad-Lime", target=0)
    assert "not a gradient method" in _one_sentence(err)
    with pytest.raises(HeatlabError) as err:
        attribute(model, x, "SmoothGrad", target=0, base="DeepLift")
    assert "already sets base" in _one_sentence(err)


# --- Occlusion, FeatureAblation, KernelShap, Lime ------------------------------------------


def test_occlusion_and_feature_ablation_equal_captum_on_images_and_tables():
    model, x, t = _cnn(), _images(), torch.tensor([0, 1, 2])
    # 16-px images: window 3×2×2 (ceil(16/8)), stride 1 (ceil(2/2)); patches of side 2
    ref = Occlusion(model).attribute(x, sliding_window_shapes=(3, 2, 2), strides=(1, 1, 1), target=t)
    torch.testing.assert_close(attribute(model, x, "Occlusion", target=t), ref)
    ref = Occlusion(model).attribute(x, sliding_window_shapes=(3, 8, 8), strides=(1, 4, 4), target=t, baselines=0.5)
    torch.testing.assert_close(attribute(model, x, "Occlusion", target=t, patch_size=8, baselines=0.5), ref)
    ref = FeatureAblation(model).attribute(x, feature_mask=_patches(), target=t)
    torch.testing.assert_close(attribute(model, x, "FeatureAblation", target=t), ref)
    mlp, xt = _mlp(), _table()
    torch.testing.assert_close(attribute(mlp, xt, "FeatureAblation", target=1),
                               FeatureAblation(mlp).attribute(xt, target=1))
    torch.testing.assert_close(attribute(mlp, xt, "Occlusion", target=1),
                               Occlusion(mlp).attribute(xt, sliding_window_shapes=(1,), target=1))


def test_perturbation_methods_on_a_linear_table_model_give_w_times_x():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3).eval()
    xt = _table(3)
    expected = lin.weight[2].detach() * xt  # f_2(x) - f_2(x with feature j at 0) = w_2j x_j
    for method in ("FeatureAblation", "Occlusion", "KernelShap"):
        torch.testing.assert_close(attribute(lin, xt, method, target=2), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method, kw, make", [
    ("KernelShap", {}, KernelShap),
    ("Lime", {"lasso_alpha": 1e-4}, lambda m: Lime(m, interpretable_model=SkLearnLasso(alpha=1e-4))),
])
def test_kernel_shap_and_lime_equal_captum_per_sample_with_the_seed(method, kw, make):
    model, x, t = _cnn(), _images(2), torch.tensor([1, 3])
    state = torch.get_rng_state()
    ours = attribute(model, x, method, target=t, seed=11, n_samples=40, patch_size=4, **kw)
    assert torch.equal(torch.get_rng_state(), state) and ours.abs().sum() > 0
    mask = _patches(side=4)
    ref = []
    for i in range(2):
        torch.manual_seed(11)
        ref.append(make(model).attribute(x[i : i + 1], target=int(t[i]), feature_mask=mask, n_samples=40,
                                         perturbations_per_eval=16))
    torch.testing.assert_close(ours, torch.cat(ref))
    mlp, xt = _mlp(), _table(2)
    torch.manual_seed(4)
    ref = make(mlp).attribute(xt[1:], target=0, n_samples=30, perturbations_per_eval=16)
    assert ref.abs().sum() > 0
    torch.testing.assert_close(attribute(mlp, xt, method, target=0, seed=4, n_samples=30, **kw)[1:], ref)


@pytest.mark.parametrize("method, kw", [("Occlusion", {}), ("FeatureAblation", {}), ("KernelShap", {}),
                                        ("Lime", {"lasso_alpha": 1e-4})])
def test_perturbation_methods_shapes_batches_and_seeds(method, kw):
    model, x = _cnn(), _images(3)
    a = attribute(model, x, method, target=1, n_samples=24, seed=3, **kw)
    assert a.shape == x.shape and a.dtype == x.dtype and a.abs().sum() > 0
    torch.testing.assert_close(a, attribute(model, x, method, target=1, n_samples=24, seed=3, batch_size=1, **kw))
    assert torch.equal(a, attribute(model, x, method, target=1, n_samples=24, seed=3, **kw))
    if method in ("KernelShap", "Lime"):
        assert not torch.equal(a, attribute(model, x, method, target=1, n_samples=24, seed=4, **kw))
    if method != "Occlusion":  # all channels of a patch share one value
        assert torch.equal(a[:, :1].expand_as(a), a)
    mlp, xt = _mlp(), _table()
    assert attribute(mlp, xt, method, target=0, n_samples=24, **kw).shape == xt.shape


def test_perturbation_bad_options_are_one_sentence():
    model, x = _cnn(), _images(1)
    cases = [("Occlusion", {"patch_size": 17}, "larger than the 16×16 image"),
             ("FeatureAblation", {"patch_size": 40}, "larger than the 16×16 image"),
             ("KernelShap", {"patch_size": 0}, "patch_size"),
             ("Occlusion", {"sliding_window_shapes": (3, 20, 2)}, "larger than one sample"),
             ("Occlusion", {"sliding_window_shapes": (2, 2)}, "sliding_window_shapes"),
             ("Lime", {"feature_mask": torch.zeros(1, 3, 16, 16)}, "integer feature ids"),
             ("FeatureAblation", {"feature_mask": torch.zeros(1, 3, 8, 8, dtype=torch.long)}, "does not fit"),
             ("Lime", {"n_samples": 0}, "n_samples")]
    for method, kw, words in cases:
        with pytest.raises(HeatlabError) as err:
            attribute(model, x, method, target=0, **kw)
        assert words in _one_sentence(err), (method, kw)
    with pytest.raises(HeatlabError) as err:
        attribute(_mlp(), _table(), "Occlusion", target=0, patch_size=2)
    assert "N×C×H×W images only" in _one_sentence(err)


# --- create_graph ---------------------------------------------------------------------------


@pytest.mark.parametrize("method, kw, captum", [
    ("Saliency", {"abs": False}, lambda m, x, t: Saliency(m).attribute(x, target=t, abs=False)),
    ("Saliency", {}, lambda m, x, t: Saliency(m).attribute(x, target=t)),
    ("InputXGradient", {}, lambda m, x, t: InputXGradient(m).attribute(x, target=t)),
    ("IntegratedGradients", {"n_steps": 5},
     lambda m, x, t: IntegratedGradients(m).attribute(x, target=t, n_steps=5)),
    ("IntegratedGradients", {"n_steps": 4, "integration_method": "riemann_trapezoid", "baselines": 0.3},
     lambda m, x, t: IntegratedGradients(m).attribute(x, target=t, n_steps=4, method="riemann_trapezoid",
                                                      baselines=0.3)),
])
def test_create_graph_equals_captum_and_keeps_the_graph(method, kw, captum):
    model, x, t = _cnn(), _images(), torch.tensor([2, 0, 3])
    ref = captum(model, x, t)
    plain = attribute(model, x, method, target=t, **kw)
    graph = attribute(model, x, method, target=t, create_graph=True, **kw)
    assert torch.equal(plain, ref) and not plain.requires_grad
    assert torch.equal(graph.detach(), ref) and graph.requires_grad
    (g,) = torch.autograd.grad(graph.sum(), model.conv1.weight)
    assert g.abs().sum() > 0


@pytest.mark.parametrize("method, kw", [("Saliency", {"abs": False}), ("InputXGradient", {}),
                                        ("IntegratedGradients", {"n_steps": 3}), ("GradientShap", {"n_samples": 2}),
                                        ("SmoothGrad", {"abs": False, "nt_samples": 2})])
def test_gradcheck_of_differentiable_heatmaps(method, kw):
    mlp, x = _mlp(dtype=torch.float64), _table(2, dtype=torch.float64).requires_grad_()

    def heatmap(inputs):
        return attribute(mlp, inputs, method, target=torch.tensor([0, 2]), create_graph=True, **kw)

    assert torch.autograd.gradcheck(heatmap, (x,))
    w = mlp[0].weight.detach().clone().requires_grad_()

    class WithWeight(nn.Module):  # the first layer's weight as the function's argument
        def forward(self, inputs):
            return mlp[2](torch.tanh(nn.functional.linear(inputs, w, mlp[0].bias)))

    assert torch.autograd.gradcheck(lambda weight: attribute(WithWeight(), x.detach(), method, target=1,
                                                             create_graph=True, **kw), (w,))


def test_create_graph_is_refused_by_methods_without_it():
    model, x = _cnn(), _images(1)
    for method in ("DeepLift", "Occlusion", "SmoothGrad-GuidedBackprop"):
        with pytest.raises(HeatlabError) as err:
            attribute(model, x, method, target=0, create_graph=True)
        assert "does not support create_graph=True" in _one_sentence(err)


# --- the CAM layer --------------------------------------------------------------------------


def test_cam_layer_names_the_default_and_the_stages_print_it(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from heatlab.cli import app
    from heatlab.run.training import load_branch

    assert cam_layer(_cnn()) == "conv2" and cam_layer(_cnn(), first=True) == "conv1"
    assert cam_layer(_cnn(), "conv1") == "conv1"
    model = _cnn()
    assert cam_layer(model, model.conv2) == "conv2"
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    convs = [name for name, m in load_branch(run, 0).named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) >= 2
    # the paper presets (evaluate's default paper002) keep the papers' layer: the first convolution
    result = CliRunner().invoke(app, ["evaluate", str(run), "--methods", "LayerGradCam,SmoothGrad", "--batch-size", "10"])
    assert result.exit_code == 0, result.output
    assert len(re.findall(rf"CAM layer: {re.escape(convs[0])} \(the first nn.Conv2d", result.output)) == 1
    summary = json.loads((run / "evaluate.json").read_text())
    assert summary["cam_layer"] == convs[0] and summary["methods"] == ["LayerGradCam", "SmoothGrad"]
    assert summary["attribution"]["cam_layer"] == convs[0]
    # --layer chooses, and the heatmaps follow it
    before = load_heatmaps(run, "test", "branch-00", "LayerGradCam").attributions.clone()
    result = CliRunner().invoke(app, ["evaluate", str(run), "--methods", "LayerGradCam", "--layer", convs[-1],
                                      "--batch-size", "10", "--replace"])
    assert result.exit_code == 0, result.output
    assert f"CAM layer: {convs[-1]} (chosen with --layer" in result.output
    summary = json.loads((run / "evaluate.json").read_text())
    assert (summary["cam_layer"], summary["cam_layer_rule"]) == (convs[-1], "chosen by name")
    assert not torch.equal(load_heatmaps(run, "test", "branch-00", "LayerGradCam").attributions, before)
    # a layer the model does not have: one sentence listing its convolutions, nothing written
    written = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, ["evaluate", str(run), "--methods", "LayerGradCam", "--layer", "nope"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert f"Layer 'nope' is not a module of the model (its convolutional layers are {', '.join(convs)}); pass " \
           "--layer NAME with one of them." in " ".join(result.output.split())
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == written
    # ax under its paper preset keeps the first convolution; --layer chooses there too
    from heatlab.run.ax import ax_run

    assert ax_run(run, methods="LayerGradCam", split="test", holdout_split="none").cam_layer == convs[0]
    result = CliRunner().invoke(app, ["ax", str(run), "--methods", "LayerGradCam", "--layer", convs[-1],
                                      "--holdout-split", "none", "--replace"])
    assert result.exit_code == 0, result.output
    assert f"CAM layer: {convs[-1]} (chosen with --layer" in result.output
    assert json.loads((run / "ax.json").read_text())["attribution"]["cam_layer"] == convs[-1]
    result = CliRunner().invoke(app, ["evaluate", str(run), "--methods", "Saliency,Magic"])
    assert result.exit_code != 0 and "Occlusion" in result.output and "Traceback" not in result.output
