"""Training protocol (paper 002 §III-B): early-stopping rule, branch stop reasons, determinism,
resume, run-folder checks and the training figure."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from heatlab.data.shards import open_split, write_cells
from heatlab.errors import HeatlabError
from heatlab.models import zoo
from heatlab.models.training import (
    STOP_EARLY,
    STOP_EXHAUSTED,
    STOP_TARGET,
    EarlyStopping,
    TrainConfig,
    create_model,
    evaluate_accuracy,
    iter_batches,
    predict,
    train_branch,
    train_continuous,
)
from heatlab.report.training_figures import training_figure
from heatlab.run.training import branch_info, list_branches, load_branch, stage_dir, train_run
from heatlab.tables import TABLES


# ------------------------------------------------------------------------------- pure pieces
def test_early_stopping_follows_scripted_sequence():
    # Worked by hand with r_f = 0.4, n_l = 5, target 0.9 (best starts at 0).
    script = [
        (0.5, "improved", 0),  # int(0.4·0) = 0
        (0.4, "no_improvement", 1),
        (0.5, "no_improvement", 2),  # equal is not an improvement
        (0.3, "no_improvement", 3),
        (0.2, "no_improvement", 4),
        (0.6, "improved", 1),  # int(0.4·4) = int(1.6) = 1
        (0.6, "no_improvement", 2),
        (0.65, "improved", 0),  # int(0.4·2) = int(0.8) = 0
        (0.1, "no_improvement", 1),
        (0.1, "no_improvement", 2),
        (0.1, "no_improvement", 3),
        (0.1, "no_improvement", 4),
        (0.1, "stop", 5),
    ]
    es = EarlyStopping(target_acc=0.9, n_l=5, r_f=0.4)
    for acc, decision, counter in script:
        assert es.update(acc) == decision
        assert es.counter == counter
    assert es.best == 0.65

    es = EarlyStopping(target_acc=0.9, n_l=5, r_f=0.5)
    assert [es.update(a) for a in (0.0, 0.0, 0.0)] == ["no_improvement"] * 3  # 0 never beats best 0
    assert es.update(0.3) == "improved" and es.counter == 1  # int(0.5·3)
    assert es.update(0.9) == "target" and es.best == 0.9  # ≥ target, counter untouched
    assert es.counter == 1


class MeanLinear(nn.Module):
    """Mean over pixels -> Linear: tiny, fast, and easy to pin to known predictions."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


class MemShards:
    """In-memory shard source with the CellSplit interface the training uses."""

    def __init__(self, shards: list[tuple[torch.Tensor, torch.Tensor]]):
        self.shards = shards
        self.num_shards = len(shards)

    def __len__(self) -> int:
        return sum(len(y) for _, y in self.shards)

    def load_shard(self, k: int) -> dict:
        x, y = self.shards[k]
        return {"images": x, "labels": y}


