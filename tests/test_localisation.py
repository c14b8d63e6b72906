"""Localisation metrics: hand-computed 4×4 cases, perfect heatmaps, slow references, NaN rules."""

import math

import numpy as np
import pytest
import torch

from heatlab.errors import HeatlabError
from heatlab.score import localisation as loc
from heatlab.score.localisation import (
    auc,
    localisation_metrics,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)

FUNCS = {
    "pointing_game": pointing_game,
    "relevance_mass_accuracy": relevance_mass_accuracy,
    "relevance_rank_accuracy": relevance_rank_accuracy,
    "auc": auc,
}


def ref_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """sklearn's roc_auc_score when installed, else Mann-Whitney U from average ranks."""
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        from scipy.stats import rankdata

        pos = labels.sum()
        u = rankdata(scores)[labels].sum() - pos * (pos + 1) / 2
        return u / (pos * (labels.size - pos))
    return roc_auc_score(labels, scores)


def ref_rank(pos: np.ndarray, m: np.ndarray) -> float:
    """Expected share of mask pixels among the top K of ``pos`` when ties are broken at random."""
    k = int(m.sum())
    kth = np.sort(pos)[::-1][k - 1]
    above, tied = int((pos > kth).sum()), int((pos == kth).sum())
    hits = 0.0
    for v, inside in zip(pos, m):  # chance that this pixel is one of the top K
        if inside:
            hits += 1.0 if v > kth else (k - above) / tied if v == kth else 0.0
    return hits / k


