"""LRP through Zennit: conservation, a slow reference from the LRP equations, BatchNorm folding,
relevance recording and filters at chosen layers, every zoo model, the model left unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from heatlab.errors import HeatlabError
from heatlab.explain import attribute
from heatlab.explain.filters import apply_filter
from heatlab.explain.methods.lrp import COMPOSITES, RelevanceRecorder
from heatlab.models import zoo


class TinyNet(nn.Module):
    """conv 2→3 (3×3, padding 1) → BatchNorm → ReLU → flatten → linear 48→4, on 2×4×4 inputs."""

    def __init__(self, bias: bool = True, bn: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, bias=bias)
        self.bn = nn.BatchNorm2d(3) if bn else nn.Identity()
        self.relu = nn.ReLU()
        self.fc = nn.Linear(48, 4, bias=bias)

    def forward(self, x):
        return self.fc(torch.flatten(self.relu(self.bn(self.conv(x))), 1))


def _tiny(bias=True, bn=True, seed=0):
    torch.manual_seed(seed)
    net = TinyNet(bias, bn)
    if bn:  # statistics that make folding matter
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.data.uniform_(0.5, 1.5)
        net.bn.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def _dense(net: TinyNet):
    """The network as two dense layers (BatchNorm folded by hand): [(W1, b1), (W2, b2)] in double."""
    net = copy.deepcopy(net).double()
    with torch.no_grad():
        basis = torch.eye(32, dtype=torch.float64).view(32, 2, 4, 4)
        conv = net.conv
        b0 = conv.bias if conv.bias is not None else torch.zeros(3, dtype=torch.float64)
        w1 = (conv(basis) - b0.view(1, 3, 1, 1)).reshape(32, 48).T  # 48×32
        b1 = b0.repeat_interleave(16)
        if isinstance(net.bn, nn.BatchNorm2d):
            bn = net.bn
            scale = (bn.weight / (bn.running_var + bn.eps).sqrt()).repeat_interleave(16)
            w1, b1 = w1 * scale[:, None], (b1 - bn.running_mean.repeat_interleave(16)) * scale + bn.bias.repeat_interleave(16)
        fc = net.fc
        b2 = fc.bias if fc.bias is not None else torch.zeros(4, dtype=torch.float64)
        return [(w1, b1), (fc.weight.clone(), b2.clone())]


def _stab(z, eps):
    return z + eps * torch.where(z >= 0, 1.0, -1.0)


def _reference(net, x, target, rule: str, eps=1e-6):
    """Relevance at the input from the LRP equations, one sample at a time, layer by layer."""
    (w1, b1), (w2, b2) = _dense(net)
    out = []
    for xi, t in zip(x.double().reshape(len(x), -1), target):
        a1 = (w1 @ xi + b1).clamp(min=0)
        z2 = w2 @ a1 + b2
        r2 = torch.zeros(4, dtype=torch.float64)
        r2[t] = z2[t]
        r1 = a1 * (w2.T @ (r2 / _stab(z2, eps)))  # ε-rule at the linear layer (every composite)
        z1 = w1 @ xi + b1
        if rule == "epsilon":
            r0 = xi * (w1.T @ (r1 / _stab(z1, eps)))
        else:  # α2β1 with non-negative inputs: z+ = x·w+ + b+, z− = x·w− + b−
            wp, wn = w1.clamp(min=0), w1.clamp(max=0)
            zp, zn = wp @ xi + b1.clamp(min=0), wn @ xi + b1.clamp(max=0)
            r0 = xi * (2 * (wp.T @ (r1 / _stab(zp, 1e-6))) - (wn.T @ (r1 / _stab(zn, 1e-6))))
        out.append(r0.view(2, 4, 4))
    return torch.stack(out)


def test_lrp0_conserves_relevance_on_a_bias_free_relu_network():
    net = _tiny(bias=False, bn=False)
    x = torch.rand(5, 2, 4, 4)
    with torch.no_grad():
        logits = net(x)
    target = logits.argmax(1)
    r = attribute(net, x, "LRP", composite="epsilon", epsilon=1e-12, target=target)
    torch.testing.assert_close(r.sum((1, 2, 3)), logits.gather(1, target[:, None]).squeeze(1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("composite, rule", [("epsilon", "epsilon"), ("epsilon_alpha2_beta1", "alpha_beta")])
def test_lrp_equals_the_slow_reference_from_the_equations(composite, rule):
    net = _tiny()
    x = torch.rand(4, 2, 4, 4)
    target = torch.tensor([0, 1, 2, 3])
    got = attribute(net, x, "LRP", composite=composite, epsilon=1e-6, target=target)
    torch.testing.assert_close(got.double(), _reference(net, x, target, rule), rtol=1e-3, atol=1e-6)


def test_starting_from_all_logits_is_the_sum_over_targets():
    net = _tiny()
    x = torch.rand(3, 2, 4, 4)
    every = sum(attribute(net, x, "LRP", composite="epsilon", target=c) for c in range(4))
    torch.testing.assert_close(attribute(net, x, "LRP", composite="epsilon", start="all"), every, rtol=1e-4, atol=1e-6)


def test_folding_batchnorm_keeps_outputs_and_the_model_is_unchanged():
    net = _tiny()
    x = torch.rand(3, 2, 4, 4)
    with torch.no_grad():
        before = net(x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    attribute(net, x, "LRP")
    (w1, b1), (w2, b2) = _dense(net)  # the hand-folded network computes the same logits
    a1 = (x.double().reshape(3, -1) @ w1.T + b1).clamp(min=0)
    torch.testing.assert_close((a1 @ w2.T + b2).float(), before, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(net(x), before, rtol=0, atol=0)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in net.modules())


def test_model_is_unchanged_after_an_error_during_propagation():
    net = _tiny()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    calls = []

    def fail_in_forward(module, args, output):
        calls.append(1)
        raise RuntimeError("boom")

    handle = net.fc.register_forward_hook(fail_in_forward)
    with pytest.raises(RuntimeError, match="boom"):
        attribute(net, torch.rand(2, 2, 4, 4), "LRP", target=0)
    handle.remove()
    assert calls and all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in net.modules())
    assert isinstance(net.bn, nn.BatchNorm2d) and not hasattr(net, "canonizer_sum")


def test_recorded_relevance_is_the_relevance_at_that_layer_and_filters_act_only_there():
    net = _tiny()
    x = torch.rand(4, 2, 4, 4)
    target = torch.tensor([0, 1, 2, 3])
    rec = RelevanceRecorder(["relu", "fc"])
    plain = attribute(net, x, "LRP", composite="epsilon", target=target, record=rec, batch_size=3)
    got = rec.relevance
    assert got["relu"].shape == (4, 3, 4, 4) and got["fc"].shape == (4, 4)
    # at the logits: the start relevance; below the linear layer: the ε-rule's output (the reference's r1)
    logits = net(x).detach()
    torch.testing.assert_close(got["fc"], torch.zeros(4, 4).scatter_(1, target[:, None], logits.gather(1, target[:, None])))
    # a filter at the ReLU's output changes what arrives below it, in the same pass, as the filter says
    rec2 = RelevanceRecorder(["relu"])
    filtered = attribute(net, x, "LRP", composite="epsilon", target=target, record=rec2, filters={"relu": "c0.2"})
    torch.testing.assert_close(rec2.relevance["relu"], apply_filter(got["relu"], "c0.2"))
    assert not torch.allclose(filtered, plain)
    # a filter at the logits that keeps everything ([0, 1]) leaves the heatmap as it was
    torch.testing.assert_close(attribute(net, x, "LRP", composite="epsilon", target=target, filters={"fc": "f1"}), plain)


def test_every_composite_runs_on_every_image_zoo_model():
    for name, ch, size in (("cellcnn", 3, 32), ("resnet34", 3, 32), ("alexnet", 3, 64), ("vgg16", 3, 32),
                           ("smallnet", 1, 28), ("alexnetlike", 1, 28)):
        model = zoo.create(name, num_classes=3, in_channels=ch, seed=0).eval()
        x = torch.rand(2, ch, size, size)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        # every composite on the small nets and ResNet (residual canonizer), the default on the big ones
        for composite in (COMPOSITES if name not in ("alexnet", "vgg16") else ("epsilon_plus",)):
            r = attribute(model, x, "LRP", composite=composite)
            assert r.shape == x.shape and torch.isfinite(r).all() and r.abs().sum() > 0, (name, composite)
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()), name


def test_bad_lrp_settings_are_one_sentence():
    net = _tiny()
    x = torch.rand(2, 2, 4, 4)
    with pytest.raises(HeatlabError, match="Unknown LRP composite 'zplus'"):
        attribute(net, x, "LRP", composite="zplus")
    with pytest.raises(HeatlabError, match="^filters='nope' is not a layer of TinyNet; its layers are conv, bn, relu, fc.$"):
        attribute(net, x, "LRP", filters={"nope": "c0.2"})
    with pytest.raises(HeatlabError, match="^record='conv.x' is not a layer of TinyNet"):
        attribute(net, x, "LRP", record=RelevanceRecorder(["conv.x"]))
    with pytest.raises(HeatlabError, match="^Unknown max-pooling rule maxpool='max'; choose 'average'"):
        attribute(net, x, "LRP", maxpool="max")
    with pytest.raises(HeatlabError, match="Unknown LRP start"):
        attribute(net, x, "LRP", start="some")

    class LoneBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(2)
            self.fc = nn.Linear(32, 2)

        def forward(self, x):
            return self.fc(torch.flatten(self.bn(x), 1))

    with pytest.raises(HeatlabError, match="cannot fold BatchNorm 'bn'"):
        attribute(LoneBN().eval(), x, "LRP")


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_residual_sums_split_relevance_so_lrp0_conserves_it(block):
    """On a bias-free ResNet (BatchNorm at its initial identity statistics, no fc bias), LRP-0 must
    hand the target logit down unchanged; a residual sum treated as a gradient would double it."""
    from torchvision.models.resnet import ResNet

    from heatlab.models.safety import SafeBasicBlock, SafeBottleneck

    torch.manual_seed(0)
    net = ResNet(SafeBasicBlock if block == "basic" else SafeBottleneck, [1, 1, 1, 1], num_classes=3)
    net.relu = nn.ReLU()  # torchvision's stem ReLU is in place
    nn.init.zeros_(net.fc.bias)
    net.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits = net(x)
    target = logits.argmax(1)
    r = attribute(net, x, "LRP", composite="epsilon", epsilon=1e-12, target=target)
    torch.testing.assert_close(r.sum((1, 2, 3)), logits.gather(1, target[:, None]).squeeze(1), rtol=2e-3, atol=1e-5)


def test_fraction_pass_at_the_logits_empties_a_target_start_but_not_an_all_logits_start():
    from heatlab.explain.methods.lrp import filter_layers

    model = zoo.create("smallnet", num_classes=10, in_channels=1, seed=0).eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    logits = "head3"
    assert logits not in filter_layers(model)  # the default layers never include the logits
    # start=target: the logit layer holds one value per sample, its max, which f0.6 (keep [0, 0.6]) drops
    assert attribute(model, x, "LRP", filters={logits: "f0.6"}).abs().sum() == 0
    assert (attribute(model, x, "LRP", start="all", filters={logits: "f0.6"}).flatten(1).abs().amax(1) > 0).all()


class PoolNet(nn.Module):
    """One 2×2 max-pooling layer; its two outputs are the logits (input 1×1×2×4)."""

    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return torch.flatten(self.pool(x), 1)


def test_average_maxpool_rule_splits_each_window_in_proportion_to_its_inputs():
    x = torch.tensor([[[[1.0, 2.0, 5.0, 1.0], [3.0, 4.0, 1.0, 1.0]]]])  # windows [1 2; 3 4] (max 4), [5 1; 1 1] (max 5)
    net = PoolNet().eval()
    # analytic: R_i = x_i / Σ_window x · R_window, R_window = the logit = the window's max
    left = torch.tensor([[1.0, 2.0], [3.0, 4.0]]) / 10 * 4
    right = torch.tensor([[5.0, 1.0], [1.0, 1.0]]) / 8 * 5
    want = torch.cat([left, right], 1).view(1, 1, 2, 4)
    got = attribute(net, x, "LRP", composite="epsilon", start="all", maxpool="average")
    torch.testing.assert_close(got, want)
    only_left = attribute(net, x, "LRP", composite="epsilon", target=0, maxpool="average")
    torch.testing.assert_close(only_left, torch.cat([left, torch.zeros(2, 2)], 1).view(1, 1, 2, 4))
    # winner-take-all (the default of a model that names no rule): each window's maximum gets it all
    winner = torch.zeros(1, 1, 2, 4)
    winner[0, 0, 1, 1], winner[0, 0, 0, 2] = 4.0, 5.0
    for kwargs in ({"maxpool": "winner"}, {}):
        torch.testing.assert_close(attribute(net, x, "LRP", composite="epsilon", start="all", **kwargs), winner)


def test_paper_nets_use_the_average_maxpool_rule_by_default():
    from heatlab.explain.methods.lrp import lrp_maxpool

    model = zoo.create("alexnetlike", num_classes=10, in_channels=1, seed=0).eval()
    assert lrp_maxpool(model) == "average" and lrp_maxpool(model, "winner") == "winner"
    assert lrp_maxpool(zoo.create("cellcnn", num_classes=3, in_channels=3, seed=0)) == "winner"
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    default = attribute(model, x, "LRP")
    torch.testing.assert_close(default, attribute(model, x, "LRP", maxpool="average"))
    assert not torch.allclose(default, attribute(model, x, "LRP", maxpool="winner"))
    # winner-take-all leaves most of block1's relevance exactly 0; the average rule does not
    zeros = {}
    for rule in ("average", "winner"):
        rec = RelevanceRecorder(["block1.act"])
        attribute(model, x, "LRP", maxpool=rule, record=rec)
        zeros[rule] = float((rec.relevance["block1.act"] == 0).double().mean())
    assert zeros["winner"] > 0.7 and zeros["average"] < 0.05


@pytest.mark.parametrize("name", ["smallnet", "alexnetlike"])
def test_fraction_pass_filters_at_the_default_layers_leave_every_heatmap_non_zero(name):
    from heatlab.explain.methods.lrp import filter_layers

    model = zoo.create(name, num_classes=10, in_channels=1, seed=0).eval()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    layers = filter_layers(model)
    for f in ("f0.6", "f0.2", "f0.05"):
        heat = attribute(model, x, "LRP", filters={layer: f for layer in layers})
        assert (heat.flatten(1).abs().amax(1) > 0).all(), f
