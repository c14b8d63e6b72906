"""heatlab's metrics inside a Quantus workflow: the same call signature, side by side with Quantus.

`heatlab.score.quantus` holds one class per heatlab metric, called as a Quantus 0.6 metric:
`metric(model=, x_batch=, y_batch=, a_batch=, s_batch=)` -> one float per sample. The model is a
small CNN with random weights (seeded) on 16 cells at 64 px; nothing here needs training.
"""

import numpy as np
import quantus
import torch
from torch import nn

import heatlab.data.cells as cells
from heatlab.explain import explain_func
from heatlab.score import quantus as hq

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
                      nn.Flatten(), nn.Linear(8 * 16 * 16, 10)).eval()
batch = cells.generate(16, size=64, seed=0)
x = batch.images.numpy()                                       # x_batch N×C×H×W
y = batch.labels.numpy()                                       # y_batch N
s = (batch.truth.numpy() >= 0.9)[:, None].astype(np.float32)   # s_batch N×1×H×W: the discriminative feature
kw = {"method": "Saliency", "abs": False, "channels": "sum"}    # any heatlab method and its options
a = explain_func(model, x, y, **kw)                            # a_batch N×1×H×W, as Quantus's explain_func
print("a_batch", a.shape, a.dtype)

# Localisation metrics: heatlab's and Quantus's on the same a_batch. The empty class (no feature)
# has an empty mask, so both give NaN there (Quantus warns).
has_mask = s.reshape(len(s), -1).any(1)
for ours, theirs in [(hq.PointingGame(), quantus.PointingGame(disable_warnings=True, display_progressbar=False)),
                     (hq.AUC(), quantus.AUC(disable_warnings=True, display_progressbar=False))]:
    h = np.asarray(ours(model=model, x_batch=x[has_mask], y_batch=y[has_mask], a_batch=a[has_mask], s_batch=s[has_mask]))
    q = np.asarray(theirs(model=model, x_batch=x[has_mask], y_batch=y[has_mask], a_batch=a[has_mask], s_batch=s[has_mask]))
    print(f"{type(ours).__name__:14s} heatlab {h.mean():.4f}  quantus {q.mean():.4f}  max |diff| {np.abs(h - q).max():.1e}")

# heatlab's own metrics with the same signature: five-band recall against the cells' truth levels
# (0, 0.4, 0.9), and relevance mass accuracy computed from explain_func when a_batch is None.
levels = batch.truth.numpy()[:, None]
recall = hq.FiveBandRecall(stat="best")(model=model, x_batch=x, y_batch=y, a_batch=a, s_batch=levels)
mass = hq.RelevanceMassAccuracy()(model=model, x_batch=x, y_batch=y, a_batch=None, s_batch=s,
                                   explain_func=explain_func, explain_func_kwargs=kw)
print("five-band best recall per sample", np.round(recall, 3))
print("relevance mass accuracy (positive relevance) mean", round(float(np.nanmean(mass)), 4))

# A no-truth metric, with Quantus 0.6's constructor arguments: Sparseness of the same heatmaps.
ours = hq.Sparseness(disable_warnings=True)(model=model, x_batch=x, y_batch=y, a_batch=a)
theirs = quantus.Sparseness(disable_warnings=True, display_progressbar=False)(
    model=model, x_batch=x, y_batch=y, a_batch=a)
print(f"Sparseness     heatlab {np.mean(ours):.4f}  quantus {np.mean(theirs):.4f}")
