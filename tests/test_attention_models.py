"""Paper 000's appendix models in the zoo: CXCMultiSPA, ccfFPA, drybeanFPA (seeded, CPU, small inputs)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from heatlab.errors import HeatlabError
from heatlab.explain.attribution import attribute
from heatlab.models import safety, zoo
from heatlab.models.attention import FPA, SPA

# name -> (num_classes, input shape of one sample) as in the paper.
PAPER = {"cxcmultispa": (4, (1, 256, 256)), "ccffpa": (2, (28,)), "drybeanfpa": (7, (16,))}


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ parameter counts from the layer list


def _conv(c_in: int, c_out: int, k: int, dims: int, bias: bool = True) -> int:
    return c_in * c_out * k**dims + (c_out if bias else 0)


def _bn(c: int) -> int:
    return 2 * c  # weight and bias (running statistics are buffers)


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _spa(c_in: int, c_out: int) -> int:
    """DESIGN §4.7: (in→7, k7), (7→7, k3), (7→17, k3), (17→2c, k3), each Conv2d + BatchNorm2d."""
    stages = [(c_in, 7, 7), (7, 7, 3), (7, 17, 3), (17, 2 * c_out, 3)]
    return sum(_conv(a, b, k, 2) + _bn(b) for a, b, k in stages)


def _fpa(c_out: int) -> int:
    """DESIGN §4.7: Conv1d(1, 7, k7) + BN1d, Conv1d(7, 2c, k3) + BN1d."""
    return _conv(1, 7, 7, 1) + _bn(7) + _conv(7, 2 * c_out, 3, 1) + _bn(2 * c_out)


def test_layer_lists_add_up_to_the_papers_counts():
    cxc = _spa(1, 128) + _conv(1, 3, 3, 2, bias=False) + _spa(3, 16) + _linear(256, 4)
    assert (_spa(1, 128), _spa(3, 16)) == (41_884, 7_626)
    assert cxc == 50_565
    assert _fpa(7) + _linear(49, 2) == 506
    assert _fpa(14) + _linear(196, 7) == 2_121


@pytest.mark.parametrize(("name", "expected"), [("cxcmultispa", 50_565), ("ccffpa", 506), ("drybeanfpa", 2_121)])
def test_zoo_models_have_the_papers_parameter_counts(name, expected):
    num_classes, shape = PAPER[name]
    model = zoo.create(name, num_classes=num_classes, in_channels=1, seed=0)
    assert _count(model) == expected


def test_cxcmultispa_submodules_match_the_layer_list():
    model = zoo.create("cxcmultispa", num_classes=4, in_channels=1, seed=0)
    parts = {name: _count(m) for name, m in model.named_children()}
    assert parts == {"spa1": _spa(1, 128), "deconv": 27, "act": 0, "spa2": _spa(3, 16), "fc": _linear(256, 4)}
    assert model.deconv.bias is None and model.act.negative_slope == 0.01


# ------------------------------------------------------------------ shapes, zoo arguments, safety


def test_cxcmultispa_intermediate_shapes_and_attention_rows():
    model = zoo.create("cxcmultispa", num_classes=4, in_channels=1, seed=0).eval()
    seen = {}
    hooks = [
        getattr(model, n).register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, o))
        for n in ("spa1", "deconv", "spa2")
    ]
    try:
        with torch.no_grad():
            out = model(_rand(2, 1, 256, 256))
    finally:
        for h in hooks:
            h.remove()
    assert out.shape == (2, 4)
    assert seen["spa1"].shape == (2, 128, 128)
    assert seen["deconv"].shape == (2, 3, 257, 257)  # (128 − 1)·2 + 3
    assert seen["spa2"].shape == (2, 16, 16)
    for name in ("spa1", "spa2"):  # softmax over the last axis: every row sums to 1
        assert torch.allclose(seen[name].sum(-1), torch.ones(2, seen[name].shape[1]), atol=1e-5)


def test_block_stages_follow_the_layer_list():
    spa = SPA(1, 128)
    kinds = [type(m) for m in spa.stages]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 4
    convs = [m for m in spa.stages if isinstance(m, nn.Conv2d)]
    got = [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs]
    assert got == [(1, 7, (7, 7), (2, 2), (0, 0)), (7, 7, (3, 3), (2, 2), (0, 0)),
                   (7, 17, (3, 3), (2, 2), (0, 0)), (17, 256, (3, 3), (2, 2), (0, 0))]  # fmt: skip
    fpa = FPA(14)
    assert [type(m) for m in fpa.stages] == [nn.Conv1d, nn.BatchNorm1d, nn.ReLU] * 2
    convs = [m for m in fpa.stages if isinstance(m, nn.Conv1d)]
    got = [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs]
    assert got == [(1, 7, (7,), (1,), (0,)), (7, 28, (3,), (1,), (0,))]


@pytest.mark.parametrize("block", ["spa", "fpa"])
def test_attention_is_softmax_of_queries_times_keys_over_root_c(block):
    """Q = first c channels of the last stage, K = last c, softmax(Q Kᵀ/√c) over the last axis."""
    if block == "spa":
        module, x, c = SPA(2, 5).eval(), _rand(2, 2, 40, 52), 5
        z = module.stages(x).flatten(2)
    else:
        module, x, c = FPA(6).eval(), _rand(2, 20), 6
        z = module.stages(x.unsqueeze(1))
    q, k = z[:, :c], z[:, c:]
    scores = torch.einsum("bil,bjl->bij", q, k) / c**0.5
    expected = torch.exp(scores) / torch.exp(scores).sum(-1, keepdim=True)
    with torch.no_grad():
        assert torch.allclose(module(x), expected, atol=1e-6)


def test_blocks_give_c_by_c_attention_whatever_the_input_size():
    spa = SPA(2, 5).eval()
    fpa = FPA(6).eval()
    with torch.no_grad():
        assert spa(_rand(3, 2, 35, 35)).shape == spa(_rand(3, 2, 70, 49)).shape == (3, 5, 5)
        assert fpa(_rand(3, 9)).shape == fpa(_rand(3, 40)).shape == (3, 6, 6)


@pytest.mark.parametrize("name", sorted(PAPER))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_shape_safety_and_batch_independence(name, in_channels):
    num_classes = 5
    model = zoo.create(name, num_classes=num_classes, in_channels=in_channels, seed=1).eval()
    shape = (in_channels, 64, 64) if name == "cxcmultispa" else PAPER[name][1]
    x = _rand(3, *shape, seed=2)
    with torch.no_grad():
        out = model(x)
        alone = model(x[1:2])
    assert out.shape == (3, num_classes) and torch.isfinite(out).all()
    assert torch.allclose(out[1:2], alone, atol=1e-5)  # eval mode: no mixing across the batch
    assert safety.check_attribution_safe(model, x) == []
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_in_channels_builds_cxc_first_conv_and_is_ignored_by_fpa():
    cxc = zoo.create("cxcmultispa", num_classes=4, in_channels=3, seed=0)
    assert cxc.spa1.stages.conv0.in_channels == 3
    assert _count(cxc) == 50_565 + 2 * 7 * 7 * 7  # two more input channels of the 7×7 conv
    for name in ("ccffpa", "drybeanfpa"):
        counts = {_count(zoo.create(name, num_classes=PAPER[name][0], in_channels=c)) for c in (1, 3)}
        assert len(counts) == 1


def test_num_features_is_a_recorded_kwarg_checked_on_input():
    model = zoo.create("ccffpa", num_classes=2, in_channels=1, num_features=12, seed=0).eval()
    assert model.heatlab_spec == {"name": "ccffpa", "num_classes": 2, "in_channels": 1, "num_features": 12}
    assert _count(model) == 506  # the feature count changes no parameter
    rebuilt = zoo.create(**model.heatlab_spec)
    assert rebuilt.num_features == 12
    assert zoo.create("drybeanfpa", num_classes=7).heatlab_spec["num_features"] == 16
    assert zoo.create("ccffpa", num_classes=2).heatlab_spec["num_features"] == 28
    with torch.no_grad():
        assert model(_rand(4, 12)).shape == (4, 2)
        with pytest.raises(HeatlabError, match="N×12"):
            model(_rand(4, 28))
        with pytest.raises(HeatlabError, match="N×12"):
            model(_rand(4, 1, 12))


@pytest.mark.parametrize("bad", [8, 0, 2.5, True, "28"])
def test_bad_num_features_is_refused(bad):
    with pytest.raises(HeatlabError, match="num_features"):
        zoo.create("drybeanfpa", num_classes=7, num_features=bad)


def test_too_small_or_flat_images_are_refused():
    model = zoo.create("cxcmultispa", num_classes=4, in_channels=1, seed=0).eval()
    with torch.no_grad():
        model(_rand(1, 1, 35, 35))  # the smallest size that works
        for shape in [(1, 1, 34, 64), (1, 35, 35)]:
            with pytest.raises(HeatlabError, match="H, W >= 35"):
                model(_rand(*shape))


def test_weights_round_trip_through_safetensors(tmp_path):
    model = zoo.create("drybeanfpa", num_classes=7, seed=3)
    zoo.save_weights(model, tmp_path / "w.safetensors")
    other = zoo.load_weights(zoo.create(**model.heatlab_spec, seed=4), tmp_path / "w.safetensors")
    x = _rand(5, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), other.eval()(x))


# ------------------------------------------------------------------ training and attribution


def _image_batch(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes: a bright quadrant (class k lights quadrant k) on faint noise."""
    y = torch.arange(n) % 4
    x = 0.1 * _rand(n, 1, size, size, seed=seed)
    half = size // 2
    for i, c in enumerate(y.tolist()):
        r, q = divmod(c, 2)
        x[i, 0, r * half : (r + 1) * half, q * half : (q + 1) * half] += 0.8
    return x, y


