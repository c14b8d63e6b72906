"""Faithfulness metrics and non-sensitivity: equal to Quantus 0.6 / Captum, analytic cases, batching, bad input."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from heatlab.errors import HeatlabError
from heatlab.score import faithfulness as fa
from heatlab.score import perturb as P
from heatlab.score import quantus as hq


def _cnn(c: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 5)).eval()


def _data(c: int, n: int = 6, size: int = 12):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, c, size, size, generator=g)
    return x, torch.randint(0, 5, (n,), generator=g), torch.randn(n, 1, size, size, generator=g)


@pytest.fixture
def quantus(monkeypatch):
    q = pytest.importorskip("quantus")
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)  # Quantus 0.6 calls np.trapz (gone in NumPy 2.4)
    warnings.simplefilter("ignore")
    return q


def _both(quantus, name, kw, c=3, hkw=None, model=None, data=None, **call):
    model = model or _cnn(c)
    x, y, a = data or _data(c)
    q = getattr(quantus, name)(disable_warnings=True, **kw)(model=model, x_batch=x.numpy(), y_batch=y.numpy(),
                                                            a_batch=a.numpy(), channel_first=True, device="cpu", **call)
    h = getattr(hq, name)(**kw, **(hkw or {}))(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), **call)
    if isinstance(q, dict):
        assert list(q) == list(h)
        q, h = list(q.values()), list(h.values())
    return np.asarray(q, dtype=np.float64), np.asarray(h, dtype=np.float64)


# Deterministic metrics: the same numbers as Quantus (float32 forwards in both; AUCs summed in float32 by Quantus).
@pytest.mark.parametrize("name,kw", [
    ("PixelFlipping", dict(features_in_step=24)),
    ("PixelFlipping", dict(features_in_step=24, return_auc_per_sample=True)),
    ("PixelFlipping", dict(features_in_step=48, perturb_baseline=0.5)),
    ("RegionPerturbation", dict(patch_size=4, regions_evaluation=5)),
    ("RegionPerturbation", dict(patch_size=5, order="lerf", regions_evaluation=6)),  # padded grid
    ("Selectivity", dict(patch_size=3)),
    ("Infidelity", dict(perturb_patch_sizes=[4, 6], n_perturb_samples=2)),
    ("MonotonicityCorrelation", dict(perturb_baseline="black", nr_samples=2, features_in_step=24)),
])
def test_equals_quantus_rgb(quantus, name, kw):
    q, h = _both(quantus, name, kw)
    assert q.shape == h.shape
    np.testing.assert_allclose(h, q, rtol=1e-5, atol=1e-5)


def test_irof_equals_quantus_on_slic_and_on_given_segments(quantus, monkeypatch):
    # Quantus 0.6's IROF only runs on one-channel images (its mask has one channel)
    q, h = _both(quantus, "IROF", dict(perturb_baseline="black", return_aggregate=False), c=1)
    np.testing.assert_allclose(h, q, rtol=1e-5, atol=1e-5)
    seg = (np.arange(12)[:, None] // 4) * 3 + np.arange(12)[None, :] // 4
    import quantus.helpers.utils as qu

    monkeypatch.setattr(qu, "get_superpixel_segments", lambda img, segmentation_method: seg)
    q, h = _both(quantus, "IROF", dict(perturb_baseline=0.0, return_aggregate=False), c=1,
                 hkw=dict(segments=torch.from_numpy(seg).expand(6, 12, 12)))
    np.testing.assert_allclose(h, q, rtol=1e-5, atol=1e-5)


def _forwarded(model: nn.Module) -> list[int]:
    """A list that grows by the batch size of every forward pass of ``model``."""
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _m, i: seen.append(i[0].shape[0]))
    return seen


def test_irof_forwards_each_image_only_until_its_last_superpixel():
    """Images with 4, 16, 9 and 36 superpixels: one forward of x plus one per superpixel of each
    image (none past an image's last one), in batches of at most batch_size; equal to IROF per image."""
    model = _cnn(1)
    x, y, a = _data(1, n=4)
    cell = torch.tensor([6, 3, 4, 2])
    r = torch.arange(12)
    seg = torch.stack([(r[:, None] // s) * (12 // s) + r[None, :] // s for s in cell.tolist()])
    seen = _forwarded(model)
    h = fa.irof(model, x, y, a, segments=seg, batch_size=10)
    assert sum(seen) == 4 + int((12 // cell).square().sum()) and max(seen) <= 10
    alone = torch.cat([fa.irof(model, x[i : i + 1], y[i : i + 1], a[i : i + 1], segments=seg[i : i + 1])
                       for i in range(4)])
    torch.testing.assert_close(h, alone, rtol=1e-6, atol=1e-6)


def test_non_sensitivity_equals_quantus(quantus):
    q, h = _both(quantus, "NonSensitivity", dict(eps=0.05), c=1)
    np.testing.assert_array_equal(h, q)
    assert len(set(h)) > 1


def test_road_without_noise_equals_quantus(quantus):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 3, bias=False)).eval()
    x = torch.randn(20, 1, 12, 12)
    with torch.no_grad():
        y = model(x).argmax(1)
    a = torch.randn(20, 1, 12, 12)
    q, h = _both(quantus, "ROAD", dict(noise=0.0, percentages=[5, 20, 50, 80]), model=model, data=(x, y, a))
    np.testing.assert_allclose(h, q, atol=1e-12)
    assert q[0] > q[-1]  # the curve moves, so the imputation is exercised


def test_faithfulness_correlation_equals_quantus_on_the_same_subsets(quantus, monkeypatch):
    x, y, a = _data(3)
    n, d, runs, size = 6, 3 * 144, 5, 40
    g = torch.Generator().manual_seed(5)
    idx = torch.stack([torch.rand(n, d, generator=g).argsort(1)[:, :size] for _ in range(runs)])
    draws = iter(idx.reshape(-1, size).numpy())  # Quantus draws run by run, sample by sample
    monkeypatch.setattr(np.random, "choice", lambda *args, **kw: next(draws))
    q, h = _both(quantus, "FaithfulnessCorrelation", dict(nr_runs=runs, subset_size=size, return_aggregate=False),
                 hkw=dict(indices=idx), data=(x, y, a))
    np.testing.assert_allclose(h, q, rtol=1e-5, atol=1e-6)


def test_infidelity_equals_captum_with_the_same_noise():
    captum = pytest.importorskip("captum.metrics")
    model = _cnn(3)
    x, y, a = _data(3)
    a = a.expand_as(x)
    noise = 0.1 * torch.randn(4, *x.shape, generator=torch.Generator().manual_seed(2))
    ours = fa.infidelity(model, x, y, a, noise=noise, n_perturb_samples=4)
    # Captum repeats each sample n_perturb_samples times (sample-major) and asks perturb_func for I and x - I
    flat = noise.transpose(0, 1).reshape(-1, *x.shape[1:])

    def perturb(inputs):
        return flat, inputs - flat

    theirs = captum.infidelity(model, perturb, x, a, target=y, n_perturb_samples=4, max_examples_per_batch=24)
    np.testing.assert_allclose(ours.numpy(), theirs.double().numpy(), rtol=1e-4, atol=1e-7)


# Analytic cases: a linear model f(x) = w·x, whose exact attribution (baseline 0) is w⊙x.
def _linear(f: int = 12):
    torch.manual_seed(4)
    w = torch.randn(f, dtype=torch.float64)
    model = nn.Linear(f, 2, bias=False).double().eval()
    with torch.no_grad():
        model.weight[0] = w
        model.weight[1] = 0
    x = torch.rand(5, f, dtype=torch.float64) + 0.1
    return model, x, torch.zeros(5, dtype=torch.long), w


def test_deletion_of_the_exact_attribution_follows_the_known_curve():
    model, x, y, w = _linear()
    a = w * x
    curve = fa.deletion_curve(model, x, y, a, n_steps=12, perturb_baseline=0.0, softmax=False)
    contrib = torch.sort(a, dim=1, descending=True).values
    expected = (x * w).sum(1, keepdim=True) - torch.cat([torch.zeros(5, 1, dtype=torch.float64), contrib.cumsum(1)], 1)
    torch.testing.assert_close(curve, expected)
    pf = fa.pixel_flipping_curve(model, x, y, a, perturb_baseline=0.0, softmax=False)
    torch.testing.assert_close(pf, expected[:, 1:])
    ins = fa.insertion_curve(model, x, y, a, n_steps=12, perturb_baseline=0.0, softmax=False)
    torch.testing.assert_close(ins, torch.cat([torch.zeros(5, 1, dtype=torch.float64), contrib.cumsum(1)], 1))


def test_faithfulness_correlation_of_the_exact_attribution_is_one():
    model, x, y, w = _linear()
    r = fa.faithfulness_correlation(model, x, y, w * x, nr_runs=30, subset_size=4, perturb_baseline=0.0)
    torch.testing.assert_close(r, torch.ones(5, dtype=torch.float64))
    assert (fa.faithfulness_correlation(model, x, y, -w * x, nr_runs=30, subset_size=4, perturb_baseline=0.0) < -0.99).all()


def test_infidelity_of_the_gradient_of_a_linear_model_is_zero():
    model, x, y, w = _linear()
    assert fa.infidelity(model, x, y, w.expand_as(x)).abs().max() < 1e-20
    assert (fa.infidelity(model, x, y, -w.expand_as(x)) > 1e-3).all()


def test_monotonicity_correlation_and_non_sensitivity_of_the_exact_attribution():
    model, x, y, w = _linear()
    w[:3] = 0  # three features the model ignores
    with torch.no_grad():
        model.weight[0] = w
    a = w * x
    r = fa.monotonicity_correlation(model, x, y, a, perturb_baseline=0.0, softmax=False)
    torch.testing.assert_close(r, torch.ones(5, dtype=torch.float64))
    assert (fa.non_sensitivity(model, x, y, a, perturb_baseline=0.0, softmax=False) == 0).all()
    wrong = a.clone()
    wrong[:, 0] = 1.0  # relevance on an ignored feature
    assert (fa.non_sensitivity(model, x, y, wrong, perturb_baseline=0.0, softmax=False) == 1).all()


def test_region_perturbation_aopc_of_a_linear_image_model():
    torch.manual_seed(0)
    w = torch.randn(1, 8, 8, dtype=torch.float64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2, bias=False)).double().eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0] = w.flatten()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    a = w * x
    patch = (a.view(3, 2, 4, 2, 4).sum((2, 4))).flatten(1)  # four 4×4 patches
    drops = torch.sort(patch, dim=1, descending=True).values.cumsum(1)
    got = fa.region_perturbation(model, x, torch.zeros(3, dtype=torch.long), a, patch_size=4, perturb_baseline=0.0,
                                 softmax=False)
    torch.testing.assert_close(got, drops.mean(1))


def test_road_imputation_restores_a_linear_ramp():
    i, j = torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij")
    x = (i + 2 * j).view(1, 1, 10, 10).double()
    removed = torch.zeros(1, 10, 10, dtype=torch.bool)
    removed[0, 2:8, 3:7] = True  # interior: every neighbour weight is there
    out = P.noisy_linear_imputation(x, removed, noise=0.0)
    torch.testing.assert_close(out, x)


def _imputation_by_dense_solve(img, removed):
    """Per image and channel: the ROAD system (Quantus's construction, neighbour weights summed
    inside the image only) as a dense matrix, solved directly."""
    h, w = removed.shape
    unknown = [(i, j) for i in range(h) for j in range(w) if removed[i, j]]
    at = {p: k for k, p in enumerate(unknown)}
    m = torch.zeros(len(unknown), len(unknown), dtype=torch.float64)
    rhs = torch.zeros(len(unknown), img.shape[0], dtype=torch.float64)
    for k, (i, j) in enumerate(unknown):
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                ii, jj, wt = i + di, j + dj, 1 / 6 if di == 0 or dj == 0 else 1 / 12
                if (di, dj) == (0, 0) or not (0 <= ii < h and 0 <= jj < w):
                    continue
                m[k, k] += wt
                if removed[ii, jj]:
                    m[k, at[(ii, jj)]] -= wt
                else:
                    rhs[k] += wt * img[:, ii, jj].double()
    out = img.double().clone()
    sol = torch.linalg.solve(m, rhs)
    for k, (i, j) in enumerate(unknown):
        out[:, i, j] = sol[k]
    return out


def test_batched_road_imputation_equals_a_direct_solve_per_image():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 2, 9, 11, generator=g, dtype=torch.float64)
    removed = torch.rand(3, 9, 11, generator=g) < torch.tensor([0.2, 0.6, 0.95]).view(3, 1, 1)  # borders too
    removed[1, :5, :6] = True  # a large hole: many iterations
    out = P.noisy_linear_imputation(x, removed, noise=0.0)
    ref = torch.stack([_imputation_by_dense_solve(x[i], removed[i]) for i in range(3)])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-9)
    everything = P.noisy_linear_imputation(x[:1], torch.ones(1, 9, 11, dtype=torch.bool), noise=0.0)
    assert bool((everything == 0).all())  # no kept pixel: a singular system, imputed as 0


