"""Sizes of `heatlab demo`: a quick preset for 2 CPU cores and the paper's full preset."""

from __future__ import annotations

from dataclasses import dataclass, field

from heatlab.models.training import TrainConfig


@dataclass(frozen=True)
class DemoPlan:
    """Everything `heatlab demo` needs to know to run data -> train -> evaluate -> report."""

    size: int
    shards: dict[str, int]
    shard_size: int
    train: TrainConfig
    methods: str = "all"
    split: str = "test"
    # AX needs attributions of the held-out split too; the slow sampling methods are left out so the
    # quick demo stays within minutes (`heatlab ax RUN --methods all` runs every method).
    ax_methods: str = "Saliency,InputXGradient,DeepLift,GuidedBackprop,Deconvolution,GuidedGradCam,LayerGradCam"
    gax_images: int = 8
    extras: dict = field(default_factory=dict)


def demo_plan(*, full: bool = False, seed: int = 0) -> DemoPlan:
    """The quick plan (a few minutes on 2 cores) or, with ``full``, the paper's split sizes and 5 branches."""
    if full:
        return DemoPlan(size=128, shards={"train": 32, "val": 8, "test": 8}, shard_size=200,
                        train=TrainConfig(seed=seed, branches=5), ax_methods="all", gax_images=100)
    return DemoPlan(size=128, shards={"train": 24, "val": 4, "test": 2}, shard_size=100,
                    train=TrainConfig(seed=seed, epochs=8, branches=2))