def _blobs(n: int, seed: int, num_classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable 3×4×4 images: class c is bright in channel c."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = torch.rand(n, 3, 4, 4, generator=g) * 0.5
    x[torch.arange(n), y] += 1.0
    return x, y


def _cfg(**kw) -> TrainConfig:
    base = dict(model="cellcnn", branch_lr=None, schedule="constant", epochs=1, branch_epochs=2, branches=1, batch_size=4, lr=0.05,
                eval_every=2, target_acc=2.0, n_l=1000, r_f=0.4, seed=0)
    return TrainConfig(**{**base, **kw})


def test_iter_batches_covers_each_shard_sample_once_and_keeps_shards_together():
    sizes = [5, 7, 3]
    ids = torch.arange(sum(sizes))
    src = MemShards([(ids[s - n : s].float().view(-1, 1, 1, 1), ids[s - n : s]) for n, s in
                     zip(sizes, torch.tensor(sizes).cumsum(0).tolist())])
    run = lambda seed: list(iter_batches(src, 4, generator=torch.Generator().manual_seed(seed)))  # noqa: E731
    batches = run(1)
    assert [len(y) for _, y in batches] == [4, 4, 4, 3]
    order = torch.cat([y for _, y in batches])
    assert sorted(order.tolist()) == ids.tolist()
    shard_of = torch.bucketize(order, torch.tensor(sizes).cumsum(0), right=True)
    runs = 1 + int((shard_of[1:] != shard_of[:-1]).sum())
    assert runs == len(sizes)  # shard by shard
    assert torch.equal(order, torch.cat([y for _, y in run(1)]))  # same seed, same order
    assert not torch.equal(order, torch.cat([y for _, y in run(2)]))
    assert torch.cat([y for _, y in iter_batches(src, 4)]).tolist() == ids.tolist()  # no generator: data order


def test_predict_and_accuracy_match_hand_computed():
    model = MeanLinear(3)
    with torch.no_grad():
        model.fc.weight.copy_(torch.eye(3))
        model.fc.bias.zero_()
    x, y = _blobs(9, seed=0)
    y = y.clone()
    y[:2] = (y[:2] + 1) % 3  # two wrong labels
    preds, labels = predict(model, (x, y), batch_size=4)
    assert torch.equal(preds, torch.arange(9) % 3)
    assert evaluate_accuracy(model, (x, y), batch_size=2) == pytest.approx(7 / 9)
    assert evaluate_accuracy(model, MemShards([(x[:4], y[:4]), (x[4:], y[4:])])) == pytest.approx(7 / 9)
    assert model.training  # mode restored


def test_branch_stops_with_target_reached_at_first_validation():
    train, val = _blobs(24, 1), MemShards([_blobs(6, 2), _blobs(6, 3)])
    result = train_branch(MeanLinear(), train, val, _cfg(target_acc=0.0, eval_every=3))
    assert result.stop_reason == STOP_TARGET
    assert result.iterations == 3 and len(result.validations) == 1
    assert result.validations[0].decision == "target" and result.validations[0].saved


def test_branch_early_stops_after_exactly_n_l_validations_without_improvement():
    model = MeanLinear()
    with torch.no_grad():  # always predicts class 0 ...
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    x, _ = _blobs(6, 2)
    val = MemShards([(x, torch.ones(6, dtype=torch.int64)), (x, torch.full((6,), 2))])  # ... never right
    start = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_branch(model, _blobs(40, 1), val, _cfg(lr=0.0, n_l=3, eval_every=2))
    assert result.stop_reason == STOP_EARLY
    assert [v.decision for v in result.validations] == ["no_improvement", "no_improvement", "stop"]
    assert [v.accuracy for v in result.validations] == [0.0, 0.0, 0.0]
    assert [v.saved for v in result.validations] == [True, False, False]  # first check always saves
    assert result.iterations == 3 * 2
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())  # lr 0: unchanged


def test_branch_exhausts_epochs_and_keeps_the_last_saved_state():
    train, val = _blobs(20, 1), MemShards([_blobs(6, 2), _blobs(6, 3), _blobs(6, 4)])
    saves = []
    model = MeanLinear()
    result = train_branch(model, train, val, _cfg(branch_epochs=3, lr=0.02), branch=1, on_save=saves.append)
    assert result.stop_reason == STOP_EXHAUSTED
    assert result.iterations == 3 * 5  # 3 epochs of ceil(20 / 4) batches
    assert len(result.validations) == 15 // 2
    assert len(saves) == sum(v.saved for v in result.validations) >= 1
    assert all(torch.equal(saves[-1][k], v) for k, v in model.state_dict().items())
    last = [v for v in result.validations if v.saved][-1]
    assert result.best_iteration == last.iteration
    assert evaluate_accuracy(model, (val.shards[last.shard][0], val.shards[last.shard][1])) == last.accuracy
    # the decisions are exactly EarlyStopping's on the recorded accuracies
    es = EarlyStopping(2.0, 1000, 0.4)
    assert [es.update(v.accuracy) for v in result.validations] == [v.decision for v in result.validations]


def test_same_seed_same_losses_and_weights():
    data = MemShards([_blobs(10, 5), _blobs(10, 6)])

    def once(seed: int):
        cfg = _cfg(seed=seed, epochs=2, lr=1e-3, batch_size=8)
        model = create_model(cfg, num_classes=10, input_shape=(3, 64, 64))  # cellcnn: BN and init from the seed
        x = torch.nn.functional.interpolate(data.shards[0][0], size=32)
        src = MemShards([(x, data.shards[0][1]), (x.flip(0), data.shards[1][1])])
        return train_continuous(model, src, cfg), model.state_dict()

    (l1, s1), (l2, s2), (l3, _) = once(0), once(0), once(1)
    assert l1 == l2 and len(l1) == 2 * 3
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert l1 != l3


