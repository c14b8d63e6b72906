"""The 2-D toy of papers 000/001 §2: classifier, CO score, eq. (4) and Fig. 1."""

from __future__ import annotations

import math

import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from heatlab.data.toy2d import (
    PAPER_K_ETA,
    gax_gradient,
    gax_heatmap,
    nonnegative_theta_range,
    rotation,
    toy_co,
    toy_logits,
    toy_sample,
)
from heatlab.errors import HeatlabError
from heatlab.report.toy2d_figure import toy2d_figure

R2 = math.sqrt(0.5)


def test_rotation_and_samples_by_hand():
    quarter_turn = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(rotation(math.pi / 2), quarter_turn, atol=1e-15)
    assert rotation(torch.zeros(5)).shape == (5, 2, 2)
    # θ = 0: pixels are the class components; a2 defaults to 1 - a1.
    assert torch.allclose(toy_sample(0.95, rotation(0.0)), torch.tensor([0.95, 0.05], dtype=torch.float64))
    # θ = π/4: x = ((a1 - a2)/√2, (a1 + a2)/√2).
    x = toy_sample(0.7, rotation(math.pi / 4), a2=0.1)
    assert torch.allclose(x, torch.tensor([0.6 * R2, 0.8 * R2], dtype=torch.float64))


@pytest.mark.parametrize(
    ("theta", "x", "y"),
    [
        (0.0, [0.3, 0.8], [0.3, 0.8]),  # identity
        (math.pi / 2, [0.0, 1.0], [1.0, 0.0]),  # paper: at π/2, x = [0, 1] is class 1 ...
        (math.pi / 2, [1.0, 0.0], [0.0, -1.0]),  # ... and x = [1, 0] is class 2
        (math.pi / 4, [1.0, 0.0], [R2, -R2]),
        (math.pi, [2.0, -3.0], [-2.0, 3.0]),
    ],
)
def test_perfect_classifier_by_hand(theta, x, y):
    out = toy_logits(torch.tensor(x, dtype=torch.float64), rotation(theta))
    assert torch.allclose(out, torch.tensor(y, dtype=torch.float64), atol=1e-12)


def test_classifier_recovers_the_class_components():
    theta = torch.linspace(-math.pi, math.pi, 17, dtype=torch.float64)
    W = rotation(theta)
    y = toy_logits(toy_sample(0.8, W), W)
    assert torch.allclose(y, torch.tensor([0.8, 0.2], dtype=torch.float64).expand(17, 2), atol=1e-12)


