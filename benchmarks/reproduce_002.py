"""Paper 002 at paper scale: cells at 224 px (or 512), ResNet34/AlexNet/VGG16, the eight methods.

    python benchmarks/reproduce_002.py --model resnet34 --budget 60 --out runs/reproduce-resnet34
    python benchmarks/reproduce_002.py --model vgg16 --full            # the paper's split (GPU)

Runs ``heatlab data cells``, ``heatlab train`` with the paper's Table I settings for the model,
``heatlab evaluate`` with the eight methods of paper 002 (no IntegratedGradients, as in the paper)
and ``heatlab report``, each as the ``heatlab`` command a user would type. Every stage is
resumable, so a killed run picks up where it stopped when started again with the same arguments
(``--stages`` runs a subset). ``--budget MINUTES`` sizes the splits for one model on this machine:
it times a few forward+backward passes of the model first, then gives about half the budget to
training and 40% to evaluation. ``--full`` uses the paper's split (32/8/8 shards of 200) and five
branches. The end prints, per method, the five-band scores next to the paper's qualitative
findings (Saliency's recall, Deconvolution's false positives) and writes them to
``<out>/reproduction.json``.

Differences from the paper that no setting removes: the backbones start from random weights (the
paper fine-tuned ImageNet weights; heatlab never downloads), and with ``--budget`` the splits and
the branch count are smaller.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

#: Paper 002 Table I: batch, continuous epochs, regular-evaluation epochs, n_l, r_f, learning rate.
TABLE_I = {
    "resnet34": dict(batch=4, tc=2, tr=4, n_l=24, r_f=0.4, lr=1e-3),
    "alexnet": dict(batch=16, tc=16, tr=16, n_l=48, r_f=0.3, lr=1e-4),
    "vgg16": dict(batch=16, tc=4, tr=4, n_l=48, r_f=0.3, lr=1e-4),
}
METHODS = "Saliency,InputXGradient,DeepLift,GuidedBackprop,GuidedGradCam,Deconvolution,GradientShap,DeepLiftShap"
#: Forward+backward passes per sample and branch of the eight methods with heatlab's defaults
#: (DeepLiftShap and GradientShap 8 draws each, DeepLift and GuidedGradCam two).
EVAL_PASSES = 1 + 1 + 2 + 1 + 2 + 1 + 8 + 16
STAGES = ("data", "train", "evaluate", "report")
SHARD = 50  # samples per shard (5 per class); a validation step reads one shard


def throughput(model: str, size: int, batch: int) -> float:
    """Images per second of forward+backward for ``model`` at ``size`` px on this machine."""
    import torch

    from heatlab.models.zoo import create

    net = create(model, num_classes=10, in_channels=3)
    x = torch.rand(batch, 3, size, size)
    y = torch.zeros(batch, dtype=torch.long)
    loss = torch.nn.functional.cross_entropy
    loss(net(x), y).backward()  # warm-up
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 5 or n < 2:
        loss(net(x), y).backward()
        n += 1
    return n * batch / (time.perf_counter() - start)


def plan(args) -> dict:
    """Split sizes (shards of :data:`SHARD`), branches and the estimate they come from."""
    s = TABLE_I[args.model]
    if args.full:
        return {"train": 32 * 200 // SHARD, "val": 8 * 200 // SHARD, "test": 8 * 200 // SHARD, "branches": 5,
                "images_per_s": None, "budget_min": None}
    rate = throughput(args.model, args.size, s["batch"])
    # A validation step every 4 iterations reads one shard forward (about 1/3 of a training pass).
    per_train_image = s["tc"] + args.branches * s["tr"] * 0.5 * (1 + SHARD / 3 / (4 * s["batch"]))
    n_train = 0.5 * args.budget * 60 * rate / per_train_image
    n_test = 0.4 * args.budget * 60 * rate / (args.branches * EVAL_PASSES)
    return {"train": max(2, round(n_train / SHARD)), "val": 4, "test": max(2, math.ceil(n_test / SHARD)),
            "branches": args.branches, "images_per_s": round(rate, 2), "budget_min": args.budget}


def heatlab(*argv: str) -> None:
    """Run one ``heatlab`` command (the venv's, next to this interpreter); stop on failure."""
    exe = shutil.which("heatlab", path=str(Path(sys.executable).parent)) or "heatlab"
    print("$ heatlab " + " ".join(argv), flush=True)
    start = time.perf_counter()
    code = subprocess.call([exe, *argv])
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    if code:
        sys.exit(code)


def findings(run: Path) -> dict:
    """Per method and variant: mean (over samples and branches) of the avg/best five-band scores."""
    import pandas as pd

    five = pd.read_parquet(run / "tables" / "five_band.parquet")
    cols = [c for c in five.columns if c.endswith(("_avg", "_best"))]
    means = five.groupby(["variant", "method"], sort=False)[cols].mean()
    out: dict = {"accuracy": {}, "scores": {}}
    for variant in five["variant"].unique():
        m = means.loc[variant]
        out["scores"][variant] = m.round(4).to_dict(orient="index")
        rank = lambda col, high: int(m[col].rank(ascending=not high)["Deconvolution" if col.startswith("fpr") else "Saliency"])
        out.setdefault("findings", {})[variant] = {
            "saliency_recall_rank": rank("recall_avg", True),
            "deconvolution_fpr_rank": rank("fpr_avg", True),
            "methods": len(m),
        }
    info = json.loads((run / "train.json").read_text()) if (run / "train.json").exists() else {}
    out["training"] = info.get("branches", info)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(TABLE_I), default="resnet34")
    ap.add_argument("--size", type=int, default=224, help="image side (paper: 512 for ResNet, 224 otherwise)")
    ap.add_argument("--budget", type=float, default=60, help="minutes for one model on this machine")
    ap.add_argument("--branches", type=int, default=2, help="branch models with --budget (paper: 5)")
    ap.add_argument("--full", action="store_true", help="the paper's split and five branches")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    args = ap.parse_args()
    out = args.out or Path("runs") / f"reproduce-{args.model}-{args.size}"
    out.mkdir(parents=True, exist_ok=True)
    stages = [s.strip() for s in args.stages.split(",")]
    if bad := [s for s in stages if s not in STAGES]:
        ap.error(f"unknown stage {', '.join(bad)}; choose from {', '.join(STAGES)}")
    plan_path = out / "plan.json"
    if plan_path.exists():  # a resumed run keeps its sizes
        p = json.loads(plan_path.read_text())
    else:
        p = plan(args)
        plan_path.write_text(json.dumps(p, indent=2))
    print(f"plan: {p}", flush=True)
    s, data, run = TABLE_I[args.model], out / "data", out / "run"
    started = time.perf_counter()
    if "data" in stages:
        heatlab("data", "cells", "--out", str(data), "--size", str(args.size), "--seed", str(args.seed),
                "--shards", f"train={p['train']},val={p['val']},test={p['test']}", "--shard-size", str(SHARD))
    if "train" in stages:
        heatlab("train", "--data", str(data), "--out", str(run), "--model", args.model, "--epochs", str(s["tc"]),
                "--branch-epochs", str(s["tr"]), "--branches", str(p["branches"]), "--batch-size", str(s["batch"]),
                "--lr", str(s["lr"]), "--branch-lr", str(s["lr"]), "--schedule", "constant",
                "--n-l", str(s["n_l"]), "--r-f", str(s["r_f"]), "--seed", str(args.seed), "--device", args.device)
    if "evaluate" in stages:
        heatlab("evaluate", str(run), "--methods", METHODS, "--batch-size", "8")
    if "report" in stages:
        heatlab("report", str(run))
    if (run / "tables" / "five_band.parquet").exists():
        result = {"model": args.model, "size": args.size, "plan": p, **findings(run),
                  "minutes_this_call": round((time.perf_counter() - started) / 60, 1)}
        (out / "reproduction.json").write_text(json.dumps(result, indent=2))
        for variant, f in result["findings"].items():
            print(f"{variant}: Saliency recall rank {f['saliency_recall_rank']} of {f['methods']} (paper: highest "
                  f"recall); Deconvolution FPR_avg rank {f['deconvolution_fpr_rank']} of {f['methods']} "
                  "(paper: many false positives, i.e. rank 1)")
        print(f"wrote {out / 'reproduction.json'}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    main()
