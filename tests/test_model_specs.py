"""Models from outside the zoo: torchvision:NAME, file.py:fn, package.module:fn and entry points,
recorded in the spec so every stage rebuilds them (issue 11, item 1)."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
import torch
import torchvision.models as tvm
from typer.testing import CliRunner

from heatlab.cli import app
from heatlab.errors import HeatlabError
from heatlab.models import zoo
from heatlab.models.safety import check_attribution_safe

BUILDER = """
from torch import nn

def build(num_classes, in_channels=3, width=4):   # positional parameters, no **kw: heatlab passes only these
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

def not_a_model(*, num_classes):
    return [num_classes]

def raises(*, num_classes):
    raise ValueError("width must be even")

def table(*, num_classes, num_features):
    return nn.Linear(num_features, num_classes)
"""


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "mynet.py"
    path.write_text(BUILDER)
    return path


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package ``hlpkg_specs.nets`` on sys.path and a distribution ``fake-heatlab-models`` whose
    entry points (group heatlab.models) name a working and a broken builder."""
    root = tmp_path / "site"
    (root / "hlpkg_specs").mkdir(parents=True)
    (root / "hlpkg_specs" / "__init__.py").write_text("")
    (root / "hlpkg_specs" / "nets.py").write_text(BUILDER)
    info = root / "fake_heatlab_models-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-heatlab-models\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[heatlab.models]\nfakenet = hlpkg_specs.nets:build\nbrokennet = hlpkg_specs.missing:build\n")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    yield root
    sys.modules.pop("hlpkg_specs.nets", None)
    sys.modules.pop("hlpkg_specs", None)


def _rebuild(model):
    spec = dict(model.heatlab_spec)
    return zoo.create(spec.pop("name"), **spec)


def _same_outputs(a, b, shape=(2, 3, 16, 16)):
    b.load_state_dict(a.state_dict())
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_a_file_builder_is_recorded_by_absolute_path_and_sha256(model_file, monkeypatch):
    monkeypatch.chdir(model_file.parent)
    model = zoo.create("mynet.py:build", num_classes=5, in_channels=3, seed=0)
    spec = model.heatlab_spec
    assert spec["name"] == f"{model_file.resolve()}:build"
    assert len(spec["file_sha256"]) == 64 and spec["width"] == 4 and spec["num_classes"] == 5
    assert json.loads(json.dumps(spec)) == spec
    assert _same_outputs(model, _rebuild(model))
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 5)


def test_a_changed_or_moved_file_says_so_on_rebuild(model_file):
    model = zoo.create(f"{model_file}:build", num_classes=3)
    model_file.write_text(BUILDER.replace("width=4", "width=6"))
    with pytest.raises(HeatlabError, match="changed since the model was built"):
        _rebuild(model)
    model_file.rename(model_file.with_name("elsewhere.py"))
    with pytest.raises(HeatlabError, match="does not exist"):
        _rebuild(model)


def test_training_gives_your_builder_the_data_shape_it_asks_for(model_file):
    from heatlab.models.training import TrainConfig, create_model

    net = create_model(TrainConfig(model=f"{model_file}:table"), 3, (13,))
    assert net.heatlab_spec["num_features"] == 13 and net(torch.rand(2, 13)).shape == (2, 3)
    assert _same_outputs(net, _rebuild(net), (2, 13))


def test_bad_builders_are_one_sentence(model_file):
    with pytest.raises(HeatlabError, match="returned list, not a torch.nn.Module"):
        zoo.create(f"{model_file}:not_a_model", num_classes=3)
    with pytest.raises(HeatlabError, match="raised ValueError: width must be even"):
        zoo.create(f"{model_file}:raises", num_classes=3)
    with pytest.raises(HeatlabError, match="defines no 'nothere'"):
        zoo.create(f"{model_file}:nothere", num_classes=3)
    with pytest.raises(HeatlabError, match="cannot be imported"):
        zoo.create("no_such_pkg_hl.nets:build", num_classes=3)
    with pytest.raises(HeatlabError, match="torchvision:NAME"):
        zoo.create("nosuchnet", num_classes=3)


def test_a_module_builder_and_an_entry_point(package):
    model = zoo.create("hlpkg_specs.nets:build", num_classes=4, in_channels=1)
    assert model.heatlab_spec["name"] == "hlpkg_specs.nets:build" and "file_sha256" not in model.heatlab_spec
    assert _same_outputs(model, _rebuild(model), (2, 1, 8, 8))
    plugged = zoo.create("fakenet", num_classes=4, width=3)
    assert plugged.heatlab_spec["name"] == "fakenet" and plugged[0].out_channels == 3
    assert _same_outputs(plugged, _rebuild(plugged))
    with pytest.raises(HeatlabError, match="distribution 'fake-heatlab-models'"):
        zoo.create("brokennet", num_classes=4)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_architectures_are_torchvision_made_attribution_safe(arch):
    model = zoo.create(f"torchvision:{arch}", num_classes=3, seed=0)
    assert model.heatlab_spec == {"name": f"torchvision:{arch}", "num_classes": 3, "in_channels": 3, "normalize": None}
    reference = tvm.get_model(arch, weights=None, num_classes=3)
    assert set(reference.state_dict()) == set(model.state_dict())  # torchvision checkpoints load as they are
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert check_attribution_safe(reference, x) != []  # in-place ReLU / `+=` in torchvision's own model
    assert check_attribution_safe(model, x) == []
    assert _same_outputs(model, reference, (2, 3, 64, 64))
    grey = zoo.create(f"torchvision:{arch}", num_classes=3, in_channels=1)
    assert grey(torch.rand(2, 1, 64, 64)).shape == (2, 3)
    with pytest.raises(HeatlabError, match="not a torchvision classification architecture"):
        zoo.create("torchvision:resnet19", num_classes=3)


runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_cells(tmp_path_factory):
    from heatlab.data.shards import write_cells

    root = tmp_path_factory.mktemp("specs") / "cells"
    write_cells(root, size=64, seed=1, shards={"train": 1, "val": 1, "test": 1}, shard_size=10)
    return root


def zoo_or_torchvision(model: str) -> bool:
    return model.startswith("torchvision:") or ":" not in model


def _train_then_evaluate(data, run, model):
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(run), "--model", model, "--epochs", "1",
                                 "--branches", "1", "--branch-epochs", "1", "--n-l", "1", "--batch-size", "10"])
    assert result.exit_code == 0, result.output
    trust = [] if zoo_or_torchvision(model) else ["--trust-model-code"]  # the run names the user's own code
    result = runner.invoke(app, ["evaluate", str(run), "--methods", "Saliency", *trust])
    assert result.exit_code == 0, result.output
    return json.loads((run / "model" / "branch-00" / "model.json").read_text())["spec"]


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_cli_trains_and_evaluates_a_torchvision_model(tiny_cells, tmp_path, arch):
    spec = _train_then_evaluate(tiny_cells, tmp_path / "run", f"torchvision:{arch}")
    assert spec["name"] == f"torchvision:{arch}" and spec["normalize"] is not None  # the data's mean/std


def test_cli_trains_and_evaluates_a_file_model_and_refuses_it_changed(tiny_cells, model_file, tmp_path):
    spec = _train_then_evaluate(tiny_cells, tmp_path / "run", f"{model_file}:build")
    assert spec["file_sha256"] and spec["name"].startswith(str(model_file.resolve()))
    model_file.write_text(BUILDER + "\n# edited\n")
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--methods", "Saliency", "--split", "val",
                                 "--trust-model-code"])
    assert result.exit_code != 0 and "changed since the model was built" in result.output
    assert "Traceback" not in result.output


class _DropoutBetweenReusedReLU(torch.nn.Module):
    """Reuses one ReLU and reads self.training in forward (fx would bake the flag into its graph)."""

    def __init__(self):
        super().__init__()
        self.lin, self.act = torch.nn.Linear(6, 6), torch.nn.ReLU()

    def forward(self, x):
        return self.act(torch.nn.functional.dropout(self.act(self.lin(x)), 0.5, self.training))


def test_fx_rewrites_never_bake_the_training_flag():
    from heatlab.models.external import out_of_place
    from heatlab.models.safety import make_attribution_safe

    torch.manual_seed(0)
    model = _DropoutBetweenReusedReLU().train()
    x = torch.rand(4, 6)
    for safe in (make_attribution_safe(model), out_of_place(model)):
        with torch.no_grad():
            assert torch.equal(safe.eval()(x), model.eval()(x))  # dropout off in eval mode
        model.train()


@pytest.mark.parametrize("traced", [True, False])
def test_torchvision_normalize_is_part_of_forward_and_switches_off(traced, monkeypatch):
    from heatlab.explain import attribute
    from heatlab.models import external
    from heatlab.models.input_space import input_space
    from heatlab.models.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize

    if not traced:  # the path for models torch.fx cannot trace: a subclass of the model's class
        monkeypatch.setattr(external, "out_of_place", lambda model: model)
    model = zoo.create("torchvision:resnet18", num_classes=3, normalize="imagenet", seed=0).eval()
    assert isinstance(model, torch.fx.GraphModule) == traced
    reference = tvm.get_model("resnet18", weights=None, num_classes=3).eval()
    reference.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    standardised = Normalize(IMAGENET_MEAN, IMAGENET_STD)(x)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(standardised), atol=1e-5)
        with input_space(model) as (net, to_input):
            assert torch.allclose(net(to_input(x)), reference(standardised), atol=1e-5)
            assert torch.allclose(net(x), reference(x), atol=1e-5)  # switched off inside the block
        assert torch.allclose(model(x), reference(standardised), atol=1e-5)
    # DeepLift hooks the model itself (a forward pre-hook for Normalize broke it): the same attributions
    # as torchvision's model behind a Normalize layer (attribute() makes its attribution-safe copy).
    attr = attribute(model, x, "DeepLift", target=1)
    expected = attribute(torch.nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), reference).eval(), x, "DeepLift",
                         target=1)
    assert torch.allclose(attr, expected, rtol=1e-4, atol=1e-7)
