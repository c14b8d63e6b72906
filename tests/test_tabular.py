"""Tabular loaders (paper 000, Appendix A.4) on tiny tables the tests write, and the dataset registry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from heatlab.data import registry
from heatlab.data.registry import (
    ArraySplit,
    available_datasets,
    canonical_spec,
    describe_data,
    open_all,
    open_any,
    open_dataset,
    open_splits,
)
from heatlab.data.tabular import (
    CREDIT_FEATURES,
    DRYBEAN_FEATURES,
    creditcard,
    cross_projective_augment,
    drybean,
)
from heatlab.errors import HeatlabError
from heatlab.models.training import iter_batches

SPLIT_OF = {0: "train", 1: "val", 2: "test"}
BEANS = {"SEKER": 5, "BARBUNYA": 4, "BOMBAY": 3, "CALI": 6, "HOROZ": 7, "SIRA": 8, "DERMASON": 9}


def _all(split) -> dict[str, torch.Tensor]:
    shards = [split.load_shard(k) for k in range(split.num_shards)]
    return {key: torch.cat([s[key] for s in shards]) for key in ("images", "labels")}


@pytest.fixture(scope="module")
def bean_table() -> pd.DataFrame:
    """7 classes with 3..9 rows, interleaved; features on very different scales like the real table."""
    rng = np.random.default_rng(0)
    classes = [c for c, n in BEANS.items() for _ in range(n)]
    classes = [classes[i] for i in rng.permutation(len(classes))]
    scale = np.logspace(0, 5, len(DRYBEAN_FEATURES))
    data = rng.normal(size=(len(classes), len(DRYBEAN_FEATURES))) * scale + scale
    df = pd.DataFrame(data, columns=list(DRYBEAN_FEATURES))
    df["Class"] = classes
    return df


@pytest.fixture(scope="module")
def bean_files(bean_table, tmp_path_factory):
    d = tmp_path_factory.mktemp("beans")
    bean_table.to_excel(d / "Dry_Bean_Dataset.xlsx", index=False, engine="openpyxl")
    bean_table.to_csv(d / "Dry_Bean_Dataset.csv", index=False)
    return d / "Dry_Bean_Dataset.xlsx", d / "Dry_Bean_Dataset.csv"


def _expected_rows(labels) -> dict[str, set[int]]:
    """The paper's rule by hand: the i-th row of each class goes to split i mod 3."""
    seen: dict[object, int] = {}
    out = {"train": set(), "val": set(), "test": set()}
    for row, c in enumerate(labels):
        i = seen.get(c, 0)
        out[SPLIT_OF[i % 3]].add(row)
        seen[c] = i + 1
    return out


# ----------------------------------------------------------------------------------------- dry bean
def test_drybean_xlsx_and_csv_follow_the_mod_3_rule(bean_table, bean_files):
    xlsx, csv = bean_files
    a, b = drybean(xlsx), drybean(csv)
    expected = _expected_rows(bean_table["Class"].tolist())
    for s in ("train", "val", "test"):
        assert set(a[s].info["row"].tolist()) == expected[s] and len(a[s]) == len(expected[s])
        assert torch.equal(a[s].inputs, b[s].inputs) and torch.equal(a[s].labels, b[s].labels)
        assert a[s].class_names == sorted(BEANS) and a[s].input_shape == (16,)
        names = [a[s].class_names[k] for k in a[s].labels.tolist()]
        assert names == bean_table["Class"].iloc[a[s].info["row"]].tolist()
    assert [len(a[s]) for s in ("train", "val", "test")] == [
        sum(len(range(r, n, 3)) for n in BEANS.values()) for r in (0, 1, 2)
    ]


