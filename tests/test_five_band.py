"""Five-band score (paper 002 §III-C, §IV-A; DESIGN §4.3) against a slow reference and known cases."""

import importlib

import numpy as np
import pytest
import torch

from heatlab.errors import HeatlabError
from heatlab.score.five_band import TRUTH_THRESHOLDS, five_band, soft_thresholds, stratify, truth_bands

fb = importlib.import_module("heatlab.score.five_band")  # the module (heatlab.score.five_band is the function)
COUNTS = ("tp", "fp", "fn", "tn")


# ----------------------------------------------------------------------------- slow reference


def ref_stratify(x: np.ndarray, t) -> np.ndarray:
    """Paper §III-C, bands closed on the right; thresholds compared in x's dtype."""
    t1, t2, t3, t4 = np.asarray(t, dtype=np.float64).astype(x.dtype)
    band = np.zeros(x.shape, dtype=np.int64)
    band[x <= t1] = -2
    band[(x > t1) & (x <= t2)] = -1
    band[(x > t3) & (x <= t4)] = 1
    band[x > t4] = 2
    return band


def ref_five_band(h: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """One sample and one threshold at a time, straight from the paper's definitions."""
    n, rows = h.shape[0], thresholds.shape[0]
    out = {k: np.zeros((n, rows), dtype=np.int64) for k in COUNTS}
    out.update({k: np.zeros((n, rows)) for k in fb.METRICS})
    for i in range(n):
        g = ref_stratify(truth[i], TRUTH_THRESHOLDS)
        for j in range(rows):
            b = ref_stratify(h[i], thresholds[j])
            tp = np.sum((g != 0) & (b == g))
            fp = np.sum((g == 0) & (b != 0)) + np.sum((g != 0) & (b != 0) & (b != g))
            fn = np.sum((g != 0) & (b == 0))
            tn = np.sum((g == 0) & (b == 0))
            out["tp"][i, j], out["fp"][i, j], out["fn"][i, j], out["tn"][i, j] = tp, fp, fn, tn
            out["precision"][i, j] = tp / (tp + fp + 1e-6)
            out["recall"][i, j] = tp / (tp + fn + 1e-6)
            out["fpr"][i, j] = fp / (fp + tn + 1e-6)
            out["accuracy"][i, j] = np.mean(b == g)
    return out


# ----------------------------------------------------------------------------- data


def cells(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Truth maps: a square cell body (0.4) with a bar (0.9); the last sample is empty."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.zeros(n, size, size)
    for i in range(n - 1):
        r, c = torch.randint(0, size // 2, (2,), generator=g).tolist()
        truth[i, r : r + size // 2, c : c + size // 2] = 0.4
        truth[i, r + 2 : r + 4, c : c + size // 2] = 0.9
    return truth


def noisy_heatmaps(truth: torch.Tensor, variant: str, seed: int = 1) -> torch.Tensor:
    """Random values in [-1, 1] where a quarter of the pixels sit exactly on a threshold value."""
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(truth.shape, generator=g) * 2 - 1 + truth
    h = (h / h.abs().amax()).clamp(-1, 1)
    ties = soft_thresholds(variant).flatten().float()
    pick = torch.rand(truth.shape, generator=g) < 0.25
    h[pick] = ties[torch.randint(ties.numel(), (int(pick.sum()),), generator=g)]
    h[0, 0, :4] = torch.tensor([-1.0, 1.0, 0.0, -0.0])
    return h


# ----------------------------------------------------------------------------- thresholds and bands


def test_soft_thresholds_rows():
    std, clamp = soft_thresholds("standard"), soft_thresholds("clamp")
    assert std.shape == (56, 4) and clamp.shape == (41, 4)
    assert std[0].tolist() == [-0.5, -0.3, 0.3, 0.5]
    assert std[-1].tolist() == [-0.225, -0.025, 0.025, 0.225]  # paper Fig. 6: t55
    assert clamp[0].tolist() == [-0.9, -0.5, 0.5, 0.9]
    assert clamp[-1].tolist() == [-0.5, -0.1, 0.1, 0.5]
    assert torch.allclose(std[1] - std[0], torch.tensor([0.005, 0.005, -0.005, -0.005], dtype=torch.float64))
    assert (std[:, 1:] > std[:, :-1]).all() and (clamp[:, 1:] > clamp[:, :-1]).all()


def test_stratify_boundaries_close_on_the_right():
    t = (-0.5, -0.3, 0.3, 0.5)
    h = torch.tensor([-1.0, -0.5, -0.49, -0.3, -0.29, 0.0, 0.3, 0.31, 0.5, 0.51, 1.0])
    assert stratify(h, t).tolist() == [-2, -2, -1, -1, 0, 0, 0, 1, 1, 2, 2]
    assert stratify(h, t).dtype == torch.int8
    truth = torch.tensor([0.0, 0.4, 0.9])
    assert stratify(truth, TRUTH_THRESHOLDS).tolist() == [0, 1, 2]
    assert truth_bands(truth.half()).tolist() == [0, 1, 2]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("variant", ["standard", "clamp"])
def test_counting_table_matches_bucketize(dtype, variant):
    """The O(1) lookup behind stratify and five_band equals torch.bucketize, ties and neighbours."""
    g = torch.Generator().manual_seed(2)
    work = fb._work_dtype(dtype)
    edges = torch.unique(soft_thresholds(variant).to(dtype).to(work))
    x = (torch.rand(20000, generator=g, dtype=torch.float64) * 2.2 - 1.1).to(dtype).to(work)
    on = edges[torch.randint(edges.numel(), (3000,), generator=g)]
    up, down = (torch.nextafter(on, torch.tensor(s, dtype=work)) for s in (2.0, -2.0))
    x = torch.cat([x, on, up, down, torch.tensor([-torch.inf, torch.inf, 0.0, -0.0], dtype=work)])
    assert torch.equal(fb._count_below(x, edges).long(), torch.bucketize(x, edges))


def test_stratify_with_close_thresholds_uses_bucketize_path():
    t = (-0.5, 1e-7, 2e-7, 0.5)  # gaps too small for the lookup table
    x = torch.tensor([-0.6, 0.0, 1e-7, 1.5e-7, 2e-7, 3e-7, 0.5, 0.7])
    ref = ref_stratify(x.numpy(), t)
    assert stratify(x, t).tolist() == ref.tolist()


# ----------------------------------------------------------------------------- scores


@pytest.mark.parametrize("variant", ["standard", "clamp"])
def test_matches_slow_reference_exactly(variant, monkeypatch):
    monkeypatch.setattr(fb, "_CHUNK_ELEMENTS", 3 * 16 * 16)  # several chunks, one partial
    truth = cells(7)
    h = noisy_heatmaps(truth, variant)
    got = five_band(h, truth, variant=variant)
    ref = ref_five_band(h.numpy(), truth.numpy(), soft_thresholds(variant).numpy())
    for k in COUNTS:
        assert getattr(got, k).dtype == torch.int64
        np.testing.assert_array_equal(getattr(got, k).numpy(), ref[k], err_msg=k)
    for k in fb.METRICS:
        np.testing.assert_allclose(getattr(got, k).numpy(), ref[k], rtol=0, atol=1e-7, err_msg=k)
    assert (got.tp + got.fp + got.fn + got.tn == 16 * 16).all()


def test_float16_heatmaps_compare_in_their_own_precision():
    truth = cells(3)
    h = noisy_heatmaps(truth, "standard").half()
    got = five_band(h, truth.half())
    ref = ref_five_band(h.numpy(), truth.half().numpy(), soft_thresholds().numpy())
    for k in COUNTS:
        np.testing.assert_array_equal(getattr(got, k).numpy(), ref[k], err_msg=k)


@pytest.mark.parametrize("variant, perfect", [("standard", range(0, 21)), ("clamp", range(11, 41))])
def test_truth_as_heatmap_is_perfect(variant, perfect):
    """0.4 → 1 needs t3 < 0.4 ≤ t4 and 0.9 → 2 needs 0.9 > t4: m ≤ 20 (standard), m ≥ 11 (clamp)."""
    truth = cells(4)[:-1]
    r = five_band(truth, truth, variant=variant)
    assert torch.allclose(r.best["precision"], torch.ones(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(r.best["recall"], torch.ones(3, dtype=torch.float64), atol=1e-5)
    assert (r.accuracy == 1).nonzero()[:, 1].unique().tolist() == list(perfect)
    assert (r.fp[:, list(perfect)] == 0).all() and (r.fn[:, list(perfect)] == 0).all()


def test_zero_heatmap_has_no_true_positive_and_no_nan():
    truth = cells(4)
    r = five_band(torch.zeros_like(truth), truth)
    assert (r.tp == 0).all() and (r.fp == 0).all()
    cell_pixels = (truth > 0).sum(dim=(1, 2)).unsqueeze(1)
    assert (r.fn == cell_pixels).all() and (r.tn == 256 - cell_pixels).all()
    for k in fb.METRICS:
        assert not getattr(r, k).isnan().any()
    assert (r.precision == 0).all() and (r.recall == 0).all() and (r.fpr == 0).all()


def test_negative_heatmap_has_no_true_positive():
    truth = cells(4)
    r = five_band(-truth.clamp(min=0.2), truth)
    assert (r.tp == 0).all() and (r.recall == 0).all()
    assert (r.fp[:-1] > 0).all()  # every cell pixel lands in a negative band: a false positive


def test_avg_best_and_roc():
    truth = cells(5)
    r = five_band(noisy_heatmaps(truth, "standard"), truth)
    assert set(r.avg) == set(fb.METRICS) == set(r.best)
    for k in fb.METRICS:
        assert torch.equal(r.avg[k], getattr(r, k).mean(dim=1)) and r.avg[k].shape == (5,)
    assert torch.equal(r.best["precision"], r.precision.amax(dim=1))
    assert torch.equal(r.best["fpr"], r.fpr.amin(dim=1))
    fpr, recall = r.roc()
    assert fpr.shape == recall.shape == (56,)
    assert torch.equal(fpr, r.fpr.mean(dim=0)) and torch.equal(recall, r.recall.mean(dim=0))
    assert fpr[3] == pytest.approx(float(np.mean(r.fpr[:, 3].numpy())))


def test_samples_are_independent():
    truth = cells(6)
    h = noisy_heatmaps(truth, "clamp")
    whole = five_band(h, truth, variant="clamp")
    one = five_band(h[2:3], truth[2:3], variant="clamp")
    assert torch.equal(whole.tp[2:3], one.tp) and torch.equal(whole.fp[2:3], one.fp)


def test_empty_batch():
    r = five_band(torch.zeros(0, 8, 8), torch.zeros(0, 8, 8))
    assert r.tp.shape == (0, 56) and r.precision.shape == (0, 56)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    truth = cells(5)
    h = noisy_heatmaps(truth, "standard")
    cpu, gpu = five_band(h, truth), five_band(h.cuda(), truth.cuda())
    assert torch.equal(cpu.tp, gpu.tp.cpu()) and torch.equal(cpu.fn, gpu.fn.cpu())


# ----------------------------------------------------------------------------- bad input


def _bad_cases():
    ok = torch.zeros(2, 4, 4)
    nan, inf, big = ok.clone(), ok.clone(), ok.clone()
    nan[0, 0, 0], inf[1, 2, 3], big[0, 1, 1] = float("nan"), float("inf"), 1.5
    bad_truth, neg_truth, nan_truth = ok.clone(), ok.clone(), ok.clone()
    bad_truth[0, 0, 0], neg_truth[0, 0, 0], nan_truth[1, 0, 0] = 0.5, -0.4, float("nan")
    return {
        "shape mismatch": (ok, torch.zeros(2, 4, 5), "differ in shape"),
        "channels": (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), "N×H×W"),
        "nan": (nan, ok, "NaN or Inf"),
        "inf": (inf, ok, "NaN or Inf"),
        "out of range": (big, ok, "channel_adjust"),
        "truth value": (ok, bad_truth, "0, 0.4 and 0.9"),
        "negative truth": (ok, neg_truth, "0, 0.4 and 0.9"),
        "nan truth": (ok, nan_truth, "0, 0.4 and 0.9"),
        "integer heatmap": (ok.long(), ok, "floating-point"),
        # NumPy heatmaps are accepted now; arrays of non-numbers are not
        "numpy strings": (np.array([["a"]]), ok, "NumPy dtype"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_input_raises(case):
    h, truth, words = _bad_cases()[case]
    with pytest.raises(HeatlabError, match=words):
        five_band(h, truth)


def test_bad_variant_and_thresholds_raise():
    with pytest.raises(HeatlabError, match="variant"):
        five_band(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), variant="soft")
    with pytest.raises(HeatlabError, match="increasing"):
        stratify(torch.zeros(3), (0.5, 0.3, -0.3, -0.5))
    with pytest.raises(HeatlabError, match="NaN"):
        stratify(torch.tensor([float("nan")]), TRUTH_THRESHOLDS)
