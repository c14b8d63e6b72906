"""Metrics take what users have: NumPy/torch, N×H×W / N×1×H×W / N×C×H×W, bool or 0/1 masks.

Every accepted form must give the scores of the canonical form (torch float N×H×W heatmaps after
the named channel rule, bool N×H×W masks); mass accuracy uses positive relevance and lies in [0, 1].
"""

import math

import numpy as np
import pytest
import torch

from heatlab.errors import HeatlabError
from heatlab.explain import channel_adjust
from heatlab.score import five_band, localisation as loc, metrics as reg

FUNCS = (loc.pointing_game, loc.relevance_mass_accuracy, loc.relevance_rank_accuracy, loc.auc)


def _data(seed=0, n=6, c=3):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, c, 8, 8, generator=g, dtype=torch.float64)
    mask = torch.rand(n, 8, 8, generator=g) < 0.3
    mask[:, 0, 0] = True
    return a, mask


@pytest.mark.parametrize("fn", FUNCS, ids=lambda f: f.__name__)
def test_every_input_form_gives_the_canonical_scores(fn):
    a, mask = _data()
    for rule, reduce in {"sum": a.sum(1), "mean": a.mean(1), "abs_sum": a.abs().sum(1), "max": a.amax(1)}.items():
        want = fn(reduce, mask)  # canonical: torch N×H×W, bool N×H×W
        forms = [
            (a, mask), (a.numpy(), mask.numpy()), (a, mask[:, None]), (a.numpy(), mask[:, None].numpy()),
            (a, mask.long()), (a, mask.float().numpy()), (a, mask.numpy().astype(np.uint8)),
        ]
        for h, m in forms:
            torch.testing.assert_close(fn(h, m, channels=rule), want, equal_nan=True, rtol=0, atol=0)
    one = a[:, :1]  # N×1×H×W is the N×H×W map for every rule but abs_sum
    torch.testing.assert_close(fn(one, mask), fn(one[:, 0], mask), equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(fn(one[:, 0].numpy(), mask[:, None]), fn(one[:, 0], mask), equal_nan=True)


def test_localisation_metrics_takes_binary_masks_and_channel_forms():
    a, mask = _data(1)
    levels = torch.where(mask, 0.9, 0.0)
    want = loc.localisation_metrics(a.sum(1), levels)
    for h, t in [(a, mask), (a.numpy(), mask[:, None].numpy()), (a, mask.float()[:, None]), (a.sum(1), levels[:, None])]:
        got = loc.localisation_metrics(h, t)
        for k in want:  # 0.9-only levels: the cell mask equals the feature mask, as for a binary mask
            torch.testing.assert_close(got[k], want[k], equal_nan=True, rtol=0, atol=0)
    three = levels.clone()
    three[:, 4:, :] = torch.where(mask[:, 4:, :], 0.9, 0.4)  # real three-level truth still works
    out = loc.localisation_metrics(a.numpy(), three.numpy())
    torch.testing.assert_close(out["auc/cell"], loc.auc(a.sum(1), three > 0), equal_nan=True)


def test_mass_accuracy_is_positive_part_in_unit_interval_and_matches_slow_reference():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(40, 6, 6, generator=g) - 0.5  # mostly negative: signed ratios leave [0, 1]
    mask = torch.rand(40, 6, 6, generator=g) < 0.4
    mask[:, 0, 0] = True
    got = loc.relevance_mass_accuracy(h, mask).numpy()
    ref = []
    for x, m in zip(h.double().numpy(), mask.numpy()):
        inside = total = 0.0
        for v, i in zip(x.flatten(), m.flatten()):
            if v > 0:
                total += v
                inside += v if i else 0.0
        ref.append(inside / total if total > 0 else math.nan)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    assert np.all((got >= 0) & (got <= 1))
    signed = ((h * mask).sum((1, 2)) / h.sum((1, 2))).numpy()
    assert np.any((signed < 0) | (signed > 1))  # the data do exercise the old failure
    reg_out = reg.per_sample_scores(h, mask.float(), "mask")["relevance_mass_accuracy/feature"]
    np.testing.assert_allclose(reg_out.numpy(), ref, rtol=1e-12)  # what run/evaluate stores


def test_rank_accuracy_uses_positive_part():
    h = torch.tensor([[3.0, -1.0, -2.0, -3.0]])  # positive part 3, 0, 0, 0: the zeros tie
    mask = torch.tensor([[False, False, True, True]])  # K = 2, top-1 certain, 1 place for 3 zeros
    assert float(loc.relevance_rank_accuracy(h, mask)[0]) == pytest.approx((2 / 3) / 2)
    # signed ranks would have put -1 (outside) second and scored 0


def test_five_band_binary_mask_equals_mapped_levels_and_takes_numpy():
    g = torch.Generator().manual_seed(3)
    h = channel_adjust(torch.randn(5, 3, 8, 8, generator=g))
    mask = torch.rand(5, 8, 8, generator=g) < 0.3
    want = five_band.five_band(h, mask.float() * 0.9)
    for hh, m in [(h, mask), (h, mask.float()), (h.numpy(), mask.numpy()), (h[:, None], mask[:, None].numpy()),
                  (h.numpy(), mask.numpy().astype(np.int64))]:
        got = five_band.five_band(hh, m)
        for k in ("tp", "fp", "fn", "tn", "accuracy", "precision", "recall", "fpr"):
            torch.testing.assert_close(getattr(got, k), getattr(want, k), rtol=0, atol=0)
    levels = torch.where(mask, 0.9, 0.0)
    levels[:, :2] = torch.where(mask[:, :2], 0.9, 0.4)  # the three-level path is unchanged
    torch.testing.assert_close(five_band.five_band(h.numpy(), levels.numpy()).tp, five_band.five_band(h, levels).tp)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: loc.auc(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)), "give it one channel"),
        (lambda: loc.auc(torch.zeros(2, 4, 4), torch.ones(2, 5, 5)), "one map of the heatmaps' height"),
        (lambda: loc.auc(torch.zeros(2, 4, 4), torch.full((2, 4, 4), 0.5)), "threshold"),
        (lambda: loc.auc(torch.zeros(2, 4, 4), torch.ones(2, 4, 4), channels="median"), "channels="),
        (lambda: loc.auc([[0.0]], torch.ones(1, 1)), "NumPy array"),
        (lambda: loc.localisation_metrics(torch.zeros(1, 2, 2), torch.full((1, 2, 2), 0.5)), "e.g. truth > 0.5"),
        (lambda: five_band.five_band(torch.zeros(1, 2, 2), torch.full((1, 2, 2), 0.5)), "binary mask"),
        (lambda: five_band.five_band(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2)), "channel_adjust"),
    ],
)
def test_errors_name_the_right_fix(call, words):
    with pytest.raises(HeatlabError, match=words) as err:
        call()
    assert str(err.value).replace("e.g. ", "").count(". ") == 0  # one sentence