def test_drybean_standardisation_uses_training_rows_only(bean_table, bean_files, tmp_path):
    _, csv = bean_files
    splits = drybean(csv)
    raw = bean_table[list(DRYBEAN_FEATURES)].to_numpy()
    train_rows = sorted(_expected_rows(bean_table["Class"].tolist())["train"])
    mean = raw[train_rows].mean(0)
    std = np.sqrt(((raw[train_rows] - mean) ** 2).mean(0))  # population std, by hand
    norm = splits["train"].normalization
    assert norm["applied"] and np.allclose(norm["mean"], mean) and np.allclose(norm["std"], std)
    for s in ("train", "val", "test"):
        rows = splits[s].info["row"]
        assert np.allclose(splits[s].inputs.numpy(), (raw[rows] - mean) / std, atol=1e-5)
    assert np.allclose(splits["train"].inputs.numpy().mean(0), 0, atol=1e-5)
    # val and test rows must not move the statistics
    changed = bean_table.copy()
    others = sorted(_expected_rows(bean_table["Class"].tolist())["val"] | _expected_rows(bean_table["Class"].tolist())["test"])
    changed.loc[others, list(DRYBEAN_FEATURES)] *= 1000
    changed.to_csv(tmp_path / "changed.csv", index=False)
    assert drybean(tmp_path / "changed.csv")["train"].normalization == norm
    raw_splits = drybean(csv, standardize=False)
    assert not raw_splits["test"].normalization["applied"]
    assert np.allclose(raw_splits["test"].inputs.numpy(), raw[raw_splits["test"].info["row"]], rtol=1e-6)


def test_drybean_rejects_missing_columns_and_bad_values(bean_table, tmp_path):
    bean_table.drop(columns=["Solidity", "ShapeFactor2"]).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(HeatlabError, match="Solidity, ShapeFactor2"):
        drybean(tmp_path / "a.csv")
    bean_table.drop(columns=["Class"]).to_excel(tmp_path / "b.xlsx", index=False, engine="openpyxl")
    with pytest.raises(HeatlabError, match="Class"):
        drybean(tmp_path / "b.xlsx")
    bad = bean_table.astype({"Extent": object})
    bad.loc[4, "Extent"] = "n/a"
    bad.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(HeatlabError, match="'Extent'.*row 5"):
        drybean(tmp_path / "c.csv")
    (tmp_path / "d.xlsx").write_bytes(b"this is not a zip file")
    with pytest.raises(HeatlabError, match="Cannot read table"):
        drybean(tmp_path / "d.xlsx")
    with pytest.raises(HeatlabError, match=r"\.csv or \.xlsx"):
        drybean(tmp_path / "e.json")
    with pytest.raises(HeatlabError, match="does not exist"):
        drybean(tmp_path / "missing.csv")


def test_drybean_accepts_the_corrected_spelling(bean_table, tmp_path):
    bean_table.rename(columns={"AspectRation": "AspectRatio"}).to_csv(tmp_path / "fixed.csv", index=False)
    assert len(drybean(tmp_path / "fixed.csv")["train"]) == sum(len(range(0, n, 3)) for n in BEANS.values())


# ------------------------------------------------------------------------------------- credit card
@pytest.fixture()
def credit_csv(tmp_path):
    """70 rows: 10 frauds at scattered rows, 60 normal; features spread beyond ±3 to exercise the clip."""
    rng = np.random.default_rng(5)
    n = 70
    df = pd.DataFrame({"Time": np.arange(n, dtype=float)})
    for name in CREDIT_FEATURES:
        df[name] = rng.normal(scale=2.5, size=n)
    df["Amount"] = rng.uniform(0, 100, n)
    label = np.zeros(n, dtype=int)
    label[rng.choice(n, 10, replace=False)] = 1
    df["Class"] = label
    path = tmp_path / "creditcard.csv"
    df.to_csv(path, index=False)
    return path, df


def test_cross_projective_augment_by_hand():
    pos = np.array([[0.0, 1.0], [1.0, 1.0]])
    neg = np.arange(12, dtype=float).reshape(6, 2) / 10
    x, pi, ni = cross_projective_augment(pos, neg, cross_factor=3, lam=0.95)
    assert pi.tolist() == [0, 0, 0, 1, 1, 1] and ni.tolist() == [0, 1, 2, 3, 4, 5]
    assert np.allclose(x[4], 0.95 * pos[1] + 0.05 * neg[4])
    assert np.allclose(x, 0.95 * pos[pi] + 0.05 * neg[ni])
    with pytest.raises(HeatlabError, match="3 negatives per positive"):
        cross_projective_augment(pos, neg[:5], cross_factor=3)
    with pytest.raises(HeatlabError, match="cross factor"):
        cross_projective_augment(pos, neg, cross_factor=0)


