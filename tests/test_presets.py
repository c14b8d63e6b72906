"""The papers' attribution settings as presets, SHAP baseline distributions and the two clamp orders."""

from __future__ import annotations

import pytest
import torch

from heatlab.errors import HeatlabError
from heatlab.explain import attribute, channel_adjust
from heatlab.explain.methods import shap_baselines
from heatlab.explain.presets import PRESETS, STAGE_DEFAULTS, get_preset


def test_presets_give_the_documented_settings():
    assert STAGE_DEFAULTS["evaluate"] == "paper002" and STAGE_DEFAULTS["ax"] == "paper000"
    assert get_preset(None, "evaluate").kwargs("Saliency") == {"abs": True}  # paper 002: |gradient|
    assert get_preset(None, "ax").kwargs("Saliency") == {"abs": False}  # papers 000/001: signed
    for name in ("paper002", "paper000"):
        for method in ("DeepLiftShap", "GradientShap"):
            assert PRESETS[name].kwargs(method) == {"baseline_dist": "normal"}
    assert PRESETS["uniform"].kwargs("GradientShap") == {"baseline_dist": "uniform"}
    assert get_preset(None, "ax").kwargs("LayerGradCam") == {}  # the first conv: heatlab's default CAM layer
    record = PRESETS["paper000"].record(["Saliency", "DeepLift"])
    assert record["preset"] == "paper000" and record["options"] == {"Saliency": {"abs": False}}
    with pytest.raises(HeatlabError, match="Unknown preset 'nope'; choose one of paper002, paper000, uniform"):
        get_preset("nope", "ax")


def test_shap_baselines_are_randn_times_0001_by_default_and_uniform_on_request():
    normal = shap_baselines((3, 8, 8), 4, seed=1)
    want = torch.randn((4, 3, 8, 8), generator=torch.Generator().manual_seed(1)) * 0.001
    torch.testing.assert_close(normal, want, rtol=0, atol=0)
    uniform = shap_baselines((3, 8, 8), 4, seed=1, dist="uniform")
    torch.testing.assert_close(uniform, torch.rand((4, 3, 8, 8), generator=torch.Generator().manual_seed(1)))
    with pytest.raises(HeatlabError, match="Unknown baseline_dist 'gauss'"):
        shap_baselines((3, 8, 8), 4, seed=1, dist="gauss")


def test_signed_and_absolute_saliency_differ_only_in_sign():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    x = torch.rand(2, 3, 2, 2)
    signed = attribute(model, x, "Saliency", target=0, abs=False)
    torch.testing.assert_close(signed.view(2, -1), model[1].weight[0].detach().expand(2, -1))
    torch.testing.assert_close(attribute(model, x, "Saliency", target=0), signed.abs())


def test_clamp_orders_on_hand_made_arrays():
    # one sample, two channels of two pixels; raw peak 0.4
    h = torch.tensor([[[[0.4, 0.02]], [[-0.05, 0.2]]]])
    # paper: /0.4 -> [1, .05], [-.125, .5]; clip ±0.1 -> [.1, .05], [-.1, .1]; sum -> [0, .15]; /0.15
    torch.testing.assert_close(channel_adjust(h, clamp=(-0.1, 0.1)), torch.tensor([[[0.0, 1.0]]]))
    # original: clip raw ±0.1 -> [.1, .02], [-.05, .1]; /0.1 -> [1, .2], [-.5, 1]; sum -> [.5, 1.2]; /1.2
    torch.testing.assert_close(channel_adjust(h, clamp=(-0.1, 0.1), clamp_order="original"),
                               torch.tensor([[[0.5 / 1.2, 1.0]]]))
    # attributions all below the bound: the original order's clip changes nothing
    small = h / 10
    torch.testing.assert_close(channel_adjust(small, clamp=(-0.1, 0.1), clamp_order="original"), channel_adjust(small))
    # an all-zero map stays zero in both orders
    for order in ("paper", "original"):
        assert not channel_adjust(torch.zeros(1, 2, 3, 3), clamp=(-0.1, 0.1), clamp_order=order).any()
    with pytest.raises(HeatlabError, match="Unknown clamp_order 'before'"):
        channel_adjust(h, clamp=(-0.1, 0.1), clamp_order="before")
