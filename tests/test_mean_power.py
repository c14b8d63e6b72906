"""Mean Power (paper 004, as its code computes it): hand-computed answers, invariances, edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from heatlab.errors import HeatlabError
from heatlab.score.mean_power import LOWER_FLOOR, MeanPower, mean_power


def _reference(values: list[float], t: float = 0.8) -> float:
    """Straightforward per-sample statement of the original code's rule (its ``compute_mean_power``:
    the ``n_th == 1`` test before the clamp to ``n - 1``)."""

    def part(x: list[float]) -> float | None:
        n = len(x)
        if n == 0:
            return None
        x = sorted(x)
        n_th = math.ceil(t * n)
        if n_th == 1:
            return 1.0
        if n_th >= n:
            n_th = n - 1
        upper, lower = sum(x[n_th:]) / (n - n_th), sum(x[:n_th]) / n_th
        if upper == 0:
            return 0.0
        return upper / (lower if lower != 0 else LOWER_FLOOR)

    p, q = part([v for v in values if v >= 0]), part([-v for v in values if v < 0])
    p = q if p is None else p
    q = p if q is None else q
    return (p + q) / 2


def test_hand_made_samples():
    # positives: eight 1s and two 5s (n 10, n_th 8) -> 5 / 1 = 5; negatives: four -2s and one -6 (n 5, n_th 4) -> 6/2 = 3
    mixed = [1.0] * 8 + [5.0, 5.0] + [-2.0] * 4 + [-6.0]
    positive_only = [1.0] * 8 + [5.0, 5.0] + [1.0] * 5
    x = torch.tensor([mixed, positive_only])
    out = mean_power(x)
    assert isinstance(out, MeanPower)
    # positive-only: n 15, n_th 12; sorted: thirteen 1s, two 5s -> upper mean (1 + 5 + 5)/3, lower mean 1
    torch.testing.assert_close(out.mp, torch.tensor([4.0, 11 / 3]))
    torch.testing.assert_close(out.positive, torch.tensor([5.0, 11 / 3]))
    torch.testing.assert_close(out.negative, torch.tensor([3.0, 11 / 3]))


def test_positive_only_sample_exact():
    x = torch.tensor([[1.0] * 8 + [5.0, 5.0]])
    out = mean_power(x)
    torch.testing.assert_close(out.mp, torch.tensor([5.0]))
    assert out.positive.item() == out.negative.item() == 5.0  # the empty negative part takes the positive value


def test_one_part_empty_rule_both_ways():
    neg_only = -torch.tensor([[1.0, 1.0, 1.0, 1.0, 3.0]])  # n 5, n_th 4: 3 / 1
    out = mean_power(neg_only)
    assert out.mp.item() == out.positive.item() == out.negative.item() == pytest.approx(3.0)


def test_zero_upper_and_zero_lower_means():
    zeros = torch.zeros(1, 10)
    assert mean_power(zeros).mp.item() == 0.0  # R+ all zeros: upper mean 0 -> 0, R- empty -> takes 0
    spiky = torch.tensor([[0.0] * 8 + [3.0, 3.0]])  # lower mean 0 -> 1e-9
    assert mean_power(spiky).mp.item() == pytest.approx(3.0 / LOWER_FLOOR, rel=1e-6)


def test_small_parts():
    # n = 1: ceil(t) = 1 -> MP 1, whatever t
    out = mean_power(torch.tensor([[-3.0], [2.0]]))
    torch.testing.assert_close(out.mp, torch.tensor([1.0, 1.0]))
    assert mean_power(torch.tensor([[2.0]]), t=0.1).mp.item() == 1.0


def test_two_values_follow_the_original():
    # n = 2, t = 0.8: ceil(1.6) = 2 is not 1, so the split is clamped to 1 and MP = 3 / 1 (the original
    # tests n_th == 1 before it clamps; heatlab gave 1 before)
    assert mean_power(torch.tensor([[1.0, 3.0]]), t=0.8).mp.item() == pytest.approx(3.0)
    # t = 0.5: ceil(1.0) = 1 -> 1
    assert mean_power(torch.tensor([[1.0, 3.0]]), t=0.5).mp.item() == 1.0
    # both parts with two values: R+ [1, 9] -> 9, R- [1, 9] -> 9
    out = mean_power(torch.tensor([[1.0, 9.0, -1.0, -9.0]]))
    torch.testing.assert_close(out.mp, torch.tensor([9.0]))
    # R+ [2, 6] -> 3, R- [4] (n = 1) -> 1: (3 + 1) / 2
    out = mean_power(torch.tensor([[2.0, 6.0, -4.0]]))
    torch.testing.assert_close(out.positive, torch.tensor([3.0]))
    torch.testing.assert_close(out.mp, torch.tensor([2.0]))
    # empty negative part takes the positive one's value; a zero lower mean is floored at 1e-9
    assert mean_power(torch.tensor([[4.0, 12.0]])).mp.item() == pytest.approx(3.0)
    assert mean_power(torch.tensor([[0.0, 5.0]])).mp.item() == pytest.approx(5.0 / LOWER_FLOOR, rel=1e-6)
    assert mean_power(torch.tensor([[0.0, 0.0]])).mp.item() == 0.0  # upper mean 0 -> 0


def test_t_parameter():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert mean_power(x, t=0.5).mp.item() == pytest.approx(3.5 / 1.5)  # n_th 2
    assert mean_power(x, t=0.75).mp.item() == pytest.approx(2.0)  # n_th 3: 4 / 2
    assert mean_power(x, t=1.0).mp.item() == pytest.approx(2.0)  # n_th 4 >= n -> 3
    assert mean_power(x, t=0.25).mp.item() == 1.0  # n_th 1 -> 1
    assert mean_power(x).mp.item() == pytest.approx(2.0)  # default t 0.8: ceil(3.2) = 4 -> 3


def test_matches_a_per_sample_reference_on_random_batches():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 3, 4, 5, generator=g, dtype=torch.float64) ** 3
    x[0] = x[0].abs()  # one-part-empty
    x[1, 0, 0, 0] = -5.0
    x[1] = x[1].abs() * torch.where(x[1] == 5.0, -1.0, 1.0)  # a single negative value
    x[2] = 0.0
    for t in (0.8, 0.5, 0.9, 1.0):
        out = mean_power(x, t=t)
        ref = torch.tensor([_reference(s.flatten().tolist(), t) for s in x], dtype=torch.float64)
        torch.testing.assert_close(out.mp, ref)


def test_scale_invariant_but_not_shift_invariant():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 2, 8, 8, generator=g)
    base = mean_power(x)
    for c in (0.01, 3.7, 250.0):
        scaled = mean_power(c * x)
        torch.testing.assert_close(scaled.mp, base.mp, rtol=1e-4, atol=0)
        torch.testing.assert_close(scaled.positive, base.positive, rtol=1e-4, atol=0)
    shifted = mean_power(x + 1.0)
    assert not torch.allclose(shifted.mp, base.mp, rtol=1e-2)


def test_spikier_signal_has_larger_mp():
    flat = torch.ones(1, 100) + 0.01 * torch.arange(100.0)
    spiky = flat.clone()
    spiky[0, -5:] = 50.0
    assert mean_power(spiky).mp.item() > mean_power(flat).mp.item()


def test_dtypes_and_empty_batch():
    x = torch.randn(3, 10, generator=torch.Generator().manual_seed(3))
    assert mean_power(x.double()).mp.dtype == torch.float64
    assert mean_power(x.half()).mp.dtype == torch.float32
    out = mean_power(torch.zeros(0, 5))
    assert out.mp.shape == (0,)


@pytest.mark.parametrize("t", [0, -0.1, 1.5, float("nan"), True, "0.8"])
def test_bad_t_raises(t):
    with pytest.raises(HeatlabError):
        mean_power(torch.ones(2, 4), t=t)


def test_bad_relevance_raises():
    for bad in (torch.ones(4), torch.ones(2, 0), torch.ones(2, 3, dtype=torch.int32),
                torch.tensor([[1.0, float("inf")]]), [[1.0, 2.0]]):
        with pytest.raises(HeatlabError):
            mean_power(bad)