def test_creditcard_counts_preprocessing_and_augmentation(credit_csv):
    path, df = credit_csv
    splits = creditcard(path)
    positives = np.flatnonzero(df["Class"].to_numpy() == 1)
    n_pos = {"train": 4, "val": 3, "test": 3}  # 10 positives, index mod 3
    assert {s: len(v) for s, v in splits.items()} == {"train": 4 * 10, "val": 3 * 10, "test": 3 + 15}
    pre = np.clip(df[list(CREDIT_FEATURES)].to_numpy(), -3, 3) / 3 + 0.5
    for s, split in splits.items():
        x, y = split.inputs.numpy().astype(np.float64), split.labels.numpy()
        p, q = split.info["positive_row"], split.info["negative_row"]
        assert split.input_shape == (28,) and split.class_names == ["normal", "fraud"]
        assert x.min() >= -0.5 and x.max() <= 1.5 and x.min() < 0 < x.max() - 1  # the fixture reaches the clip
        real_neg, real_pos, synth = (p < 0) & (q >= 0), (p >= 0) & (q < 0), (p >= 0) & (q >= 0)
        assert (y[real_neg] == 0).all() and (y[real_pos] == 1).all() and (y[synth] == 1).all()
        assert np.allclose(x[real_neg], pre[q[real_neg]], atol=1e-6)
        assert np.allclose(x[real_pos], pre[p[real_pos]], atol=1e-6)
        assert np.allclose(x[synth], 0.95 * pre[p[synth]] + 0.05 * pre[q[synth]], atol=1e-6)
        assert real_neg.sum() == 5 * n_pos[s]
        if s == "test":
            assert synth.sum() == 0 and sorted(p[real_pos]) == positives[2::3].tolist()
        else:
            assert real_pos.sum() == 0 and synth.sum() == 5 * n_pos[s]
            seeds, counts = np.unique(p[synth], return_counts=True)
            assert seeds.tolist() == positives[{"train": 0, "val": 1}[s] :: 3].tolist() and (counts == 5).all()
            # each synthetic sample's partner is one of the split's own real negatives, used once
            assert sorted(q[synth]) == sorted(q[real_neg])
        assert (df["Class"].to_numpy()[q[q >= 0]] == 0).all()


def test_creditcard_has_no_leakage(credit_csv):
    path, _ = credit_csv
    for seed in (0, 1):
        splits = creditcard(path, seed=seed)
        pos_rows = {s: set(v.info["positive_row"][v.info["positive_row"] >= 0].tolist()) for s, v in splits.items()}
        neg_rows = {s: set(v.info["negative_row"][v.info["negative_row"] >= 0].tolist()) for s, v in splits.items()}
        assert not pos_rows["test"] & (pos_rows["train"] | pos_rows["val"])
        assert not pos_rows["train"] & pos_rows["val"]
        assert not neg_rows["test"] & (neg_rows["train"] | neg_rows["val"]) and not neg_rows["train"] & neg_rows["val"]
    a, b = creditcard(path, seed=0), creditcard(path, seed=1)
    assert set(a["test"].info["positive_row"]) == set(b["test"].info["positive_row"])  # positives: mod 3, no seed
    assert set(a["train"].info["negative_row"]) != set(b["train"].info["negative_row"])  # negatives: seeded
    c = creditcard(path, seed=0)
    assert torch.equal(a["train"].inputs, c["train"].inputs) and torch.equal(a["train"].labels, c["train"].labels)


def test_creditcard_rejects_broken_tables(credit_csv, tmp_path):
    path, df = credit_csv
    df.drop(columns=["V7"]).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(HeatlabError, match="V7"):
        creditcard(tmp_path / "a.csv")
    df.assign(Class=df["Class"] * 2).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(HeatlabError, match="only 0"):
        creditcard(tmp_path / "b.csv")
    with pytest.raises(HeatlabError, match="lower the cross factor"):
        creditcard(path, cross_factor=7)
    df.assign(Class=0).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(HeatlabError, match="at least 3"):
        creditcard(tmp_path / "c.csv")
    (tmp_path / "d.csv").write_text("")
    with pytest.raises(HeatlabError, match="Cannot read table"):
        creditcard(tmp_path / "d.csv")