def _table_batch(n: int, classes: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k has a large feature k on small Gaussian noise."""
    y = torch.arange(n) % classes
    x = 0.3 * torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    x[torch.arange(n), y] += 3.0
    return x, y


@pytest.mark.parametrize(
    ("name", "batch"),
    [
        ("cxcmultispa", lambda: _image_batch(12, 48, seed=0)),
        ("ccffpa", lambda: _table_batch(16, 2, 28, seed=0)),
        ("drybeanfpa", lambda: _table_batch(28, 7, 16, seed=0)),
    ],
)
def test_a_few_adam_steps_lower_the_loss(name, batch):
    x, y = batch()
    model = zoo.create(name, num_classes=int(y.max()) + 1, in_channels=1, seed=0).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    if name != "cxcmultispa":  # (its BatchNorm running statistics need more steps to settle)
        with torch.no_grad():
            assert (model.eval()(x).argmax(1) == y).float().mean() >= 0.85


@pytest.mark.parametrize("name", sorted(PAPER))
def test_saliency_is_the_gradient_of_the_predicted_logit(name):
    num_classes, shape = PAPER[name]
    if name == "cxcmultispa":
        shape = (1, 48, 48)
    model = zoo.create(name, num_classes=num_classes, in_channels=1, seed=0).eval()
    x = _rand(3, *shape, seed=5)
    sal = attribute(model, x, "Saliency")
    assert sal.shape == x.shape

    xr = x.clone().requires_grad_()
    logits = model(xr)
    pred = logits.argmax(1)
    (grad,) = torch.autograd.grad(logits.gather(1, pred[:, None]).sum(), xr)
    assert grad.abs().amax() > 0
    assert torch.allclose(sal, grad.abs(), rtol=1e-4, atol=1e-6 * float(grad.abs().amax()))
    assert model.training is False