def test_training_resumed_from_a_stored_epoch_checkpoint_ends_with_the_same_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    from heatlab.models.checkpoint import Checkpoint

    torch.manual_seed(0)
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    cfg = _cfg(seed=3, epochs=3, lr=1e-2, batch_size=8, schedule="cosine")

    def fresh():  # dropout: the resumed run also needs the RNG state back
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))

    whole = fresh()
    losses = train_continuous(whole, (x, y), cfg)
    saved = []
    class Killed(Exception):
        pass

    def store_and_die(c: Checkpoint) -> None:
        save_file(c.to_tensors(), str(tmp_path / f"e{c.epochs_done}.st"))
        raise Killed

    with pytest.raises(Killed):
        train_continuous(fresh(), (x, y), cfg, on_epoch=store_and_die)
    resume = Checkpoint.from_tensors(load_file(str(tmp_path / "e1.st")))
    later = train_continuous(fresh(), (x, y), cfg, resume=resume, on_epoch=saved.append)
    assert later == losses[5:] and [c.epochs_done for c in saved] == [2, 3]
    assert all(torch.equal(v, saved[-1].model[k]) for k, v in whole.state_dict().items())


def test_config_rejects_bad_values_with_one_sentence():
    for bad in (dict(batch_size=0), dict(r_f=1.0), dict(lr=-1.0), dict(n_l=0), dict(device="gpu0"), dict(epochs=1.5)):
        with pytest.raises(HeatlabError):
            TrainConfig(**bad)
    with pytest.raises(HeatlabError, match="Unknown training setting"):
        TrainConfig.from_dict({"epochs": 1, "lrate": 3})
    assert TrainConfig.from_dict(TrainConfig(epochs=7).to_dict()) == TrainConfig(epochs=7)


# ---------------------------------------------------------------------------------- run folder
RUN_CFG = TrainConfig(epochs=1, branch_epochs=1, branches=2, batch_size=4, eval_every=2, n_l=3, seed=3)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    write_cells(root, size=64, seed=0, shards={"train": 2, "val": 2, "test": 1}, shard_size=10)
    return root