# ---------------------------------------------------------------------------------- scikit-learn
@pytest.mark.parametrize(
    "name, total, features, classes",
    [("wine", 178, 13, ["class_0", "class_1", "class_2"]), ("breast_cancer", 569, 30, ["malignant", "benign"])],
)
def test_sklearn_tables(name, total, features, classes):
    from sklearn import datasets

    target = getattr(datasets, f"load_{name}")().target
    splits = open_splits(name)
    expected = _expected_rows(target.tolist())
    assert sum(len(v) for v in splits.values()) == total
    for s, split in splits.items():
        assert split.input_shape == (features,) and split.class_names == classes
        assert set(split.info["row"].tolist()) == expected[s]
        assert torch.equal(split.labels, torch.as_tensor(target[split.info["row"]]))
    assert torch.allclose(splits["train"].inputs.mean(0), torch.zeros(features), atol=1e-5)
    assert torch.allclose(splits["train"].inputs.std(0, unbiased=False), torch.ones(features), atol=1e-4)


# -------------------------------------------------------------------------------------- registry
def test_array_split_shards_and_validation():
    X, y = np.arange(20, dtype=np.float32).reshape(10, 2), np.arange(10) % 3
    split = ArraySplit(X, y, ["a", "b", "c"], shard_size=4)
    assert split.num_shards == 3 and len(split) == 10
    data = _all(split)
    assert torch.equal(data["images"], torch.as_tensor(X)) and data["labels"].dtype == torch.int64
    batches = list(iter_batches(split, 3, generator=torch.Generator().manual_seed(0)))
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(y.tolist())
    with pytest.raises(HeatlabError, match="Labels"):
        ArraySplit(X, y + 1, ["a", "b", "c"])
    with pytest.raises(HeatlabError, match="one label per input"):
        ArraySplit(X, y[:3], ["a", "b", "c"])
    with pytest.raises(HeatlabError, match="NaN"):
        ArraySplit(np.full((2, 2), np.nan), [0, 1], ["a", "b"])
    with pytest.raises(HeatlabError, match="out of range"):
        split.load_shard(3)


def test_registry_specs_and_errors(bean_files, tmp_path):
    assert available_datasets() == ["chest_xray", "covid", "folder", "drybean", "creditcard", "wine", "breast_cancer", "cells", "mnist", "fashion_mnist", "digits", "cifar10", "stl10"]
    _, csv = bean_files
    assert len(open_dataset(f"drybean:{csv}", "val")) == sum(len(range(1, n, 3)) for n in BEANS.values())
    assert canonical_spec("WINE") == "wine" and canonical_spec(f"drybean:{csv}") == f"drybean:{csv.resolve()}"
    with pytest.raises(HeatlabError, match="chest_xray:PATH, covid:PATH.*wine, breast_cancer"):
        open_dataset("imagenet", "train")
    with pytest.raises(HeatlabError, match="train, val, test"):
        open_dataset("wine", "holdout")
    with pytest.raises(HeatlabError, match="drybean:PATH"):
        open_dataset("drybean", "train")
    with pytest.raises(HeatlabError, match="takes no path"):
        open_dataset("wine:/tmp/x", "train")
    with pytest.raises(HeatlabError, match="Option 'size'.*standardize"):
        open_dataset("wine", "train", size=3)
    with pytest.raises(HeatlabError, match="neither a cell dataset folder"):
        open_any(tmp_path / "nothing-here", "train")


def test_open_any_reads_cell_folders_and_specs(tmp_path):
    from heatlab.data import cells
    from heatlab.data.shards import CellSplit, write_cells

    write_cells(tmp_path / "cells", size=cells.MIN_SIZE, seed=1, shards={"train": 1, "val": 1, "test": 1}, shard_size=2)
    split = open_any(tmp_path / "cells", "val")
    assert isinstance(split, CellSplit) and len(split) == 2 and registry.input_shape(split) == (3, cells.MIN_SIZE, cells.MIN_SIZE)
    assert describe_data(tmp_path / "cells") == str((tmp_path / "cells").resolve())
    every = open_all("breast_cancer", ("train", "test"))
    assert set(every) == {"train", "test"} and registry.input_shape(every["test"]) == (30,)
    assert describe_data("breast_cancer") == "breast_cancer"
