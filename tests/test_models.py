"""Model zoo and attribution-safety tests (seeded, CPU, small inputs)."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import resnet as tv_resnet

from heatlab.errors import HeatlabError
from heatlab.models import safety, zoo

# Smallest input side each architecture accepts (AlexNet/VGG use 224 px in the paper).
SIZES = {"cellcnn": 32, "resnet34": 32, "alexnet": 63, "vgg16": 32}
CASES = [(name, {}) for name in SIZES] + [("resnet34", {"head": "paper000"}), ("alexnet", {"head": "paper000"})]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=_gen(seed))


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ---------------------------------------------------------------- registry and shapes


def test_registry_lists_the_zoo_and_default():
    names = zoo.available()
    assert set(SIZES) <= set(names)
    assert names == sorted(names)
    assert zoo.DEFAULT_MODEL == "cellcnn"


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[f"{n}-{k.get('head', 'default')}" for n, k in CASES])
@pytest.mark.parametrize("in_channels", [3, 1])
def test_every_model_has_right_output_shape_and_is_attribution_safe(name, kwargs, in_channels):
    model = zoo.create(name, num_classes=7, in_channels=in_channels, seed=0, **kwargs).eval()
    x = _rand(2, in_channels, SIZES[name], SIZES[name])
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    assert safety.check_attribution_safe(model, x[:1]) == []
    assert _no_hooks(model)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == in_channels


def test_cellcnn_default_cell_size_and_contiguous_input_gradient():
    model = zoo.create("cellcnn", num_classes=10, seed=0)
    x = _rand(3, 3, 128, 128).requires_grad_()
    out = model(x)
    assert out.shape == (3, 10) and out.is_contiguous()
    # the model works in channels_last internally; callers must still get ordinary NCHW
    # gradients from autograd.grad (Captum's path), and double backward must work
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x, create_graph=True)
    assert grad.shape == x.shape and grad.is_contiguous()
    (grad2,) = torch.autograd.grad((grad * grad).sum(), x)
    assert grad2.shape == x.shape and torch.isfinite(grad2).all()
    first = next(name for name, m in model.named_modules() if isinstance(m, nn.Conv2d))
    assert first == "features.0.conv"
    # only layer types Captum's LRP has rules for
    allowed = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear)
    assert all(isinstance(m, allowed) for m in model.modules() if next(m.children(), None) is None)


def test_spec_is_json_and_rebuilds_the_same_model():
    model = zoo.create("resnet34", num_classes=4, in_channels=1, seed=3, head="paper000")
    spec = json.loads(json.dumps(model.heatlab_spec))
    assert spec == {"name": "resnet34", "num_classes": 4, "in_channels": 1, "head": "paper000", "normalize": None}
    again = zoo.create(**spec, seed=3)
    a, b = model.state_dict(), again.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    other = zoo.create(**spec, seed=4)
    assert not torch.equal(other.conv1.weight, model.conv1.weight)


def test_seed_leaves_the_global_rng_alone():
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    zoo.create("cellcnn", num_classes=2, seed=5)
    assert torch.equal(torch.rand(3), expected)


def _meta(name: str, **kwargs) -> nn.Module:
    """Build on the meta device: structure only, no memory, instant."""
    with torch.device("meta"):
        return zoo.create(name, **kwargs)


def test_paper_heads_layer_by_layer():
    r = _meta("resnet34", num_classes=10)
    assert isinstance(r.fc, nn.Conv2d) and (r.fc.in_channels, r.fc.out_channels, r.fc.kernel_size) == (512, 10, (1, 1))
    r0 = _meta("resnet34", num_classes=2, head="paper000")
    assert isinstance(r0.fc, nn.Linear) and r0.fc.bias is None and r0.fc.weight.shape == (2, 512)
    a = _meta("alexnet", num_classes=10)
    assert [type(m).__name__ for m in a.classifier] == [
        "Dropout", "Linear", "LeakyReLU", "Dropout", "Linear", "LeakyReLU", "Linear"
    ]
    linear_shapes = [m.weight.shape for m in a.classifier if isinstance(m, nn.Linear)]
    assert linear_shapes == [(4096, 9216), (4096, 4096), (10, 4096)]
    a0 = _meta("alexnet", num_classes=2, head="paper000")
    assert [type(m).__name__ for m in a0.classifier][:6] == ["Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU"]
    assert a0.classifier[6].weight.shape == (2, 4096) and a0.classifier[6].bias is None
    v = _meta("vgg16", num_classes=10)
    assert [type(m).__name__ for m in v.classifier] == ["Dropout", "Linear", "LeakyReLU", "Dropout", "Linear"]
    assert [m.weight.shape for m in v.classifier if isinstance(m, nn.Linear)] == [(4096, 25088), (10, 4096)]


def test_imagenet_normalize_is_a_first_layer_outside_the_state_dict():
    plain = zoo.create("resnet34", num_classes=3, seed=0).eval()
    normed = zoo.create("resnet34", num_classes=3, seed=0, normalize="imagenet").eval()
    assert list(plain.state_dict()) == list(normed.state_dict())
    x = _rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(normed(x), plain((x - mean) / std), atol=1e-5)


def test_backbones_use_torchvision_parameter_names():
    with torch.device("meta"):  # no memory, no download: only names and shapes
        tv = {
            "resnet34": torchvision.models.resnet34(),
            "alexnet": torchvision.models.alexnet(),
            "vgg16": torchvision.models.vgg16(),
        }
    for name, ref in tv.items():
        ours = _meta(name, num_classes=3)
        ref_shapes = {k: v.shape for k, v in ref.state_dict().items()}
        backbone = {k: v.shape for k, v in ours.state_dict().items() if not k.startswith(ours.heatlab_head_prefixes)}
        assert backbone and all(ref_shapes.get(k) == s for k, s in backbone.items()), name


def test_backbone_weights_load_everything_but_the_head(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet34()  # random torchvision weights standing in for a local checkpoint
    path = tmp_path / "resnet34.pth"
    torch.save(ref.state_dict(), path)
    model = zoo.create("resnet34", num_classes=3, seed=1, backbone_weights=path)
    ref_state, state = ref.state_dict(), model.state_dict()
    assert all(torch.equal(state[k], ref_state[k]) for k in state if not k.startswith("fc."))
    assert state["fc.weight"].shape == (3, 512, 1, 1)
    assert "backbone_weights" not in model.heatlab_spec
    grey = zoo.create("resnet34", num_classes=3, in_channels=1, seed=1, backbone_weights=path)
    assert torch.allclose(grey.conv1.weight, ref.conv1.weight.sum(dim=1, keepdim=True))
    partial = {k: v for k, v in ref_state.items() if not k.startswith("layer4")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(HeatlabError, match="layer4"):
        zoo.create("resnet34", num_classes=3, backbone_weights=tmp_path / "partial.pth")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "lenet", "num_classes": 10}, r"alexnet, .*cellcnn, .*resnet34, .*vgg16"),
        ({"name": "cellcnn", "num_classes": 0}, "num_classes"),
        ({"name": "cellcnn", "num_classes": 2.5}, "num_classes"),
        ({"name": "cellcnn", "num_classes": True}, "num_classes"),
        ({"name": "cellcnn", "num_classes": 10, "in_channels": 0}, "in_channels"),
        ({"name": "cellcnn", "num_classes": 10, "depth": 3}, "depth"),
        ({"name": "cellcnn", "num_classes": 10, "widths": []}, "widths"),
        ({"name": "vgg16", "num_classes": 10, "head": "paper000"}, "paper002"),
        ({"name": "resnet34", "num_classes": 10, "in_channels": 1, "normalize": "imagenet"}, "in_channels=3"),
    ],
)
def test_bad_arguments_raise_heatlab_error(kwargs, match):
    with pytest.raises(HeatlabError, match=match):
        zoo.create(**kwargs)


# ---------------------------------------------------------------- weights on disk


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_round_trip_gives_identical_outputs(tmp_path, suffix):
    model = zoo.create("cellcnn", num_classes=10, seed=0)
    with torch.no_grad():  # make BatchNorm statistics non-trivial
        model(_rand(8, 3, 64, 64, seed=1))
    model.eval()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        zoo.save_weights(model, path)
    else:
        torch.save(model.state_dict(), path)
    fresh = zoo.create("cellcnn", num_classes=10, seed=99).eval()
    x = _rand(2, 3, 64, 64, seed=2)
    assert not torch.equal(fresh(x), model(x))
    assert zoo.load_weights(fresh, path) is fresh
    assert torch.equal(fresh(x), model(x))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # atomic write left no temp file


def test_save_weights_handles_tied_and_channels_last_tensors(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 4), nn.Linear(4, 4))
    model[3].weight = model[2].weight  # tied
    model[0].to(memory_format=torch.channels_last)
    zoo.save_weights(model, tmp_path / "tied.safetensors")
    copy = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 4), nn.Linear(4, 4))
    zoo.load_weights(copy, tmp_path / "tied.safetensors")
    assert torch.equal(copy[3].weight, model[2].weight) and torch.equal(copy[0].weight, model[0].weight)
    with pytest.raises(HeatlabError, match=".safetensors"):
        zoo.save_weights(model, tmp_path / "w.bin")


def test_wrong_class_count_names_the_mismatch(tmp_path):
    zoo.save_weights(zoo.create("cellcnn", num_classes=10, seed=0), tmp_path / "w.safetensors")
    five = zoo.create("cellcnn", num_classes=5, seed=0)
    with pytest.raises(HeatlabError, match=r"fc\.weight \(file \(10, 96\), model \(5, 96\)\).*num_classes"):
        zoo.load_weights(five, tmp_path / "w.safetensors")
    with pytest.raises(HeatlabError, match="missing from the file"):
        zoo.load_weights(zoo.create("resnet34", num_classes=10), tmp_path / "w.safetensors")


def test_unreadable_weight_files_raise_heatlab_error(tmp_path):
    model = zoo.create("cellcnn", num_classes=10, seed=0)
    with pytest.raises(HeatlabError, match="does not exist"):
        zoo.load_weights(model, tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(HeatlabError, match="not a valid safetensors"):
        zoo.load_weights(model, tmp_path / "bad.safetensors")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(HeatlabError, match="not a PyTorch state-dict"):
        zoo.load_weights(model, tmp_path / "bad.pt")
    torch.save({"model": model}, tmp_path / "pickled.pt")  # a whole pickled module: refused
    with pytest.raises(HeatlabError, match="refused for safety"):
        zoo.load_weights(model, tmp_path / "pickled.pt")
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "nested.pt")
    with pytest.raises(HeatlabError, match="flat state dict"):
        zoo.load_weights(model, tmp_path / "nested.pt")


# ---------------------------------------------------------------- attribution safety


class InplaceReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(4, 6), nn.ReLU(inplace=True), nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ReusedReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(4, 6), nn.Linear(6, 3), nn.ReLU()

    def forward(self, x):
        return self.act(self.fc2(self.act(self.fc1(x))))


class InplaceAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        y = self.fc1(x)
        y += x
        return self.fc2(y)


class WritesInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x.mul_(2))


def test_check_flags_input_writes_without_touching_the_callers_tensor():
    x = _rand(2, 4)
    before = x.clone()
    problems = safety.check_attribution_safe(_seeded(WritesInput), x)
    assert problems == ["The model modifies its input in place; write the first operations out of place."]
    assert torch.equal(x, before)


def _seeded(cls):
    torch.manual_seed(0)
    return cls()


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (InplaceReLU, "'act' (ReLU) has inplace=True"),
        (ReusedReLU, "'act' (ReLU) is called 2 times"),
        (InplaceAdd, "output of 'fc1' (Linear) is modified in place"),
    ],
)
def test_check_flags_each_unsafe_pattern_once(cls, expected):
    model = _seeded(cls)
    problems = safety.check_attribution_safe(model, _rand(2, 4))
    assert len(problems) == 1 and expected in problems[0]
    assert _no_hooks(model)


@pytest.mark.parametrize("cls", [InplaceReLU, ReusedReLU])
def test_make_safe_fixes_without_changing_outputs_or_the_original(cls):
    model = _seeded(cls)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _rand(5, 4) - 0.5
    expected = model(x.clone())
    safe = safety.make_attribution_safe(model)
    assert safe is not model
    assert safety.check_attribution_safe(safe, x) == []
    assert torch.equal(safe(x.clone()), expected)
    assert list(safe.state_dict()) == list(before)
    assert len(safety.check_attribution_safe(model, x)) == 1  # the original is still unsafe
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_make_safe_reports_what_it_cannot_fix():
    safe = safety.make_attribution_safe(_seeded(InplaceAdd))
    assert len(safety.check_attribution_safe(safe, _rand(2, 4))) == 1


def test_torchvision_resnets_are_flagged_and_fixed():
    torch.manual_seed(0)
    models = {
        "basic": torchvision.models.resnet18(num_classes=5),
        "bottleneck": tv_resnet.ResNet(tv_resnet.Bottleneck, [1, 1, 1, 1], num_classes=5),
    }
    x = _rand(2, 3, 32, 32)
    for kind, model in models.items():
        model.eval()
        problems = safety.check_attribution_safe(model, x)
        assert any("inplace=True" in p for p in problems), kind
        assert any("called" in p and "layer1.0.relu" in p for p in problems), kind
        assert any("'layer1.0.bn" in p and "modified in place" in p for p in problems), kind
        safe = safety.make_attribution_safe(model)
        assert safety.check_attribution_safe(safe, x) == [], kind
        assert list(safe.state_dict()) == list(model.state_dict())
        with torch.no_grad():
            assert torch.equal(safe(x), model(x)), kind
        assert type(model.layer1[0]) is not type(safe.layer1[0])  # original untouched


def test_make_safe_on_a_zoo_model_is_a_plain_copy():
    model = zoo.create("cellcnn", num_classes=3, seed=0).eval()
    safe = safety.make_attribution_safe(model)
    assert type(safe) is type(model) and safe.heatlab_spec == model.heatlab_spec
    x = _rand(2, 3, 32, 32)
    assert torch.equal(safe(x), model(x))
    safe.fc.weight.data.zero_()
    assert model.fc.weight.abs().sum() > 0


def test_check_restores_training_mode_and_state_and_removes_hooks_on_error():
    model = zoo.create("cellcnn", num_classes=3, seed=0).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert safety.check_attribution_safe(model, [_rand(2, 3, 32, 32)]) == []
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # BN stats untouched
    with pytest.raises(RuntimeError):
        safety.check_attribution_safe(model, _rand(2, 5, 32, 32))  # wrong channel count fails in forward
    assert _no_hooks(model) and model.training
    with pytest.raises(HeatlabError, match="example_inputs"):
        safety.check_attribution_safe(model, "not a tensor")


# ---------------------------------------------------------------- can the default model learn?


def _toy_cells(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """32 px images: a bar or a plus, red or green, at random places -> 4 classes."""
    g = _gen(seed)
    labels = torch.arange(n) % 4
    x = 0.1 * torch.rand(n, 3, 32, 32, generator=g)
    for i, label in enumerate(labels.tolist()):
        r, c = torch.randint(6, 26, (2,), generator=g).tolist()
        channel = label % 2  # red or green
        x[i, channel, r - 1 : r + 1, c - 6 : c + 6] = 0.9  # bar
        if label >= 2:  # plus: add a pole
            x[i, channel, r - 6 : r + 6, c - 1 : c + 1] = 0.9
    return x, labels


def test_cellcnn_learns_colour_and_shape():
    x, y = _toy_cells(128, seed=0)
    model = zoo.create("cellcnn", num_classes=4, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(60):
        idx = torch.arange(step * 32, step * 32 + 32) % len(x)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    xt, yt = _toy_cells(256, seed=100)
    with torch.no_grad():
        accuracy = (model.eval()(xt).argmax(1) == yt).float().mean().item()
    assert accuracy >= 0.9  # chance is 0.25; ignoring colour or shape caps it at 0.5


def test_save_weights_is_byte_deterministic(tmp_path):
    # runs record the sha256 of their weights, so one model must always give one file
    model = zoo.create("cellcnn", num_classes=10, seed=0)
    digests = set()
    for i in range(12):  # the old two-key header came out in one of 2 orders at random
        path = tmp_path / f"w{i}.safetensors"
        zoo.save_weights(model, path)
        digests.add(path.read_bytes())
    assert len(digests) == 1


def test_mlp_takes_the_data_shape_and_reloads_from_its_spec(tmp_path):
    """Paper 003's FC classifier: heatlab train records input_shape, so the run's model rebuilds and reloads."""
    import torch

    from heatlab.models.training import TrainConfig
    from heatlab.run.rundir import RunDir
    from heatlab.run.training import train_run

    train_run("wine", tmp_path / "run", TrainConfig(model="mlp", epochs=1, branches=1, batch_size=16, seed=1))
    run = RunDir(tmp_path / "run")
    model = run.load_model(0)
    assert model.heatlab_spec["input_shape"] == [13] and model.heatlab_spec["widths"] == [128, 64]
    x = run.open_data("test").load_shard(0)["images"]
    assert model(x).shape == (len(x), 3)
    with pytest.raises(HeatlabError, match="input_shape"):
        model(torch.zeros(2, 12))
