"""The seeded random draws of the SHAP methods (DeepLiftShap, GradientShap).

Drawn once per call from ``torch.Generator().manual_seed(seed)`` on the CPU, independently of the
batch size, and shared by every sample: a sample's attribution does not depend on its batch, the
global RNGs or the device.
"""

from __future__ import annotations

import torch
from torch import Tensor


def shap_baselines(sample_shape: tuple[int, ...], n: int, seed: int, dtype=torch.float32) -> Tensor:
    """The SHAP baseline distribution: ``n×sample_shape`` images uniform in [0, 1] (CPU).

    The first draws of ``torch.Generator().manual_seed(seed)``, so the same seed gives the same
    bytes on every device and DeepLiftShap and GradientShap share the set.
    """
    return _baselines(torch.Generator().manual_seed(seed), sample_shape, n, dtype)


def _baselines(gen: torch.Generator, sample_shape, n: int, dtype) -> Tensor:
    return torch.rand((n, *sample_shape), generator=gen, dtype=dtype)


def gradient_shap_draws(
    sample_shape: tuple[int, ...], n_samples: int, seed: int, *, n_baselines: int = 8,
    baselines: Tensor | None = None, stdevs: float = 0.0, dtype=torch.float32,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """GradientShap's random draws, shared by all samples: ``(baselines, index, alpha, noise)``.

    ``baselines``: the given ``B×sample_shape`` tensor, or :func:`shap_baselines`; then, from the
    same generator, ``index`` (LongTensor ``K = n_samples``: the baseline of each draw), ``alpha``
    (``K``, uniform in [0, 1]) and ``noise`` (``K×sample_shape``, Gaussian with std ``stdevs``).
    All on the CPU except a given ``baselines``, which stays where it is.
    """
    gen = torch.Generator().manual_seed(seed)
    if baselines is None:
        baselines = _baselines(gen, sample_shape, n_baselines, dtype)
    index = torch.randint(baselines.shape[0], (n_samples,), generator=gen)
    alpha = torch.rand(n_samples, generator=gen, dtype=dtype)
    noise = torch.randn((n_samples, *sample_shape), generator=gen, dtype=dtype) * stdevs
    return baselines, index, alpha, noise
