"""The cells benchmark at a tiny size: data, train, evaluate, compare methods, report.

Every step is the `heatlab` command a user types; `heatlab()` below only echoes and runs it.
Sizes are tiny so the docs build stays short: 64 px cells, 800 training images, 6 epochs, 2 branches.
The paper's scale is `heatlab data cells --size 512` with 32/8/8 shards of 200 and 5 branches.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd


def heatlab(*args: str) -> None:
    print("$ heatlab " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "heatlab", *args], check=True)


# 1. Data: 10 classes of synthetic cells with ground-truth heatmaps (levels 0, 0.4, 0.9).
heatlab("data", "cells", "--out", "cells", "--size", "64", "--shards", "train=8,val=1,test=1", "--shard-size", "100")

# 2. Train a base model, then branch models from it (paper 002's protocol).
heatlab("train", "--data", "cells", "--out", "run", "--epochs", "6", "--branches", "2", "--seed", "0")

# 3. Explain every test image with four methods and score the heatmaps against the truth.
heatlab("evaluate", "run", "--methods", "Saliency,GuidedBackprop,IntegratedGradients,LayerGradCam")

# 4. Compare the methods: five-band best recall and precision (mean over samples and branches) and
#    the localisation AUC against the discriminative feature.
five = pd.read_parquet("run/tables/five_band.parquet")
five = five[five.variant == "standard"]
loc = pd.read_parquet("run/tables/localisation.parquet")
table = pd.concat([
    five.groupby("method")[["recall_best", "precision_best"]].mean(),
    loc.groupby("method")[["auc/feature"]].mean(),
], axis=1).sort_values("recall_best", ascending=False)
print(table.round(3).to_string())

# 5. The report: headline, five-band figures, localisation, heatmap gallery.
heatlab("report", "run")

# The docs show two of the report's figures (the tutorial hook embeds what lands in figures/).
Path("figures").mkdir(exist_ok=True)
for name in ["recall_precision.png", "gallery-class-02.png"]:
    shutil.copy(Path("run/report/figures") / name, Path("figures") / name)
