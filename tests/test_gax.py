"""GAX (papers 000/001, eq. 6): batched optimisation against a one-at-a-time reference, stopping,
freezing, model hygiene, hand-computed first steps, bad input; and the run stage on the tiny run."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from heatlab.errors import HeatlabError
from heatlab.improve.gax import gax


def small_cnn(num_classes: int = 4, seed: int = 0, scale: float = 4.0) -> nn.Module:
    """A tiny conv net with weights large enough that CO moves quickly; float64."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, num_classes),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model.double()


def images(n: int, size: int = 8, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g, dtype=torch.float64)


def reference_gax(model, x1, label, *, steps, target=math.inf, lam=100.0, bias=0.01, eps=1e-4, lr=0.1):
    """The original's loop for ONE sample: torch.optim.Adam on (w, b), classifier gradients on."""
    w = torch.ones_like(x1, requires_grad=True)
    b = torch.full_like(x1, bias, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr, betas=(0.9, 0.999))
    with torch.no_grad():
        base = model(x1)
    k = torch.full_like(base, -1.0 / (base.shape[1] - 1))
    k[0, label] = 1.0
    cos = []
    for t in range(steps + 1):
        h = torch.tanh(w * x1 + b)
        co = ((model(x1 + h) - base) * k).sum()
        cos.append(co.item())
        if co.item() >= target or t == steps:
            break
        loss = -co + lam / ((h - x1 + eps) ** 2 / (x1 + eps)).mean()
        opt.zero_grad()
        model.zero_grad()
        loss.backward()
        opt.step()
    return torch.tensor(cos, dtype=torch.float64), h.detach()


def test_batched_equals_one_at_a_time_and_the_original_loop_in_float64():
    model = small_cnn().eval()
    x, labels = images(3), torch.tensor([0, 2, 3])
    batched = gax(model, x, labels, target_co=1e9, max_steps=5)
    assert batched.co.shape == (6, 3) and batched.snapshots.shape == (6, 3, 3, 8, 8)
    for i in range(3):
        single = gax(model, x[i : i + 1], labels[i : i + 1], target_co=1e9, max_steps=5)
        ref_co, ref_h = reference_gax(model, x[i : i + 1], int(labels[i]), steps=5)
        torch.testing.assert_close(batched.heatmaps[i], single.heatmaps[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(batched.heatmaps[i : i + 1], ref_h, rtol=0, atol=1e-10)
        torch.testing.assert_close(batched.co[:, i], single.co[:, 0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(batched.co[:, i].double(), ref_co, rtol=1e-5, atol=1e-5)
    # The heatmaps really moved: step 5 differs from step 0 = tanh(x + 0.01).
    torch.testing.assert_close(batched.snapshots[0].double(), torch.tanh(x + 0.01), rtol=0, atol=1e-3)
    assert (batched.heatmaps - torch.tanh(x + 0.01)).abs().max() > 0.1


def test_unreachable_target_stops_at_max_steps():
    model = small_cnn().eval()
    res = gax(model, images(2), torch.tensor([1, 2]), target_co=1e9, max_steps=4, snapshot_every=3)
    assert res.steps == 4 and res.co.shape == (5, 2)
    assert not res.reached.any() and res.steps_to_target.tolist() == [-1, -1]
    assert res.snapshot_steps.tolist() == [0, 3, 4]  # every 3rd step and the last one
    assert res.snapshots.dtype == torch.float16
    assert torch.isfinite(res.co).all()
    torch.testing.assert_close(res.snapshots[-1], res.heatmaps.half(), rtol=0, atol=0)


def test_a_finished_sample_stops_changing_while_the_others_continue():
    model = small_cnn().eval()
    x, labels = images(3, seed=5), torch.tensor([0, 1, 3])
    probe = gax(model, x, labels, target_co=1e9, max_steps=12, snapshot_every=1)
    a = int(probe.co[3].argmax())
    target = float(probe.co[3, a])
    others = [i for i in range(3) if i != a]
    first = int((probe.co[:, a] >= target).nonzero()[0])
    assert first <= 3 and float(probe.co[:, others].max()) < target  # the test's premise
    res = gax(model, x, labels, target_co=target, max_steps=12, snapshot_every=1)
    assert res.reached.tolist() == [i == a for i in range(3)]
    assert int(res.steps_to_target[a]) == first and res.steps == 12
    # a keeps its heatmap and its CO from the step it reached the target on ...
    torch.testing.assert_close(res.heatmaps[a], probe.snapshots[first, a].double(), rtol=0, atol=1e-3)
    for s in range(first, 13):
        assert torch.equal(res.snapshots[s, a], res.heatmaps[a].half())
        assert res.co[s, a] == probe.co[first, a]
    # ... while the others follow the same trajectories as without a's target.
    torch.testing.assert_close(res.co[:, others], probe.co[:, others], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(res.heatmaps[others], probe.heatmaps[others], rtol=0, atol=1e-10)
    for i in others:
        assert not torch.equal(res.snapshots[11, i], res.snapshots[12, i])


def test_classifier_is_left_as_it_was():
    model = small_cnn()
    model.train()
    model[0].weight.requires_grad_(False)
    model[4].eval()  # a mixed-mode model stays mixed
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    gax(model, images(2), torch.tensor([0, 1]), target_co=1e9, max_steps=3)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert model.training and model[0].training and not model[4].training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_first_adam_step_on_a_linear_model_by_hand():
    """f(z) = W z + c: CO(h) = κ·W h, so ∂CO/∂w = (Wᵀκ)⊙(1 − h²)⊙x and Adam's first step is lr·sign."""
    lin = nn.Linear(3, 3).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, -1.0], [3.0, 0.0, 1.0]]))
        lin.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    x = torch.tensor([[0.2, 0.5, 0.8]], dtype=torch.float64)
    kap = torch.tensor([-0.5, 1.0, -0.5], dtype=torch.float64)  # label 1 of 3 classes
    res = gax(lin, x, torch.tensor([1]), target_co=1e9, max_steps=1, similarity_factor=0.0, snapshot_every=1)
    h0 = torch.tanh(x + 0.01)
    assert res.co[0, 0].item() == pytest.approx(float(kap @ lin.weight.detach() @ h0[0]), rel=1e-6)
    direction = torch.sign(lin.weight.detach().T @ kap)  # sign of ∂CO/∂w and ∂CO/∂b (x > 0)
    assert direction.abs().min() == 1
    w1, b1 = 1 + 0.1 * direction, 0.01 + 0.1 * direction
    h1 = torch.tanh(w1 * x + b1)
    torch.testing.assert_close(res.heatmaps, h1, rtol=0, atol=1e-6)
    # Adam moves by lr·|g|/(|g| + 1e-8), not exactly lr: a tolerance of 1e-7 on this small CO.
    assert res.co[1, 0].item() == pytest.approx(float(kap @ lin.weight.detach() @ h1[0]), abs=1e-7)
    assert res.co[1, 0] > res.co[0, 0]
    # The x*h variant: CO = κ·W (x⊙h − x).
    mult = gax(lin, x, torch.tensor([1]), target_co=1e9, max_steps=1, ax="mult")
    assert mult.co[0, 0].item() == pytest.approx(float(kap @ lin.weight.detach() @ (x * h0 - x)[0]), rel=1e-6)


def test_a_sample_already_at_the_target_takes_no_step():
    model = small_cnn().eval()
    x = images(2)
    probe = gax(model, x, torch.tensor([0, 1]), target_co=1e9, max_steps=1)
    res = gax(model, x, torch.tensor([0, 1]), target_co=float(probe.co[0].min()) - 1.0, max_steps=50)
    assert res.reached.all() and res.steps_to_target.tolist() == [0, 0] and res.steps == 0
    torch.testing.assert_close(res.heatmaps, torch.tanh(x + 0.01), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_co": math.nan}, "finite"),
        ({"target_co": math.inf}, "finite"),
        ({"max_steps": 0}, "max_steps"),
        ({"snapshot_every": 0}, "snapshot_every"),
        ({"ax": "plus"}, "AX variant"),
        ({"lr": -1.0}, "learning rate"),
    ],
)
def test_bad_settings_raise(kwargs, message):
    with pytest.raises(HeatlabError, match=message):
        gax(small_cnn(), images(2), torch.tensor([0, 1]), **kwargs)


