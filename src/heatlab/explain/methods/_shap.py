"""The seeded random draws of the SHAP methods (DeepLiftShap, GradientShap).

Drawn once per call from ``torch.Generator().manual_seed(seed)`` on the CPU, independently of the
batch size, and shared by every sample: a sample's attribution does not depend on its batch, the
global RNGs or the device.

Baseline distributions (``baseline_dist``): ``"normal"`` (default) is ``randn · 0.001``, what the
papers' original code used, i.e. baselines all but equal to the zero tensor the model receives;
``"uniform"`` is uniform in [0, 1] (random images in pixel space).
"""

from __future__ import annotations

import torch
from torch import Tensor

from heatlab.errors import HeatlabError


#: Baseline distributions of the SHAP methods (see the module docstring).
BASELINE_DISTS = ("normal", "uniform")
#: Standard deviation of the ``"normal"`` baselines (the papers' ``randn · 0.001``).
NORMAL_SCALE = 0.001


def shap_baselines(sample_shape: tuple[int, ...], n: int, seed: int, dtype=torch.float32, *,
                   dist: str = "normal") -> Tensor:
    """The SHAP baseline distribution: ``n×sample_shape`` draws of ``dist`` (CPU).

    The first draws of ``torch.Generator().manual_seed(seed)``, so the same seed gives the same
    bytes on every device and DeepLiftShap and GradientShap share the set.
    """
    return _baselines(torch.Generator().manual_seed(seed), sample_shape, n, dtype, dist)


def check_baseline_dist(dist: str) -> None:
    if dist not in BASELINE_DISTS:
        raise HeatlabError(f"Unknown baseline_dist {dist!r}; choose 'normal' (randn·0.001, the papers' code) "
                           "or 'uniform' (uniform in [0, 1]).")


def _baselines(gen: torch.Generator, sample_shape, n: int, dtype, dist: str) -> Tensor:
    check_baseline_dist(dist)
    if dist == "uniform":
        return torch.rand((n, *sample_shape), generator=gen, dtype=dtype)
    return torch.randn((n, *sample_shape), generator=gen, dtype=dtype) * NORMAL_SCALE


def gradient_shap_draws(
    sample_shape: tuple[int, ...], n_samples: int, seed: int, *, n_baselines: int = 8,
    baselines: Tensor | None = None, stdevs: float = 0.0, dtype=torch.float32, baseline_dist: str = "normal",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """GradientShap's random draws, shared by all samples: ``(baselines, index, alpha, noise)``.

    ``baselines``: the given ``B×sample_shape`` tensor, or :func:`shap_baselines` of
    ``baseline_dist``; then, from the
    same generator, ``index`` (LongTensor ``K = n_samples``: the baseline of each draw), ``alpha``
    (``K``, uniform in [0, 1]) and ``noise`` (``K×sample_shape``, Gaussian with std ``stdevs``).
    All on the CPU except a given ``baselines``, which stays where it is.
    """
    gen = torch.Generator().manual_seed(seed)
    if baselines is None:
        baselines = _baselines(gen, sample_shape, n_baselines, dtype, baseline_dist)
    index = torch.randint(baselines.shape[0], (n_samples,), generator=gen)
    alpha = torch.rand(n_samples, generator=gen, dtype=dtype)
    noise = torch.randn((n_samples, *sample_shape), generator=gen, dtype=dtype) * stdevs
    return baselines, index, alpha, noise