def ref_all(h: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample loops for heatmaps without ties in h (argmax is then unambiguous).

    Mass and rank accuracy use the positive part max(h, 0) (Arras et al.), whose zeros tie.
    """
    out = {k: [] for k in FUNCS}
    for x, m in zip(h.reshape(len(h), -1).astype(np.float64), mask.reshape(len(mask), -1)):
        pos = np.maximum(x, 0)
        out["pointing_game"].append(float(m[np.argmax(x)]))
        out["relevance_mass_accuracy"].append(sum(v for v, i in zip(pos, m) if i) / sum(pos))
        out["relevance_rank_accuracy"].append(ref_rank(pos, m))
        out["auc"].append(ref_auc(x, m))
    return {k: np.array(v) for k, v in out.items()}


def scores(h, mask) -> dict[str, float]:
    return {k: float(f(h.unsqueeze(0), mask.unsqueeze(0))[0]) for k, f in FUNCS.items()}


# ----------------------------------------------------------------------------- hand-made 4×4 cases


def test_hand_case_ramp():
    h = torch.tensor(
        [[0.0, 0.1, 0.2, 0.3], [0.4, 0.5, 0.6, 0.7], [0.8, 0.9, 1.0, -0.1], [-0.2, -0.3, -0.4, -0.5]],
        dtype=torch.float64,
    )
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:2, :2] = True  # values 0, 0.1, 0.4, 0.5
    s = scores(h, mask)
    assert s["pointing_game"] == 0.0  # the maximum 1.0 is outside
    # positive part: inside 0.1 + 0.4 + 0.5 = 1.0, total 0.1 + ... + 1.0 = 5.5 (negatives dropped)
    assert s["relevance_mass_accuracy"] == pytest.approx(1.0 / 5.5)
    assert s["relevance_rank_accuracy"] == 0.0  # top 4 are 1.0, 0.9, 0.8, 0.7
    assert s["auc"] == pytest.approx(24 / 48)  # pairs won: 5 + 5 + 7 + 7 of 4·12


def test_hand_case_tied_maximum():
    h = torch.zeros(4, 4)
    h[0, 0] = h[3, 3] = 1.0
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, :2] = True  # one of the two maxima, and one zero
    s = scores(h, mask)
    assert s["pointing_game"] == 1.0  # any tied maximum inside counts (as in Quantus)
    assert s["relevance_mass_accuracy"] == pytest.approx(0.5)
    assert s["relevance_rank_accuracy"] == pytest.approx(0.5)  # top 2 = both ones, one inside
    assert s["auc"] == pytest.approx((0.5 + 13 + 0 + 6.5) / (2 * 14))  # ties count one half


def test_hand_case_tie_across_the_top_k_cut():
    h = torch.zeros(16)
    h[0], h[1:4] = 1.0, 0.5
    mask = torch.zeros(16, dtype=torch.bool)
    mask[:2] = True  # K = 2: 1.0 is in; one place left for three tied 0.5s, one of them inside
    assert float(relevance_rank_accuracy(h.view(1, 4, 4), mask.view(1, 4, 4))[0]) == pytest.approx((1 + 1 / 3) / 2)


def test_hand_case_zero_heatmap():
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1:3, 1:3] = True
    s = scores(torch.zeros(4, 4), mask)
    assert s["pointing_game"] == 1.0
    assert math.isnan(s["relevance_mass_accuracy"])  # 0 / 0, as in Quantus
    assert s["relevance_rank_accuracy"] == pytest.approx(4 / 16)  # chance level
    assert s["auc"] == 0.5


def test_perfect_heatmap_scores_one():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(6, 8, 8, generator=g) < 0.3
    for name, value in {k: f(mask.float(), mask) for k, f in FUNCS.items()}.items():
        assert torch.equal(value, torch.ones(6, dtype=torch.float64)), name


# ----------------------------------------------------------------------------- references and rules


def test_matches_slow_reference_without_ties(monkeypatch):
    monkeypatch.setattr(loc, "_CHUNK_ELEMENTS", 5 * 64)  # several chunks, one partial
    g = torch.Generator().manual_seed(1)
    h = torch.randn(23, 8, 8, generator=g)
    mask = torch.rand(23, 8, 8, generator=g) < torch.linspace(0.05, 0.9, 23).view(23, 1, 1)
    mask[:, 0, 0] = True
    ref = ref_all(h.numpy(), mask.numpy())
    for name, f in FUNCS.items():
        np.testing.assert_allclose(f(h, mask).numpy(), ref[name], rtol=1e-12, atol=1e-12, err_msg=name)


def test_auc_matches_reference_with_ties():
    g = torch.Generator().manual_seed(2)
    h = torch.randint(-3, 4, (12, 6, 6), generator=g).float() / 4
    mask = torch.rand(12, 6, 6, generator=g) < 0.4
    mask[:, 0, 0], mask[:, 0, 1] = True, False
    expected = [ref_auc(x.flatten().numpy(), m.flatten().numpy()) for x, m in zip(h, mask)]
    np.testing.assert_allclose(auc(h, mask).numpy(), expected, rtol=0, atol=1e-12)


def test_rank_accuracy_does_not_depend_on_pixel_order():
    g = torch.Generator().manual_seed(3)
    h = torch.randint(0, 3, (10, 64), generator=g).float()  # many ties at the cut
    mask = torch.rand(10, 64, generator=g) < 0.3
    perm = torch.randperm(64, generator=g)
    for f in FUNCS.values():
        assert torch.allclose(f(h, mask), f(h[:, perm], mask[:, perm]), rtol=1e-12, atol=0, equal_nan=True)


def test_empty_mask_gives_nan_and_full_mask_undefined_auc():
    g = torch.Generator().manual_seed(4)
    h = torch.randn(3, 4, 4, generator=g)
    mask = torch.ones(3, 4, 4, dtype=torch.bool)
    mask[0] = False
    for name, f in FUNCS.items():
        out = f(h, mask)
        assert out.dtype == torch.float64 and out.shape == (3,)
        assert math.isnan(out[0]), name
        assert math.isnan(out[1]) == (name == "auc"), name  # full mask: AUC has no negatives
    assert torch.equal(relevance_mass_accuracy(h, mask)[1:], torch.ones(2, dtype=torch.float64))


def test_localisation_metrics_uses_feature_and_cell_masks():
    g = torch.Generator().manual_seed(5)
    truth = torch.zeros(4, 8, 8)
    truth[:3, 2:6, 2:6] = 0.4
    truth[:3, 3, 2:6] = 0.9  # sample 3 is 'empty'
    h = torch.randn(4, 8, 8, generator=g)
    out = localisation_metrics(h, truth)
    assert list(out) == [f"{k}/{m}" for m in ("feature", "cell") for k in FUNCS]
    for name, f in FUNCS.items():
        torch.testing.assert_close(out[f"{name}/feature"], f(h, truth == 0.9), equal_nan=True)
        torch.testing.assert_close(out[f"{name}/cell"], f(h, truth > 0), equal_nan=True)
        assert math.isnan(out[f"{name}/cell"][3]) and math.isnan(out[f"{name}/feature"][3])


def test_mask_may_be_numbers_and_heatmaps_any_float():
    h = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    m = torch.tensor([[1, 0, 1, 0]])
    for f in FUNCS.values():
        assert torch.equal(f(h.half(), m.float()), f(h, m.bool()))
    assert auc(h, m).item() == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(6)
    h = torch.randn(5, 8, 8, generator=g)
    truth = torch.zeros(5, 8, 8)
    truth[:, 2:6, 2:6], truth[:, 3] = 0.4, 0.9
    cpu, gpu = localisation_metrics(h, truth), localisation_metrics(h.cuda(), truth.cuda())
    for k in cpu:
        torch.testing.assert_close(cpu[k], gpu[k].cpu(), equal_nan=True)


@pytest.mark.parametrize(
    "h, mask, words",
    [
        (torch.full((1, 2, 2), float("nan")), torch.ones(1, 2, 2), "NaN or Inf"),
        (torch.zeros(1, 2, 2), torch.ones(1, 2, 3), "shape"),
        (torch.zeros(1, 2, 2), torch.full((1, 2, 2), 2.0), "0/1 or bool"),
        (torch.zeros(1, 2, 2, dtype=torch.long), torch.ones(1, 2, 2), "floating-point"),
        (torch.zeros(4), torch.ones(4), "N×H×W"),
    ],
)
def test_bad_input_raises(h, mask, words):
    with pytest.raises(HeatlabError, match=words):
        auc(h, mask)


def test_bad_truth_raises():
    with pytest.raises(HeatlabError, match="or a binary mask.*threshold"):
        localisation_metrics(torch.zeros(1, 2, 2), torch.full((1, 2, 2), 0.5))
    with pytest.raises(HeatlabError, match="has shape"):
        localisation_metrics(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3))