def test_co_score_with_h_equal_x_is_a1_minus_a2():
    """Paper §2: with σ the identity (LeakyReLU on positives) and h = x, s_co = a1 − a2."""
    W = rotation(torch.linspace(-3, 3, 7, dtype=torch.float64))
    x = toy_sample(0.9, W)
    assert torch.allclose(toy_co(x, x, W), torch.full((7,), 0.8, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize(
    ("a1", "theta", "h"),
    [
        # θ = 0: h1 = (1 + kη·x1)·x1, h2 = (1 − kη·x2)·x2.
        (0.95, 0.0, [(1 + 1.2 * 0.95) * 0.95, (1 - 1.2 * 0.05) * 0.05]),
        # θ = π/4: W⁻¹₂₂ − W⁻¹₁₂ = 0 leaves h2 = x2; h1 = (1 + 1.2·√2·x1)·x1 with x1 = 0.4/√2.
        (0.7, math.pi / 4, [(1 + 1.2 * 0.4) * 0.4 * R2, 1.0 * R2]),
        # θ = −π/4: W⁻¹₁₁ − W⁻¹₂₁ = 0 leaves h1 = x1 = 1/√2; x2 = −0.1/√2, h2 = (1 + 1.2·0.1)·x2.
        (0.55, -math.pi / 4, [R2, -(1 + 1.2 * 0.1) * 0.1 * R2]),
    ],
)
def test_eq4_closed_form_by_hand(a1, theta, h):
    W = rotation(theta)
    assert torch.allclose(gax_heatmap(toy_sample(a1, W), W, PAPER_K_ETA), torch.tensor(h, dtype=torch.float64))


def test_plain_gradient_ascent_reproduces_eq4():
    """Ascend the CO score of a torch linear classifier in w (h = w ⊙ x) with autograd: k small
    steps of size η must land on eq. (4) with the same kη, for every rotation and sample."""
    k_eta, steps = 1.2, 2000
    lr = k_eta / steps
    theta = torch.linspace(-math.pi, math.pi, 25, dtype=torch.float64)
    for a1 in (0.95, 0.7, 0.55):
        W = rotation(theta)
        x = toy_sample(a1, W)
        classifier = torch.linalg.inv(W)  # f(x) = W⁻¹x, written here independently of toy_logits
        kappa = torch.tensor([1.0, -1.0], dtype=torch.float64)

        def co(h):
            f = lambda v: (classifier @ v.unsqueeze(-1)).squeeze(-1)  # noqa: E731
            return ((f(x + h) - f(x)) * kappa).sum(-1)

        w = torch.ones_like(x, requires_grad=True)
        for _ in range(steps):
            (grad,) = torch.autograd.grad(co(w * x).sum(), w)
            with torch.no_grad():
                w += lr * grad
        h = (w * x).detach()
        assert torch.allclose(h, gax_heatmap(x, W, k_eta), atol=1e-10), a1
        assert torch.allclose(grad, gax_gradient(x, W), atol=1e-12)
        # The same objective through the module's CO score, and Δ rises by kη‖∇Δ‖² (linear in w).
        assert torch.allclose(toy_co(x, h, W), co(h).detach(), atol=1e-12)
        expected = toy_co(x, x, W) + k_eta * (gax_gradient(x, W) ** 2).sum(-1)
        assert torch.allclose(toy_co(x, h, W), expected, atol=1e-10)


def test_zero_k_eta_gives_the_sample_and_follows_float32():
    W = rotation(torch.tensor([0.3, 1.0], dtype=torch.float32))
    x = toy_sample(0.7, W)
    assert x.dtype == torch.float32
    h = gax_heatmap(x, W, 0.0)
    assert h.dtype == torch.float32 and torch.equal(h, x)


def test_nonnegative_range_matches_the_paper_panels():
    # Rounded to multiples of π/8, the paper's Fig. 1 ranges: [0, π/2], [−π/8, 3π/8], [−π/4, π/4].
    expected = {0.95: (0, 4), 0.7: (-1, 3), 0.55: (-2, 2)}
    for a1, (lo8, hi8) in expected.items():
        lo, hi = nonnegative_theta_range(a1)
        assert (round(lo / (math.pi / 8)), round(hi / (math.pi / 8))) == (lo8, hi8)
        inside = toy_sample(a1, rotation(torch.linspace(lo + 1e-9, hi - 1e-9, 50, dtype=torch.float64)))
        assert (inside >= 0).all()
        outside = toy_sample(a1, rotation(torch.tensor([lo - 1e-3, hi + 1e-3], dtype=torch.float64)))
        assert (outside.min(-1).values < 0).all()


@pytest.mark.parametrize(
    "call",
    [
        lambda: rotation(float("nan")),
        lambda: toy_sample(0.5, torch.zeros(3)),
        lambda: toy_logits(torch.zeros(2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)),
        lambda: toy_co(torch.zeros(3), torch.zeros(3), rotation(0.0)),
        lambda: gax_heatmap(torch.zeros(2), rotation(0.0), float("inf")),
        lambda: nonnegative_theta_range(1.5),
    ],
    ids=["nan-theta", "bad-W", "singular-W", "bad-x", "inf-k-eta", "negative-a2"],
)
def test_bad_input_raises_one_clear_error(call):
    with pytest.raises(HeatlabError):
        call()


def test_figure_is_written(tmp_path):
    out = toy2d_figure(tmp_path / "figs" / "toy.png")
    assert out == tmp_path / "figs" / "toy.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 3 * im.height / 1.5  # three panels side by side
    assert [p.name for p in out.parent.iterdir()] == ["toy.png"]  # no temporary file left
    # The same figure gives the same bytes.
    again = toy2d_figure(tmp_path / "again.png")
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({}, "toy.jpg"),
        ({"a1_values": ()}, "toy.png"),
        ({"a1_values": (1.2,)}, "toy.png"),
        ({"k_eta": float("nan")}, "toy.png"),
    ],
)
def test_figure_rejects_bad_input_and_writes_nothing(tmp_path, kwargs, name):
    with pytest.raises(HeatlabError):
        toy2d_figure(tmp_path / name, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_cli_command_writes_the_figure(tmp_path):
    from heatlab.cli_toy2d import register

    app = typer.Typer()
    register(app)

    @app.command("noop")  # a second command, so typer keeps `toy2d` as a named subcommand
    def noop() -> None:
        pass

    runner = CliRunner()
    result = runner.invoke(app, ["toy2d", "--out", str(tmp_path / "t.png"), "--full-range"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t.png").is_file()
    bad = runner.invoke(app, ["toy2d", "--out", str(tmp_path / "t.txt")])
    assert bad.exit_code != 0 and "must end in .png" in bad.output
    assert not (tmp_path / "t.txt").exists()
