"""Paper 004's MNIST nets: exact parameter counts, shapes, names, attribution safety."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from heatlab.errors import HeatlabError
from heatlab.explain.attribution import attribute
from heatlab.models import zoo
from heatlab.models.safety import check_attribution_safe

NETS = {  # name: (input size, parameters with 10 classes and 1 channel: paper 004 §4.1)
    "smallnet": (28, 270_578),
    "smallnet140": (140, 273_381),
    "alexnetlike": (28, 2_664_138),
    "alexnetlike140": (140, 2_874_810),
}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(NETS))
def test_parameter_counts_match_the_paper(name):
    model = zoo.create(name, num_classes=10, in_channels=1)
    assert _count(model) == NETS[name][1]


@pytest.mark.parametrize("name", sorted(NETS))
def test_output_shape_safety_and_saliency(name):
    size = NETS[name][0]
    model = zoo.create(name, num_classes=10, in_channels=1, seed=0).eval()
    x = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(0))
    assert model(x).shape == (2, 10)
    assert check_attribution_safe(model, x) == []
    heat = attribute(model, x, "Saliency")
    assert heat.shape == x.shape and torch.isfinite(heat).all()


@pytest.mark.parametrize("name", sorted(NETS))
def test_filter_layers_name_real_modules(name):
    model = zoo.create(name, num_classes=10, in_channels=1)
    modules = dict(model.named_modules())
    layers = model.filter_layers
    assert all(layer in modules for layer in layers)
    # paper 004's relprop_drivethru0003: after the head and each block down to block 3, i.e. at the
    # outputs of the last block ... block2; never at a head layer or the logits, never at block1
    expected = ["block6", "block5", "block4", "block3", "block2"] if name.startswith("smallnet") else \
        ["block5", "block4", "block3", "block2"]
    assert layers == expected


def test_readable_module_names_and_layers():
    small = zoo.create("smallnet", num_classes=10, in_channels=1)
    names = dict(small.named_modules())
    for i in range(1, 7):
        assert isinstance(names[f"block{i}.conv"], nn.Conv2d) and isinstance(names[f"block{i}.bn"], nn.BatchNorm2d)
        assert isinstance(names[f"block{i}.act"], nn.LeakyReLU) and names[f"block{i}.act"].negative_slope == 0.01
    assert names["head1.conv"].kernel_size == (28, 28)
    assert names["head2.conv"].kernel_size == names["head3.conv"].kernel_size == (1, 1)
    s140 = dict(zoo.create("smallnet140", num_classes=10, in_channels=1).named_modules())
    assert s140["block6.conv"].out_channels == 1 and s140["head1.conv"].kernel_size == (140, 140)
    al = dict(zoo.create("alexnetlike", num_classes=10, in_channels=1).named_modules())
    assert al["block1.conv"].padding == (2, 2) and isinstance(al["block1.pool"], nn.MaxPool2d)
    assert "act" not in dict(al["head3"].named_children())
    al2 = dict(zoo.create("alexnetlike140", num_classes=10, in_channels=1).named_modules())
    assert al2["block4.conv"].kernel_size == (15, 15) and al2["block5.conv"].kernel_size == (14, 14)


def test_other_class_and_channel_counts():
    model = zoo.create("smallnet", num_classes=3, in_channels=3, image_size=16)
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 3)
    assert model.heatlab_spec == {"name": "smallnet", "num_classes": 3, "in_channels": 3, "image_size": 16}
    assert zoo.create("alexnetlike", num_classes=4, in_channels=1)(torch.rand(1, 1, 28, 28)).shape == (1, 4)
    assert {"smallnet", "smallnet140", "alexnetlike", "alexnetlike140"} <= set(zoo.available())


def test_wrong_input_size_and_arguments_raise():
    model = zoo.create("smallnet", num_classes=10, in_channels=1)
    with pytest.raises(HeatlabError, match="size=28"):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(HeatlabError):
        zoo.create("smallnet", num_classes=10, in_channels=1, image_size=0)
    with pytest.raises(HeatlabError):
        zoo.create("alexnetlike", num_classes=10, in_channels=1, image_size=28)


def test_seeded_builds_are_identical():
    a = zoo.create("alexnetlike", num_classes=10, in_channels=1, seed=5)
    b = zoo.create("alexnetlike", num_classes=10, in_channels=1, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
