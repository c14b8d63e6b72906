"""Input standardisation carried by a model: data statistics, the model's spec, training's --normalize."""

from __future__ import annotations

import pytest
import torch

from heatlab.data.split import ArraySplit, channel_stats
from heatlab.errors import HeatlabError
from heatlab.models import zoo
from heatlab.models.normalize import make_normalize
from heatlab.models.training import TrainConfig, normalize_spec


def _split(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 6, 5, generator=g) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)
    return ArraySplit(x, torch.arange(n) % 3, class_names=["a", "b", "c"], shard_size=7), x


def test_channel_stats_equal_the_per_channel_mean_and_std():
    split, x = _split()
    stats = channel_stats(split)
    want_mean = x.double().mean((0, 2, 3))
    want_std = x.double().permute(1, 0, 2, 3).reshape(3, -1).std(1, unbiased=False)
    torch.testing.assert_close(torch.tensor(stats["mean"], dtype=torch.float64), want_mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.tensor(stats["std"], dtype=torch.float64), want_std, atol=1e-6, rtol=0)
    # the first max_samples images in shard order
    first = channel_stats(split, max_samples=10)
    torch.testing.assert_close(torch.tensor(first["mean"], dtype=torch.float64), x[:10].double().mean((0, 2, 3)),
                               atol=1e-6, rtol=0)


def test_training_gives_image_models_the_data_statistics_and_records_them():
    split, _ = _split()
    spec = normalize_spec(TrainConfig(), split)
    assert spec == channel_stats(split)
    model = zoo.create("cellcnn", num_classes=3, in_channels=3, normalize=spec)
    assert model.heatlab_spec["normalize"] == spec  # rebuilt from the spec when the run is loaded
    x = torch.rand(2, 3, 32, 32)
    z = (x - torch.tensor(spec["mean"]).view(1, 3, 1, 1)) / torch.tensor(spec["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize(x), z)
    torch.testing.assert_close(model.normalize.inverse(z), x, atol=1e-6, rtol=0)
    assert normalize_spec(TrainConfig(normalize="none"), split) is None
    assert normalize_spec(TrainConfig(normalize="imagenet"), split) == "imagenet"
    assert normalize_spec(TrainConfig(model="smallnet"), split) is None  # a builder without normalize=
    with pytest.raises(HeatlabError, match="cannot standardise its input; pass normalize='none'"):
        normalize_spec(TrainConfig(model="smallnet", normalize="imagenet"), split)


def test_bad_normalize_settings_are_one_sentence():
    with pytest.raises(HeatlabError, match="Unknown normalize 'zscore'"):
        TrainConfig(normalize="zscore")
    with pytest.raises(HeatlabError, match="3 finite means and 3 positive stds"):
        make_normalize({"mean": [0.5] * 3, "std": [0.0, 1.0, 1.0]}, 3)
    with pytest.raises(HeatlabError, match="in_channels=3"):
        make_normalize("imagenet", 1)