_MULTIGRID = P._Multigrid


def test_road_imputation_of_large_removed_regions_equals_a_direct_solve(monkeypatch):
    """MoRF on smooth heatmaps removes large contiguous regions (up to the border): a badly conditioned
    system, where the multigrid-preconditioned path must run and still reach the direct solution."""
    built = []
    monkeypatch.setattr(P, "_Multigrid", lambda *a, **kw: built.append(1) or _MULTIGRID(*a, **kw))
    g = torch.Generator().manual_seed(6)
    x = torch.rand(2, 3, 33, 40, generator=g, dtype=torch.float64)
    i, j = torch.meshgrid(torch.arange(33.0), torch.arange(40.0), indexing="ij")
    heat = torch.stack([-((i - 16) ** 2 + (j - 20) ** 2), -((i - 30) ** 2 + (j - 2) ** 2)])  # Gaussian blobs' order
    removed = heat.flatten(1).argsort(1, descending=True).argsort(1).view(2, 33, 40) < 0.9 * 33 * 40
    out = P.noisy_linear_imputation(x, removed, noise=0.0)
    ref = torch.stack([_imputation_by_dense_solve(x[k], removed[k]) for k in range(2)])
    assert built  # plain CG alone was too slow here
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("h,w", [(1, 5), (2, 2), (3, 3), (4, 7), (9, 8), (17, 18)])
def test_multigrid_imputation_equals_a_direct_solve_on_any_shape(monkeypatch, h, w):
    monkeypatch.setattr(P, "_PLAIN_CG_ITER", 0)  # multigrid from the first round
    g = torch.Generator().manual_seed(h * w)
    x = torch.rand(3, 2, h, w, generator=g, dtype=torch.float64)
    removed = torch.rand(3, h, w, generator=g) < torch.tensor([0.3, 0.7, 1.0]).view(3, 1, 1)
    removed[2].view(-1)[(h * w) // 2] = False  # one kept pixel: the worst-conditioned system
    out = P.noisy_linear_imputation(x, removed, noise=0.0)
    ref = torch.stack([_imputation_by_dense_solve(x[k], removed[k]) for k in range(3)])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("h,w", [(5, 8), (8, 5), (1, 2)])
def test_multigrid_transfers_are_transposes_and_coarse_operator_is_galerkin(h, w):
    hc, wc = (h + 1) // 2, (w + 1) // 2
    prolong = torch.stack([P._prolong(e.view(hc, wc), h, w).flatten() for e in torch.eye(hc * wc, dtype=torch.float64)], 1)
    restrict = torch.stack([P._restrict(e.view(h, w)).flatten() for e in torch.eye(h * w, dtype=torch.float64)], 1)
    torch.testing.assert_close(restrict, prolong.T)
    torch.testing.assert_close(prolong.sum(1), torch.ones(h * w, dtype=torch.float64))  # constants reproduced
    a = torch.randn(h * w, h * w, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    band = [(abs(p // w - q // w) <= 1) & (abs(p % w - q % w) <= 1) for p in range(h * w) for q in range(h * w)]
    a = a * torch.tensor(band, dtype=torch.float64).view(h * w, h * w)  # any operator with a 3×3 stencil
    apply = lambda v: (a @ v.flatten(-2).unsqueeze(-1)).view(v.shape)
    coef = P._galerkin(apply, 1, h, w, torch.zeros((), dtype=torch.float64))
    v = torch.randn(1, 1, hc, wc, dtype=torch.float64)
    torch.testing.assert_close(P._stencil_apply(coef, v).flatten(), prolong.T @ a @ prolong @ v.flatten())


# Batched == one by one, for every metric.
@pytest.mark.parametrize("name,kw", [
    ("pixel_flipping", dict(features_in_step=48)),
    ("region_perturbation", dict(patch_size=4)),
    ("selectivity", dict(patch_size=4)),
    ("insertion", dict(n_steps=8)),
    ("deletion", dict(n_steps=8)),
    ("road", dict(percentages=[10, 50])),
    ("faithfulness_correlation", dict(nr_runs=4, subset_size=20)),
    ("monotonicity_correlation", dict(nr_samples=1, features_in_step=48, perturb_baseline="black")),
    ("irof", dict()),
    ("infidelity", dict(n_perturb_samples=3)),
    ("infidelity_patches", dict()),
    ("non_sensitivity", dict(features_in_step=48, eps=0.05)),
])
def test_batched_equals_one_by_one(name, kw):
    model = _cnn(3)
    x, y, a = _data(3, n=4)
    fn = getattr(fa, name)
    if name in ("road", "faithfulness_correlation", "infidelity"):  # seeded draws differ per batch shape
        return _deterministic_only(fn, model, x, y, a, kw)
    batched = fn(model, x, y, a, **kw)
    single = torch.cat([fn(model, x[i : i + 1], y[i : i + 1], a[i : i + 1], **kw) for i in range(4)])
    assert batched.dtype == torch.float64 and batched.shape == (4,)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)


def _deterministic_only(fn, model, x, y, a, kw):
    kw = dict(kw)
    if fn is fa.road:
        kw["noise"] = 0.0
    if fn is fa.faithfulness_correlation:
        kw["indices"] = torch.stack([torch.randperm(432, generator=torch.Generator().manual_seed(r))[:20].expand(4, 20)
                                     for r in range(4)])
    if fn is fa.infidelity:
        kw["noise"] = 0.1 * torch.randn(3, *x.shape, generator=torch.Generator().manual_seed(0))
    batched = fn(model, x, y, a, **kw)
    single = []
    for i in range(4):
        k = dict(kw)
        if "indices" in k:
            k["indices"] = kw["indices"][:, i : i + 1]
        if "noise" in k and isinstance(k["noise"], torch.Tensor):
            k["noise"] = kw["noise"][:, i : i + 1]
        single.append(fn(model, x[i : i + 1], y[i : i + 1], a[i : i + 1], **k))
    torch.testing.assert_close(batched, torch.cat(single), rtol=1e-5, atol=1e-6)


def test_seeded_metrics_repeat_and_tables_work():
    model, x, y, w = _linear()
    a = w * x
    for fn in (fa.faithfulness_correlation, fa.infidelity, fa.monotonicity_correlation):
        kw = dict(nr_samples=3) if fn is fa.monotonicity_correlation else {}
        if fn is fa.faithfulness_correlation:
            kw = dict(subset_size=3, nr_runs=10)
        torch.testing.assert_close(fn(model, x, y, a, seed=7, **kw), fn(model, x, y, a, seed=7, **kw))
    assert fa.deletion(model, x, y, a).shape == (5,)
    assert fa.insertion(model, x, y, a).shape == (5,)  # tables: the mean baseline


def test_registry_metadata():
    names = [m.name for m in fa.FAITHFULNESS]
    assert len(names) == len(set(names)) == 13
    assert all(m.source and m.fn.__doc__ or hasattr(m.fn, "func") for m in fa.FAITHFULNESS)


# Bad input: one sentence each.
def test_bad_input():
    model = _cnn(3)
    x, y, a = _data(3, n=2, size=8)
    with pytest.raises(HeatlabError, match=r"patch_size=9 does not fit the 8×8 images"):
        fa.region_perturbation(model, x, y, a, patch_size=9)
    with pytest.raises(HeatlabError, match=r"Unknown perturb_baseline='grey'; pass one of black, white, mean"):
        fa.pixel_flipping(model, x, y, a, perturb_baseline="grey", features_in_step=64)
    with pytest.raises(HeatlabError, match="NaN attributions"):
        fa.deletion(model, x, y, torch.full_like(a, float("nan")))
    with pytest.raises(HeatlabError, match=r"a has shape \(2, 1, 7, 8\), which does not match x"):
        fa.deletion(model, x, y, a[:, :, :7])
    with pytest.raises(HeatlabError, match="y must hold 2 integer targets"):
        fa.deletion(model, x, y[:1], a)
    with pytest.raises(HeatlabError, match="Unknown order='top'"):
        fa.region_perturbation(model, x, y, a, order="top")
    with pytest.raises(HeatlabError, match="needs N×C×H×W images"):
        fa.selectivity(*_linear()[:3], torch.zeros(5, 12))
    with pytest.raises(HeatlabError, match="a_batch holds NaN"):
        hq.PixelFlipping()(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=np.full((2, 1, 8, 8), np.nan))


def _removal_curve_by_where(model, x, y, rank, thresholds, fill, *, softmax, batch_size, insert=False, window=False):
    """The removal curve as a full-size mask per step (the reference for the incremental buffer)."""
    n, rank = x.shape[0], rank.view_as(x)
    per, out = max(1, batch_size // n), []
    for s in range(0, len(thresholds), per):
        ts = torch.tensor(thresholds[s : s + per]).view(-1, *[1] * x.ndim)
        gone = rank.unsqueeze(0) < ts
        if window:
            gone &= rank.unsqueeze(0) >= torch.tensor(([0] + thresholds)[s : s + ts.shape[0]]).view_as(ts)
        xs = torch.where(~gone if insert else gone, fill.unsqueeze(0), x.unsqueeze(0)).flatten(0, 1)
        out.append(P.predict(model, xs, y, softmax=softmax, batch_size=batch_size).view(-1, n))
    return torch.cat(out).T


@pytest.mark.parametrize("insert,window", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("thresholds", [[0, 3, 7, 7, 20, 36, 50], [5, 2, 9, 0, 36]])  # the second not monotone
def test_removal_curve_feeds_the_model_what_the_full_mask_does(insert, window, thresholds):
    """3 samples, batch_size 8: two steps per forward, the last forward one step; pixel groups (ties
    across channels) so several elements share a rank."""
    model = _cnn(3)
    x, y, a = _data(3, n=3, size=6)
    groups, d = fa._pixel_groups(x)
    rank = P.ranks_of(groups, P.group_sums(a.expand_as(x).flatten(1).double(), groups, d))
    fill = P.baseline(x, "uniform", generator=torch.Generator().manual_seed(0))
    seen = {"new": [], "ref": []}
    for key, fn in (("new", P.removal_curve), ("ref", _removal_curve_by_where)):
        hook = model.register_forward_hook(lambda _m, i, _o, key=key: seen[key].append(i[0].clone()))
        curve = fn(model, x, y, rank, thresholds, fill, softmax=True, batch_size=8, insert=insert, window=window)
        hook.remove()
        seen[key + "_curve"] = curve
    assert [t.shape[0] for t in seen["new"]] == [t.shape[0] for t in seen["ref"]]
    assert all(torch.equal(p, q) for p, q in zip(seen["new"], seen["ref"]))
    assert torch.equal(seen["new_curve"], seen["ref_curve"])


def test_order_groups_equals_a_stable_torch_sort_with_ties_signed_zeros_infinities_and_nan():
    g = torch.Generator().manual_seed(3)
    v = torch.randint(-3, 4, (5, 40), generator=g).float() / 2  # many ties
    v[0, :6] = torch.tensor([0.0, -0.0, 0.0, -0.0, float("inf"), -float("inf")])
    nan = v.clone()
    nan[1, 3] = float("nan")
    # the key sort (float32, float64 that float32 holds), the torch sort (NaN, float64 that float32 does not hold)
    for scores in (v, v.double(), nan, v.double() + 1e-12 * torch.rand(5, 40, dtype=torch.float64, generator=g)):
        for order in ("morf", "lerf"):
            ref = torch.sort(-scores if order == "morf" else scores, dim=1, stable=True).indices
            assert torch.equal(P.order_groups(scores, order), ref), (scores.dtype, order)


@pytest.mark.parametrize("d,k", [(32, 2), (6, 2)])  # Floyd's algorithm (k <= d/16), the k smallest of d draws
def test_random_subsets_are_uniform_over_the_k_subsets(d, k):
    rows = 500 * math.comb(d, k)
    s = fa.random_subsets(rows, d, k, torch.Generator().manual_seed(0))
    assert s.shape == (rows, k) and int(s.min()) >= 0 and int(s.max()) < d
    s = s.sort(1).values
    assert bool((s[:, 1:] != s[:, :-1]).all())  # k distinct values per row
    counts = torch.unique(s[:, 0] * d + s[:, 1], return_counts=True)[1].double()
    assert counts.numel() == math.comb(d, k)
    chi2, dof = float(((counts - 500) ** 2 / 500).sum()), math.comb(d, k) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof)  # a biased draw (e.g. j never chosen) exceeds it by far


def test_rank_order_prefixes_are_the_elements_below_each_threshold_on_both_paths():
    g = torch.Generator().manual_seed(0)
    rank = torch.randint(0, 50, (4, 30), generator=g)
    thresholds = [0, 10, 10, 49, 50, 80, 2.5, -3]
    for scale in (1, 2000):  # NumPy's uint16 radix sort, torch's sort (ranks >= 2**16)
        order, bounds = P.rank_order(rank * scale, [t * scale for t in thresholds])
        assert sorted(order.tolist()) == list(range(120))
        for t, b in zip(thresholds, bounds):
            assert set(order[:b].tolist()) == set(torch.nonzero(rank.flatten() < t).flatten().tolist())
