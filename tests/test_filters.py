"""LRP relevance filters (paper 004): hand-computed answers, names, bad input."""

from __future__ import annotations

import pytest
import torch

from heatlab.errors import HeatlabError
from heatlab.explain.filters import (
    PAPER_FILTERS,
    Clamp,
    FractionalAmplifier,
    FractionPass,
    apply_filter,
    parse_filter,
)

# a = max|R| = 4, r = R/a = [1, -0.5, 0.25, -0.1, 0]
R = torch.tensor([[4.0, -2.0, 1.0, -0.4, 0.0]])

HAND = {
    "c0.6": [2.4, -2.0, 1.0, -0.4, 0.0],
    "c0.2": [0.8, -0.8, 0.8, -0.4, 0.0],
    "c0.05": [0.2, -0.2, 0.2, -0.2, 0.0],
    "f0.6": [0.0, -2.0, 1.0, -0.4, 0.0],
    "f0.2": [0.0, 0.0, 0.0, -0.4, 0.0],
    "f0.05": [0.0, 0.0, 0.0, 0.0, 0.0],
    "p0.5": [8.0, -4.0, 1.0, -0.4, 0.0],
    "p0.7": [8.0, -2.0, 1.0, -0.4, 0.0],
    "f0.2-0.6": [0.0, -2.0, 1.0, 0.0, 0.0],
    "f0.25-1": [4.0, -2.0, 1.0, 0.0, 0.0],
    "p0.2x3": [12.0, -6.0, 3.0, -0.4, 0.0],
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_filters_on_a_hand_made_sample(name):
    out = apply_filter(R, name)
    assert out.shape == R.shape and out.dtype == R.dtype
    torch.testing.assert_close(out, torch.tensor([HAND[name]]))


def test_every_paper_setting_is_accepted_by_name():
    assert set(PAPER_FILTERS) <= set(HAND)
    assert [parse_filter(n).name for n in PAPER_FILTERS] == list(PAPER_FILTERS)


def test_names_parse_to_the_filter_objects():
    assert parse_filter("c0.2") == Clamp(0.2)
    assert parse_filter(" F0.05 ") == FractionPass(0.05) == FractionPass(0.05, low=0.0)
    assert parse_filter("f0.2-0.6") == FractionPass(0.6, low=0.2)
    assert parse_filter("p0.5") == FractionalAmplifier(0.5, gain=2.0)
    assert parse_filter("p.5x3") == FractionalAmplifier(0.5, gain=3.0)
    assert parse_filter("c1") == Clamp(1.0) and parse_filter("f0") == FractionPass(0.0)
    flt = FractionPass(0.4, low=0.1)
    assert parse_filter(flt) is flt and flt.name == "f0.1-0.4"
    assert FractionalAmplifier(0.7, gain=5).name == "p0.7x5"


def test_filter_objects_apply_like_names():
    torch.testing.assert_close(Clamp(0.2)(R), apply_filter(R, "c0.2"))
    torch.testing.assert_close(apply_filter(R, FractionPass(0.6, low=0.2)), apply_filter(R, "f0.2-0.6"))


def test_interval_bounds_are_closed():
    # r = [1, -0.5, 0.25, -0.1, 0]: 0.5 and 0.25 sit on the bounds
    torch.testing.assert_close(apply_filter(R, "f0.25-0.5"), torch.tensor([[0.0, -2.0, 1.0, 0.0, 0.0]]))
    torch.testing.assert_close(apply_filter(R, "p0.25"), torch.tensor([[8.0, -4.0, 2.0, -0.4, 0.0]]))


def test_single_pixel_samples():
    x = torch.tensor([[3.0], [-3.0]])
    torch.testing.assert_close(apply_filter(x, "c0.2"), torch.tensor([[0.6], [-0.6]]))
    torch.testing.assert_close(apply_filter(x, "f0.2"), torch.tensor([[0.0], [0.0]]))
    torch.testing.assert_close(apply_filter(x, "f0.2-1"), x)
    torch.testing.assert_close(apply_filter(x, "p0.5"), torch.tensor([[6.0], [-6.0]]))


def test_all_zero_sample_passes_unchanged_and_samples_scale_separately():
    x = torch.stack([torch.zeros(2, 3), torch.tensor([[10.0, -1.0, 0.0], [0.0, 5.0, 0.0]]), torch.zeros(2, 3)])[:, None]
    out = apply_filter(x, "c0.2")
    assert out.shape == (3, 1, 2, 3) and torch.isfinite(out).all()
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    # sample 1: a = 10, r = [1, -0.1, 0, 0, 0.5, 0] -> clamp 0.2 -> [2, -1, 0, 0, 2, 0]
    torch.testing.assert_close(out[1, 0], torch.tensor([[2.0, -1.0, 0.0], [0.0, 2.0, 0.0]]))
    torch.testing.assert_close(apply_filter(torch.zeros(2, 4), "p0.5"), torch.zeros(2, 4))


def test_dtype_shape_and_magnitude_bound():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    for name in ("c0.2", "f0.6", "p0.5"):
        out = apply_filter(x, name)
        assert out.dtype == torch.float64 and out.shape == x.shape
    a = x.flatten(1).abs().amax(1)
    assert (apply_filter(x, "c0.2").flatten(1).abs().amax(1) <= 0.2 * a + 1e-12).all()
    assert torch.equal(torch.sign(apply_filter(x, "c0.2")), torch.sign(x))
    half = apply_filter(x.half(), "c0.6")
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.double(), apply_filter(x.half().double(), "c0.6"), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("name", ["c1.5", "f1.01", "p2", "x0.2", "c", "", "c0.2-0.4", "p0.2-0.5", "c0.2x2", "f0.6-0.2", "clamp"])
def test_bad_names_raise(name):
    with pytest.raises(HeatlabError) as info:
        parse_filter(name)
    assert "c<α>" in str(info.value) or "smaller bound" in str(info.value)


def test_bad_objects_and_inputs_raise():
    for make in (lambda: Clamp(-0.1), lambda: Clamp(1.5), lambda: FractionPass(0.2, low=0.5),
                 lambda: FractionalAmplifier(0.5, gain=float("inf")), lambda: Clamp(True)):
        with pytest.raises(HeatlabError):
            make()
    with pytest.raises(HeatlabError):
        parse_filter(0.2)
    with pytest.raises(HeatlabError):
        apply_filter(torch.ones(5), "c0.2")
    with pytest.raises(HeatlabError):
        apply_filter(torch.ones(2, 5, dtype=torch.int64), "c0.2")
    with pytest.raises(HeatlabError):
        apply_filter(torch.tensor([[1.0, float("nan")]]), "c0.2")
    with pytest.raises(HeatlabError):
        apply_filter([[1.0]], "c0.2")
