"""The run directory object and the resumable-stage runner, on a toy stage and on the real ones."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass

import pandas as pd
import pytest
import torch

from heatlab.errors import HeatlabError
from heatlab.run.rundir import RunDir, branch_name
from heatlab.run.runner import PARQUET, TENSORS, ShardUnit, Stage, Unit, is_done, marker_path, run_stage


class Boom(Exception):
    pass


class LabelStage(Stage):
    """Per (branch, shard) of the test split: the shard's labels and the branch's predictions."""

    name = "toy"
    kinds = {"rows": PARQUET, "tensors": TENSORS}

    def __init__(self, run, *, fail_at=None):
        super().__init__(run, batch_size=4)
        self.fail_at, self.calls = fail_at, []

    def units(self):
        data = self.run.open_data("test")
        return [ShardUnit("test", b, "none", k) for b in self.run.branches() for k in range(data.num_shards)]

    def run_unit(self, work, unit):
        self.calls.append(unit)
        if unit == self.fail_at:
            raise Boom()
        shard = work.shard(unit.split, unit.shard)
        preds = work.predictions(unit.split, unit.branch, unit.shard)
        rows = pd.DataFrame({"label": shard["labels"].numpy(), "prediction": preds.numpy()})
        return {"rows": rows, "tensors": {"first": shard["images"][:1].contiguous()}}

    def join(self, units, parts):
        return pd.concat([df.assign(shard=u.shard) for u, df in zip(units, parts["rows"])], ignore_index=True)


def test_branch_names_have_one_form():
    assert branch_name(0) == branch_name("0") == branch_name("branch-00") == "branch-00"
    assert branch_name("base") == "base"
    with pytest.raises(HeatlabError, match="not a branch"):
        branch_name("b0")


def test_run_dir_knows_the_layout(tiny_run):
    run = RunDir(tiny_run)
    assert run.branches() == ["branch-00"] and run.seed() == 3
    assert run.parts("evaluate", "test") == tiny_run / "tables" / "parts" / "evaluate-test"
    assert run.heatmaps("test", 0, "Saliency") == tiny_run / "heatmaps" / "test" / "branch-00" / "Saliency.safetensors"
    assert run.open_data("test").truth_kind == "levels"
    with pytest.raises(HeatlabError, match="not one of train, val, test"):
        run.parts("evaluate", "../../x")  # a split name never leads out of the run folder


def test_a_stage_killed_midway_resumes_and_joins_the_same(tiny_run, tmp_path):
    run_path = tmp_path / "run"
    shutil.copytree(tiny_run, run_path)
    run = RunDir(run_path)
    whole = run_stage(LabelStage(run))
    shutil.rmtree(run.parts("toy", "test"))
    stage = LabelStage(run, fail_at=ShardUnit("test", "branch-00", "none", 1))
    with pytest.raises(Boom):
        run_stage(stage)
    units = stage.units()
    assert is_done(stage, units[0]) and not is_done(stage, units[1])
    assert not list(run_path.rglob("*.tmp"))  # nothing half-written
    again = LabelStage(run)
    resumed = run_stage(again)
    assert again.calls == units[1:]  # only the unfinished unit ran
    pd.testing.assert_frame_equal(whole, resumed)
    # predictions come from the branch model, once per shard
    model = run.load_model("branch-00")
    shard = run.open_data("test").load_shard(0)
    with torch.no_grad():
        assert resumed.query("shard == 0")["prediction"].tolist() == model(shard["images"]).argmax(1).tolist()


def test_a_broken_piece_is_redone_next_time(tiny_run, tmp_path):
    run_path = tmp_path / "run"
    shutil.copytree(tiny_run, run_path)
    run = RunDir(run_path)
    stage = LabelStage(run)
    first = run_stage(stage)
    unit = stage.units()[0]
    piece = marker_path(stage, unit).with_name(marker_path(stage, unit).name.replace("done.json", "rows.parquet"))
    piece.write_bytes(b"not parquet")
    with pytest.raises(HeatlabError, match="unreadable"):
        run_stage(LabelStage(run))
    again = LabelStage(run)
    pd.testing.assert_frame_equal(first, run_stage(again))
    assert again.calls == [unit]


class SettingStage(LabelStage):
    """LabelStage whose shard-1 units depend on a setting (as a method option or an AX space would)."""

    def __init__(self, run, option):
        super().__init__(run)
        self.option = option

    def settings(self, unit):
        return {"option": self.option} if unit.shard == 1 else {}


def test_units_done_with_other_settings_are_run_again(tiny_run, tmp_path):
    run_path = tmp_path / "run"
    shutil.copytree(tiny_run, run_path)
    run = RunDir(run_path)
    run_stage(SettingStage(run, "a"))
    same = SettingStage(run, "a")
    run_stage(same)
    assert same.calls == []  # nothing changed: nothing redone
    other = SettingStage(run, ("b", 1))  # stored as JSON: the tuple compares as a list next time
    run_stage(other)
    assert [u.shard for u in other.calls] == [1]  # only the units whose settings changed
    again = SettingStage(run, ["b", 1])
    run_stage(again)
    assert again.calls == []


@dataclass(frozen=True)
class StepUnit(Unit):
    """A unit keyed by its own field alone (no split, branch or shard); step k runs in wave k."""

    step: int

    def stem(self, parts):
        return parts / f"step-{self.step}"

    @property
    def wave(self):
        return self.step


class Chain(Stage):
    """Step k's value is step k-1's, read from its written piece, plus one: right only if waves are kept."""

    name = "chain"
    kinds = {"value": TENSORS}

    def parts_dir(self, unit):
        return self.run.parts(self.name, "test")

    def units(self):
        return [StepUnit(2), StepUnit(0), StepUnit(1)]

    def run_unit(self, work, unit):
        before = torch.zeros(1) if unit.step == 0 else self.read(StepUnit(unit.step - 1), "value")["v"]
        return {"value": {"v": before + 1}}

    def join(self, units, parts):
        return {u.step: int(p["v"]) for u, p in zip(units, parts["value"])}


def test_a_typed_unit_runs_in_waves_and_its_marker_holds_its_own_fields(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    stage = Chain(RunDir(run))
    assert run_stage(stage) == {2: 3, 0: 1, 1: 2}
    # no model behind the unit: no weights in its settings
    assert json.loads(marker_path(stage, StepUnit(1)).read_text()) == {"step": 1, "settings": {}}
    assert all(is_done(stage, u) for u in stage.units())