@pytest.fixture(scope="module")
def full_run(data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "a"
    return run, train_run(data_dir, run, RUN_CFG)


def _same_weights(a, b) -> bool:
    # Tensors, not file bytes: safetensors may order the metadata keys differently per save.
    ta, tb = load_file(a), load_file(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def _weights(run, stage):
    return stage_dir(run, stage) / "weights.safetensors"


def test_interrupted_run_resumes_without_retraining_and_matches(data_dir, full_run, tmp_path):
    run_a, summary_a = full_run
    run_b = tmp_path / "b"
    first = train_run(data_dir, run_b, dataclasses.replace(RUN_CFG, branches=1))  # fewer branches: extendable
    assert first.skipped == []
    stamps = {s: (stage_dir(run_b, s) / "model.json").stat().st_mtime_ns for s in ("base", 0)}

    class Killed(Exception):
        pass

    def kill(task, done, total):
        if task == "train/branch-01" and done == 3:
            raise Killed

    with pytest.raises(Killed):
        train_run(data_dir, run_b, RUN_CFG, progress=kill)
    assert list_branches(run_b) == [0]  # branch 1 left partial
    summary_b = train_run(data_dir, run_b, RUN_CFG)
    assert summary_b.skipped == ["base", "branch-00"]
    assert {s: (stage_dir(run_b, s) / "model.json").stat().st_mtime_ns for s in ("base", 0)} == stamps
    for stage in ("base", 0, 1):
        assert _same_weights(_weights(run_a, stage), _weights(run_b, stage))
    assert summary_b.branches == summary_a.branches
    for table in ("training", "validation"):
        pd.testing.assert_frame_equal(pd.read_parquet(run_a / "tables" / f"{table}.parquet"),
                                      pd.read_parquet(run_b / "tables" / f"{table}.parquet"))


def test_summary_tables_and_models_agree(data_dir, full_run):
    run, summary = full_run
    assert list_branches(run) == [0, 1]
    steps = pd.read_parquet(run / "tables" / "training.parquet")
    vals = pd.read_parquet(run / "tables" / "validation.parquet")
    test = open_split(data_dir, "test")
    assert summary.base["iterations"] == (steps["phase"] == "base").sum() == 5  # ceil(20 / 4)
    for row in summary.branches:
        b = row["branch"]
        info = branch_info(run, b)
        assert info["spec"]["name"] == "cellcnn" and info["spec"]["num_classes"] == 10
        assert info["stop_reason"] == row["stop_reason"] and len(info["class_names"]) == 10
        assert (steps["phase"] == f"branch-{b:02d}").sum() == info["iterations"] == row["iterations"]
        assert (vals["branch"] == b).sum() == info["validations"]
        assert row["test_acc"] == evaluate_accuracy(load_branch(run, b), test)
    losses = [steps.loc[steps["phase"] == f"branch-{b:02d}", "loss"].tolist() for b in (0, 1)]
    assert losses[0] != losses[1]  # each branch draws its own data order
    assert summary.test_acc_mean == pytest.approx(sum(r["test_acc"] for r in summary.branches) / 2)
    assert not load_branch(run, 0).training


def test_training_tables_are_what_their_schema_writes(full_run, tmp_path):
    """The schema is the tables' one source: each stored table (per stage and the run's) equals what its
    TableSchema writes from the same rows: its columns in order, each of the schema's kind."""
    run, _ = full_run
    for name, file in (("training", "steps.parquet"), ("validation", "validation.parquet")):
        schema = TABLES[name]
        paths = [run / "tables" / f"{name}.parquet", *sorted((run / "model").glob(f"*/{file}"))]
        assert len(paths) == (4 if name == "training" else 3), paths  # the run's, the base's (steps), 2 branches'
        for path in paths:
            stored = pd.read_parquet(path)
            assert list(stored.columns) == schema.names and len(stored), path
            schema.write(tmp_path / "again.parquet", pd.DataFrame(stored.to_dict("records")))
            pd.testing.assert_frame_equal(stored, pd.read_parquet(tmp_path / "again.parquet"))


def test_changed_settings_are_refused(data_dir, full_run):
    run, _ = full_run
    with pytest.raises(HeatlabError, match=r"different settings \(lr\)"):
        train_run(data_dir, run, dataclasses.replace(RUN_CFG, lr=0.01))


def test_weights_with_other_class_count_are_refused_before_writing(data_dir, tmp_path):
    weights = tmp_path / "two.safetensors"
    zoo.save_weights(zoo.create("cellcnn", num_classes=2), weights)
    with pytest.raises(HeatlabError, match="2-class model but the data has 10 classes"):
        train_run(data_dir, tmp_path / "run", RUN_CFG, weights=weights)
    assert not (tmp_path / "run").exists()


def test_given_weights_start_the_base_model(data_dir, full_run, tmp_path):
    run, _ = full_run
    start = stage_dir(run, 0) / "weights.safetensors"
    out = tmp_path / "w"
    train_run(data_dir, out, dataclasses.replace(RUN_CFG, epochs=0, branches=0), weights=start)
    assert _same_weights(_weights(out, "base"), start)  # no epochs: the base is the given model


def test_bad_inputs_raise_heatlab_errors(data_dir, tmp_path):
    with pytest.raises(HeatlabError):
        train_run(tmp_path / "nothing", tmp_path / "r1", RUN_CFG)
    with pytest.raises(HeatlabError):
        train_run(data_dir, tmp_path / "r2", dataclasses.replace(RUN_CFG, model="no-such-model"))
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
    # the 8x8 digits at 28 px are too small for cellcnn's five halvings: one sentence, nothing written
    with pytest.raises(HeatlabError, match=r"Model 'cellcnn' cannot take inputs of shape \(1, 28, 28\)"):
        train_run("digits", tmp_path / "r3", dataclasses.replace(RUN_CFG, model="cellcnn"))
    assert not (tmp_path / "r3").exists()
    with pytest.raises(HeatlabError, match="no trained model"):
        load_branch(tmp_path, 0)


def test_training_figure_is_written(full_run, tmp_path):
    run, _ = full_run
    png = training_figure(run, tmp_path / "fig" / "training.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with pytest.raises(HeatlabError, match="no training tables"):
        training_figure(tmp_path, tmp_path / "x.png")


def test_a_label_without_a_class_name_is_one_sentence():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2, 0])
    with pytest.raises(HeatlabError, match="Label 3 has no class: the model has 3 outputs"):
        train_continuous(model, (x, y), TrainConfig(epochs=1, batch_size=4))
    with pytest.raises(HeatlabError, match="Label -1 has no class"):
        train_continuous(model, (x, y.clamp(max=2) - 1), TrainConfig(epochs=1, batch_size=4))


def test_bad_input_found_while_training_leaves_no_run_behind(data_dir, tmp_path, monkeypatch):
    import heatlab.run.training as run_training

    def fails(*args, **kwargs):
        raise HeatlabError("Label 12 has no class.")

    monkeypatch.setattr(run_training, "_train_base", fails)
    with pytest.raises(HeatlabError, match="Label 12"):
        train_run(data_dir, tmp_path / "run", RUN_CFG)
    assert not (tmp_path / "run").exists()  # config.json was written before training started
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(HeatlabError, match="Label 12"):
        train_run(data_dir, tmp_path / "mine", RUN_CFG)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_leftover_temporary_files_of_dead_writers_are_removed(tmp_path):
    import subprocess
    import sys

    from heatlab.files import atomic_path, remove_stale_tmp

    # A writer killed mid-write leaves its temporary file; this one exits before renaming it.
    code = ("import os, sys\nfrom heatlab.files import atomic_path\n"
            "cm = atomic_path(sys.argv[1]); tmp = cm.__enter__(); tmp.write_text('half'); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "sub" / "co.parquet")], check=True)
    left = list(tmp_path.rglob("*.tmp"))
    assert len(left) == 1 and left[0].name.startswith(".co.parquet.")
    with atomic_path(tmp_path / "live.json") as mine:  # a live writer's file stays
        mine.write_text("{}")
        (tmp_path / ".other.json.elsewhere~1.abc.tmp").write_text("x")  # another host's writer
        assert remove_stale_tmp(tmp_path) == 1
        assert mine.exists() and (tmp_path / ".other.json.elsewhere~1.abc.tmp").exists()
    assert not list((tmp_path / "sub").iterdir()) and (tmp_path / "live.json").read_text() == "{}"


def test_tables_get_the_table_defaults_and_a_model_near_chance_is_flagged(tmp_path):
    import json

    from heatlab.models.training import TABLE_DEFAULTS

    for data in ("wine", "breast_cancer"):
        summary = train_run(data, tmp_path / data, {"branches": 1})
        training = json.loads((tmp_path / data / "config.json").read_text())["training"]
        assert {k: training[k] for k in TABLE_DEFAULTS} == TABLE_DEFAULTS
        assert summary.test_acc_mean >= 0.95 and summary.warning is None, (data, summary)
    # Untrained (a learning rate of 1e-12): every model guesses, and the summary says so.
    summary = train_run("wine", tmp_path / "still", {"branches": 1, "lr": 1e-12, "branch_lr": 1e-12, "epochs": 1})
    assert summary.chance_acc == pytest.approx(23 / 58)  # wine's largest test class
    assert summary.test_acc_mean < summary.chance_acc + 0.1
    assert summary.warning.startswith("Every model is near chance") and "--epochs" in summary.warning
    # Settings given win over the table defaults, and a TrainConfig is taken as it is.
    train_run("wine", tmp_path / "given", {"branches": 0, "epochs": 2, "model": "drybeanfpa"})
    training = json.loads((tmp_path / "given" / "config.json").read_text())["training"]
    assert (training["model"], training["epochs"], training["lr"]) == ("drybeanfpa", 2, TABLE_DEFAULTS["lr"])


def test_data_options_are_recorded_and_every_stage_opens_the_data_with_them(tmp_path):
    from PIL import Image

    from heatlab.run.rundir import RunDir

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(10):
            (tmp_path / "pics" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.random((20, 30, 3)) * 255).astype(np.uint8)).save(tmp_path / "pics" / c / f"{i}.png")
    train_run(f"folder:{tmp_path / 'pics'}", tmp_path / "run", {"branches": 0, "epochs": 1, "model": "mlp"},
              data_options={"size": 12})
    assert RunDir(tmp_path / "run").open_data("test").load_shard(0)["images"].shape[1:] == (3, 12, 12)
    with pytest.raises(HeatlabError, match="different settings"):
        train_run(f"folder:{tmp_path / 'pics'}", tmp_path / "run", {"branches": 0, "epochs": 1, "model": "mlp"},
                  data_options={"size": 16})


@pytest.mark.parametrize("command", ["train", "mixer", "lrp-study", "explain"])
def test_backend_flags_that_do_not_fit_are_one_sentence_and_write_nothing(data_dir, full_run, tmp_path, command):
    from typer.testing import CliRunner

    from heatlab.cli import app

    run = tmp_path / "run"
    if command == "mixer":
        shutil.copytree(full_run[0], run)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    args = {"train": ["train", "--data", str(data_dir), "--out", str(run)], "mixer": ["mixer", str(run)],
            "lrp-study": ["lrp-study", "--out", str(run)],
            "explain": ["explain", str(data_dir), "--model", "cellcnn", "--num-classes", "3", "--out", str(run)]}[command]
    for flags, sentence in ((["--workers", "2"], "--workers is a Ray option; pass --backend ray or drop it."),
                            (["--backend", "ray", "--workers", "0"],
                             "--workers must be a whole number of at least 1, got 0; pass e.g. --workers 2."),
                            (["--backend", "ray", "--address", "nowhere"],
                             "Ray address 'nowhere' is not host:port; pass e.g. --address 10.0.0.1:6379 or 'auto'.")):
        result = CliRunner().invoke(app, [*args, *flags])
        assert result.exit_code == 2 and result.output.strip() == f"error: {sentence}", result.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