def test_bad_inputs_raise():
    model = small_cnn()
    with pytest.raises(HeatlabError, match="labels"):
        gax(model, images(2), torch.tensor([0, 1, 2]))
    with pytest.raises(HeatlabError, match="0..3"):
        gax(model, images(2), torch.tensor([0, 4]))
    with pytest.raises(HeatlabError, match="0..3"):
        gax(model, images(2), torch.tensor([-1, 0]))
    with pytest.raises(HeatlabError, match="negative"):
        gax(model, images(2) - 0.5, torch.tensor([0, 1]))
    with pytest.raises(HeatlabError, match="NaN"):
        gax(model, torch.full((1, 3, 8, 8), math.nan, dtype=torch.float64), torch.tensor([0]))
    with pytest.raises(HeatlabError, match="integer"):
        gax(model, images(2), torch.tensor([0.0, 1.0]))


# --- the run stage ---------------------------------------------------------------------------------

@pytest.fixture()
def gax_run_dir(tiny_run, tmp_path):
    """A private copy of the session's tiny trained run (GAX writes into the run folder)."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_gax_run_stores_consistent_results_and_resumes(gax_run_dir):
    from heatlab.run.gax import gax_run, load_gax_result

    calls = []
    summary = gax_run(gax_run_dir, first_n_correct=3, target_co=1e9, max_steps=4, batch_size=2, snapshot_every=3,
                      progress=lambda task, done, total: calls.append(task))
    assert summary.complete and summary.samples >= 1 and summary.reached == 0
    assert "gax batches" in calls and "gax" in calls
    res = load_gax_result(gax_run_dir)
    n = len(res.table)
    assert n == summary.samples <= 3
    assert list(res.table[["shard", "index"]].itertuples(index=False)) == sorted(res.table[["shard", "index"]].itertuples(index=False))
    assert res.co.shape == (5, n) and res.images.dtype == torch.uint8 and res.snapshots.dtype == torch.float16
    assert (res.table["final_step"] == 4).all() and (res.table["steps_to_target"] == -1).all()
    for i in range(n):
        snaps, steps = res.sample(i)
        assert steps.tolist() == [0, 3, 4]
        # Step 0 is tanh(x + 0.01) of the stored image; the CO table matches the trajectories.
        x = res.images[i].float() / 255
        torch.testing.assert_close(snaps[0].float(), torch.tanh(x + 0.01), rtol=0, atol=1e-3)
    torch.testing.assert_close(torch.tensor(res.table["final_co"].to_numpy()), res.co[-1].double())
    # The stored samples are predicted correctly by the branch model.
    from heatlab.run.training import load_branch

    model = load_branch(gax_run_dir, 0)
    with torch.no_grad():
        assert (model(res.images.float() / 255).argmax(1).numpy() == res.table["label"].to_numpy()).all()
    assert not (gax_run_dir / "gax" / "parts").exists()
    # A complete run with the same settings is skipped (no GAX call at all).
    starts = []
    again = gax_run(gax_run_dir, first_n_correct=3, target_co=1e9, max_steps=4, batch_size=2, snapshot_every=3,
                    progress=lambda task, done, total: starts.append(done) if task == "gax" and done == 0 else None)
    assert again == summary and starts == []
    # Other settings start again and replace the summary.
    other = gax_run(gax_run_dir, first_n_correct=1, target_co=1e9, max_steps=2, batch_size=2, snapshot_every=1)
    assert other.samples == 1 and load_gax_result(gax_run_dir).co.shape == (3, 1)


def test_gax_run_killed_after_a_batch_resumes_to_the_same_files(tiny_run, tmp_path):
    from heatlab.run.gax import gax_run

    settings = dict(first_n_correct=3, target_co=1e9, max_steps=3, batch_size=1, snapshot_every=2)
    whole = Path(shutil.copytree(tiny_run, tmp_path / "whole"))
    gax_run(whole, **settings)
    killed = Path(shutil.copytree(tiny_run, tmp_path / "killed"))

    def stop_after_first_batch(task, done, total):
        if task == "gax batches" and done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gax_run(killed, **settings, progress=stop_after_first_batch)
    assert not (killed / "gax" / "gax.json").exists()
    calls = []
    gax_run(killed, **settings, progress=lambda task, done, total: calls.append(done) if task == "gax" and done == 0 else None)
    assert len(calls) == len(pd.read_parquet(whole / "gax" / "results.parquet")) - 1  # batch 0 was not redone
    for name in ("results.parquet", "trajectories.safetensors", "snapshots.safetensors", "gax.json"):
        assert (killed / "gax" / name).read_bytes() == (whole / "gax" / name).read_bytes(), name


def test_gax_run_rejects_bad_input(gax_run_dir, tmp_path):
    from heatlab.run.gax import gax_run, load_gax_result

    with pytest.raises(HeatlabError, match="no GAX result"):
        load_gax_result(gax_run_dir)
    with pytest.raises(HeatlabError, match="config.json"):
        gax_run(tmp_path / "nowhere")
    with pytest.raises(HeatlabError, match="branch-07"):
        gax_run(gax_run_dir, branch=7)
    with pytest.raises(HeatlabError, match="first_n_correct"):
        gax_run(gax_run_dir, first_n_correct=0)
    with pytest.raises(HeatlabError, match="finite"):
        gax_run(gax_run_dir, target_co=math.inf)
    with pytest.raises(HeatlabError, match="max_steps"):
        gax_run(gax_run_dir, max_steps=0)
    with pytest.raises(HeatlabError, match="Split 'nope'"):
        gax_run(gax_run_dir, split="nope")
    assert not (gax_run_dir / "gax" / "gax.json").exists()


def test_gax_figure_and_section(gax_run_dir):
    from heatlab.report.gax_viewer import build_gax_viewer, gax_figure, gax_section
    from heatlab.run.gax import gax_run

    class Ctx:  # the parts of ReportContext the section uses
        run_dir, out_dir = gax_run_dir, gax_run_dir / "report"
        fig_dir = out_dir / "figures"

        def figure_path(self, name):
            return self.fig_dir / name

        def src(self, path):
            return path.relative_to(self.out_dir).as_posix()

        def img(self, path, alt, caption):
            return f'<img src="{self.src(path)}" alt="{alt}">{caption}'

    assert "No GAX result" in gax_section(Ctx())
    gax_run(gax_run_dir, first_n_correct=2, target_co=1e9, max_steps=3, snapshot_every=1)
    png = gax_figure(gax_run_dir, gax_run_dir / "fig.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = gax_section(Ctx())
    assert 'href="gax.html"' in html and 'src="figures/gax_co.png"' in html and "0 of 2" in html
    assert (gax_run_dir / "report" / "gax.html").is_file()
    with pytest.raises(HeatlabError, match="max_frames"):
        build_gax_viewer(gax_run_dir, max_frames=1)
