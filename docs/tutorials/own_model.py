"""Your own model on your own image folder: explain, train, evaluate, report.

The "own" data here is a folder of PNG files this script writes itself (cells drawn by heatlab, so
it has masks too), and the model is torchvision's ResNet-18 architecture at 64 px. Its weights are
RANDOM (heatlab downloads nothing; pass `--weights FILE` for trained ones), so the first heatmaps
explain an untrained network; the training step below is tiny and only shows the path.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

import heatlab.data.cells as cells


def heatlab(*args: str) -> None:
    print("$ heatlab " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "heatlab", *args], check=True)


# 1. An image folder as you might have one: my_images/<class>/*.png, and optional binary masks
#    (where the evidence is) under my_images/masks/<class>/ with the same file names.
classes = {0: "round", 1: "barred", 3: "square"}  # three of the cells' classes, renamed
batch = cells.generate(90, size=64, seed=0, classes=list(classes))
for i, (image, label, truth) in enumerate(zip(batch.images, batch.labels, batch.truth)):
    name = classes[int(label)]
    for folder, array in [(Path("my_images") / name, (image.permute(1, 2, 0).numpy() * 255).round()),
                          (Path("my_images/masks") / name, (truth.numpy() >= 0.9) * 255.0)]:
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array.astype(np.uint8)).save(folder / f"img-{i:03d}.png")
print(sorted(str(p) for p in Path("my_images").iterdir()), len(list(Path("my_images").rglob("*.png"))), "files")

# 2. Explain a few images with an architecture and no run: overlays + expl/index.html.
heatlab("explain", "my_images/round", "--model", "torchvision:resnet18", "--num-classes", "3",
        "--limit", "4", "--methods", "Saliency,IntegratedGradients", "--out", "expl")

# 3. Train on the folder (a flat folder is split 70/15/15 per class by a seeded draw), then score the
#    heatmaps against the masks: binary masks give the localisation metrics (no five-band score).
heatlab("train", "--data", "folder:my_images", "--model", "torchvision:resnet18", "--size", "64",
        "--epochs", "3", "--branches", "1", "--seed", "0", "--out", "run")
heatlab("evaluate", "run", "--methods", "Saliency,IntegratedGradients,GuidedBackprop")
loc = pd.read_parquet("run/tables/localisation.parquet")  # one row per (branch, method, sample)
print(loc.groupby("method")[["pointing_game/feature", "relevance_mass_accuracy/feature", "auc/feature"]].mean().round(3).to_string())
heatlab("report", "run")

# 4. The same in Python: one heatmap of the trained branch, drawn over its image.
import matplotlib.pyplot as plt  # noqa: E402

from heatlab.explain import attribute  # noqa: E402
from heatlab.report import overlay  # noqa: E402
from heatlab.run.rundir import load_branch  # noqa: E402

model = load_branch("run", 0).eval()
x = batch.images[:1]
heat = attribute(model, x, "IntegratedGradients")            # 1×3×64×64, same shape as x
rgb = overlay(x[0], heat[0].sum(0), sign="absolute")         # H×W×3 in [0, 1]
Path("figures").mkdir(exist_ok=True)
plt.imsave("figures/overlay.png", np.kron(rgb, np.ones((4, 4, 1))))  # upsampled 4× for the page
print("explanations:", sorted(p.name for p in Path("expl").iterdir()))
print("report:", Path("run/report/index.html").exists())
