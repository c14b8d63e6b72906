"""Explanation-guided soft masking (paper 003): a Mixer turns x and its IG attribution into a mask for C.

A frozen classifier C sees ``x ⊙ M`` instead of ``x``. Two encoders reduce the input (Fx) and
its attribution A(x, C) (FA); the Mixer reads their concatenation and outputs the mask M in
[0, 1] (a sigmoid), of the input's spatial shape: one channel broadcast over the input's
channels, or one per channel (``per_channel``). Only Fx, FA and the Mixer learn (Adam, cross-entropy
of C(x ⊙ M)); C stays in eval mode with ``requires_grad`` off, so its parameters and BatchNorm
statistics are bit-identical after training.

Architectures (:func:`build_mixer`):

- ``"fc"``: paper 003's Table 1 for Fashion-MNIST on the flattened input, layer for layer: Fx, FA =
  FC512-BN-ReLU-FC256 (no BN or ReLU after FC256), Mixer = FC512-BN-ReLU-FC(D), D the mask size
  (784 for 28×28), then a sigmoid (Table 1 lists no output function; M must lie in [0, 1]). The
  default (``"auto"``) for tables (``N×F``) and for single-channel images of at most 28×28 px (the
  paper's setting).
- ``"conv"``: a small fully convolutional version for images of any size (the default for
  every other image): Fx, FA = L stride-2 stages Conv3×3/2-BN-ReLU (widths w, 2w, 2w; L = 1 below 64 px,
  2 from 64, 3 from 128: :func:`conv_levels`); Mixer = Conv3×3(2w)-BN-ReLU, Conv1×1 to the mask
  channels, bilinear upsampling of the mask logits to H×W.

The attribution settings (:data:`SETTINGS`, :func:`mixer_attributions`) are what A(x, C) is taken
for: ``"true-class"`` IG for the label (the paper's setting; *label-informed*: it needs the label at
test time, and :func:`leak_scores` measures how much of its gain is that label),
``"predicted"`` IG for C's predicted class, ``"expected"`` IG of the logits weighted by C's
predicted probabilities; ``"none"`` (a control) gives FA zeros, so its gain is
what the extra network alone buys. FA reads A divided by its per-sample max |A| (IG magnitudes span orders
of magnitude between samples). The Mixer's last layer starts at M ≈ 0.95 everywhere (bias 3), so
training starts close to C's own behaviour.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.explain.attribution import attribute
from heatlab.explain.postprocess import normalize_max_abs
from heatlab.models.state import eval_mode, model_device
from heatlab.progress import Progress, report

SETTINGS = ("true-class", "predicted", "expected", "none")
#: Settings whose attribution is taken for the test label: their masks can carry the label itself.
LABEL_INFORMED = ("true-class",)
ARCHITECTURES = ("auto", "fc", "conv")
#: Paper 003's grid: batch sizes and learning rates (its "[0.001, 0.01] with step 0.02" has one
#: point inside the range; heatlab takes both ends and the middle).
GRID_BATCH_SIZES = (64, 128, 256)
GRID_LRS = (0.001, 0.0055, 0.01)
FC_WIDTHS = (512, 256)
MIXER_WIDTH = 512
#: ``"auto"`` picks the fully connected Mixer for single-channel images up to this many pixels a side.
FC_AUTO_MAX_SIDE = 28
#: Initial bias of the Mixer's last layer: sigmoid(3) ≈ 0.95, a mask close to 1.
MASK_INIT_BIAS = 3.0


def check_setting(setting: str) -> str:
    if setting not in SETTINGS:
        raise HeatlabError(f"Unknown attribution setting {setting!r}; use one of {', '.join(SETTINGS)}.")
    return setting


def parse_settings(settings: str | Sequence[str] | None) -> list[str]:
    """``None`` (all of :data:`SETTINGS`), a comma-separated string or a list -> checked settings in
    :data:`SETTINGS` order."""
    if settings is None:
        return list(SETTINGS)
    items = [s.strip() for s in settings.split(",")] if isinstance(settings, str) else list(settings)
    named = [check_setting(s) for s in items if s]
    twice = sorted({s for s in named if named.count(s) > 1})
    if twice:
        raise HeatlabError(f"Setting {', '.join(repr(s) for s in twice)} is named more than once; name each setting "
                           f"once, e.g. settings={','.join(dict.fromkeys(named))}.")
    chosen = set(named)
    if not chosen:
        raise HeatlabError(f"No attribution setting given; pass one or more of {', '.join(SETTINGS)}.")
    return [s for s in SETTINGS if s in chosen]


# ------------------------------------------------------------------------------- attributions
def mixer_attributions(
    model: nn.Module, x: Tensor, labels: Tensor, setting: str, *, n_steps: int = 32, batch_size: int = 25
) -> Tensor:
    """IG attributions A(x, C) for ``setting`` (zero baseline): same shape as ``x`` (``N×...``), on x's device.

    ``labels`` (``N``) are used only by ``"true-class"``; ``"expected"`` weights the logits by
    C's softmax probabilities at ``x`` (one IG pass, see :mod:`heatlab.explain.methods.integrated_gradients`).
    """
    return all_mixer_attributions(model, x, labels, [setting], n_steps=n_steps, batch_size=batch_size)[setting]


def all_mixer_attributions(
    model: nn.Module, x: Tensor, labels: Tensor, settings: Sequence[str], *, n_steps: int = 32, batch_size: int = 25
) -> dict[str, Tensor]:
    """{setting: A(x, C)} for several settings at once; "predicted" reuses the true-class IG of every
    sample C classifies correctly (the same target), so it costs IG only for the misclassified ones."""
    for s in settings:
        check_setting(s)
    kw = {"n_steps": n_steps, "batch_size": batch_size}
    out: dict[str, Tensor] = {}
    probs = predict_probabilities(model, x, batch_size)
    preds = probs.argmax(1).to(x.device)
    labels = labels.to(x.device)
    if "true-class" in settings:
        out["true-class"] = attribute(model, x, "IntegratedGradients", target=labels, **kw).to(x.device)
    if "predicted" in settings:
        if "true-class" in out:
            a = out["true-class"].clone()
            wrong = (preds != labels).nonzero()[:, 0]
            if len(wrong):
                a[wrong] = attribute(model, x[wrong], "IntegratedGradients", target=preds[wrong], **kw).to(x.device)
        else:
            a = attribute(model, x, "IntegratedGradients", target=preds, **kw).to(x.device)
        out["predicted"] = a
    if "expected" in settings:
        out["expected"] = attribute(model, x, "IntegratedGradients", output_weights=probs, **kw).to(x.device)
    if "none" in settings:
        out["none"] = torch.zeros_like(x)
    return out


def predict_probabilities(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """C's softmax probabilities ``N×K`` (eval mode, no grad), on the model's device."""
    device = model_device(model)
    with torch.no_grad(), eval_mode(model):
        return torch.cat([F.softmax(model(c.to(device)), 1) for c in x.split(batch_size)])


# ------------------------------------------------------------------------------ architectures
def _fc_encoder(d_in: int) -> nn.Sequential:
    """Table 1's Fx / FA: FC512-BN-ReLU-FC256 (the last FC has no BN or ReLU in the table)."""
    a, b = FC_WIDTHS
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, a), nn.BatchNorm1d(a), nn.ReLU(), nn.Linear(a, b))


def _conv_encoder(c_in: int, width: int, levels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(levels):
        out = width if i == 0 else 2 * width
        layers += [nn.Conv2d(c_in, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
        c_in = out
    return nn.Sequential(*layers)


def conv_levels(input_shape: Sequence[int]) -> int:
    """Stride-2 stages of the conv encoders: 1 up to 63 px, 2 from 64, 3 from 128 (the mask grid is 8 to 16 px
    wide or more, so a 128-px Mixer costs about a fifth of a full-resolution one)."""
    return max(1, min(3, int(math.log2(min(input_shape[1:]) / 16))))


class Mixer(nn.Module):
    """Fx, FA and the Mixer: ``forward(x, a) -> M`` with ``x``, ``a`` of one input shape (``N×C×H×W`` or
    ``N×F``) and ``M`` in [0, 1] of shape ``N×1×H×W`` (broadcast), ``N×C×H×W`` (per channel) or ``N×F``."""

    def __init__(self, input_shape: Sequence[int], *, architecture: str = "auto", per_channel: bool = False,
                 width: int = 16):
        super().__init__()
        self.input_shape = tuple(int(d) for d in input_shape)
        self.architecture = resolve_architecture(self.input_shape, architecture)
        image = len(self.input_shape) == 3
        self.mask_shape = ((self.input_shape[0] if per_channel else 1, *self.input_shape[1:]) if image
                           else self.input_shape)
        if self.architecture == "fc":
            d_in, d_out = math.prod(self.input_shape), math.prod(self.mask_shape)
            self.fx, self.fa = _fc_encoder(d_in), _fc_encoder(d_in)
            self.mix = nn.Sequential(nn.Linear(2 * FC_WIDTHS[1], MIXER_WIDTH), nn.BatchNorm1d(MIXER_WIDTH), nn.ReLU(),
                                     nn.Linear(MIXER_WIDTH, d_out))
            self.head = None
        else:
            c, self.levels = self.input_shape[0], conv_levels(self.input_shape)
            self.fx, self.fa = _conv_encoder(c, width, self.levels), _conv_encoder(c, width, self.levels)
            enc = width if self.levels == 1 else 2 * width
            self.mix = nn.Sequential(nn.Conv2d(2 * enc, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU())
            self.head = nn.Sequential(nn.Conv2d(2 * width, self.mask_shape[0], 1))
        last = self.mix[-1] if self.head is None else self.head[-1]
        nn.init.normal_(last.weight, std=1e-3)
        nn.init.constant_(last.bias, MASK_INIT_BIAS)

    def forward(self, x: Tensor, a: Tensor) -> Tensor:
        z = torch.cat([self.fx(x), self.fa(a)], 1)
        if self.head is None:
            return torch.sigmoid(self.mix(z)).view(-1, *self.mask_shape)
        z = self.head(self.mix(z))  # mask logits on the coarse grid, upsampled smoothly to H×W
        return torch.sigmoid(F.interpolate(z, size=self.input_shape[1:], mode="bilinear", align_corners=False))


def resolve_architecture(input_shape: Sequence[int], architecture: str) -> str:
    """"fc" or "conv" for ``architecture``. "auto": fc for tables F and for single-channel images of at
    most :data:`FC_AUTO_MAX_SIDE` px a side (paper 003's Fashion-MNIST setting), conv for other images."""
    if architecture not in ARCHITECTURES:
        raise HeatlabError(f"Unknown Mixer architecture {architecture!r}; use one of {', '.join(ARCHITECTURES)}.")
    if len(input_shape) not in (1, 3):
        raise HeatlabError(f"The Mixer takes images C×H×W or tables F, got per-sample shape {tuple(input_shape)}.")
    if architecture == "auto":
        small_grey = len(input_shape) == 3 and input_shape[0] == 1 and max(input_shape[1:]) <= FC_AUTO_MAX_SIDE
        return "fc" if len(input_shape) == 1 or small_grey else "conv"
    if architecture == "conv" and len(input_shape) != 3:
        raise HeatlabError(f"The convolutional Mixer needs images C×H×W, got table rows of shape "
                           f"{tuple(input_shape)}; pass architecture='fc'.")
    if architecture == "conv" and min(input_shape[1:]) < 2:
        raise HeatlabError(f"The convolutional Mixer needs images of at least 2×2 pixels, got "
                           f"{tuple(input_shape)}; pass architecture='fc'.")
    return architecture


class MaskedClassifier(nn.Module):
    """``forward(x, a) = C(x ⊙ Mixer(x, a/max|a|))`` with C frozen: logits ``N×K``.

    ``train()`` switches only the Mixer; C stays in eval mode, so its BatchNorm statistics never move.
    """

    def __init__(self, classifier: nn.Module, mixer: Mixer):
        super().__init__()
        self.classifier, self.mixer = classifier, mixer
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.classifier.eval()

    def train(self, mode: bool = True) -> "MaskedClassifier":
        self.training = mode
        self.mixer.train(mode)
        self.classifier.eval()
        return self

    def mask(self, x: Tensor, a: Tensor) -> Tensor:
        return self.mixer(x, normalize_max_abs(a))

    def forward(self, x: Tensor, a: Tensor) -> Tensor:
        return self.classifier(x * self.mask(x, a))


# ----------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class MixerConfig:
    """Training settings. ``holdout``: share of the training samples held out for early stopping
    (paper: 0.3; at most 0.5); training stops after ``patience`` epochs without a lower hold-out loss, or after
    ``epochs``; the epoch of the lowest hold-out loss is kept. ``grid`` tries :data:`GRID_BATCH_SIZES`
    × :data:`GRID_LRS` and keeps the pair with the best hold-out accuracy (ties: lower loss)."""

    architecture: str = "auto"
    per_channel: bool = False
    width: int = 16
    epochs: int = 30
    patience: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    holdout: float = 0.3
    grid: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("width", 1), ("epochs", 1), ("patience", 1), ("batch_size", 2), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise HeatlabError(f"{name} must be a whole number of at least {low}, got {v!r}; pass e.g. {name}={max(low, 3)}.")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr <= 1:
            raise HeatlabError(f"lr must be a learning rate in (0, 1], got {self.lr!r}; pass e.g. lr=0.001.")
        if isinstance(self.holdout, bool) or not isinstance(self.holdout, (int, float)) or not 0 < self.holdout <= 0.5:
            raise HeatlabError(f"holdout must be a share in (0, 0.5], so the Mixer is fit on at least as many samples "
                               f"as it holds out, got {self.holdout!r}; pass e.g. holdout=0.3.")
        if self.architecture not in ARCHITECTURES:
            raise HeatlabError(f"Unknown Mixer architecture {self.architecture!r}; pass architecture= one of "
                               f"{', '.join(ARCHITECTURES)}.")

    def candidates(self) -> list[tuple[int, float]]:
        """(batch size, learning rate) pairs to train: the grid, or the single setting."""
        return [(b, lr) for b in GRID_BATCH_SIZES for lr in GRID_LRS] if self.grid else [(self.batch_size, self.lr)]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MixerResult:
    """A trained Mixer and how it got there: ``history`` rows ``{batch_size, lr, epoch, loss, holdout_loss,
    holdout_accuracy}``; the best epoch is the one of the lowest hold-out loss."""

    mixer: Mixer
    batch_size: int
    lr: float
    best_epoch: int
    holdout_accuracy: float
    holdout_loss: float
    history: list[dict] = field(default_factory=list)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def holdout_split(n: int, share: float, seed: int) -> tuple[Tensor, Tensor]:
    """(fit indices, hold-out indices) of ``range(n)``: a seeded permutation, ``round(share·n)`` held out (≥ 1)."""
    if n < 4:
        raise HeatlabError(f"The Mixer needs at least 4 training samples to hold some out, got {n}; use more data.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = min(n - 2, max(1, round(share * n)))
    return order[k:].sort().values, order[:k].sort().values


def masked_logits(net: MaskedClassifier, x: Tensor, a: Tensor, batch_size: int = 256) -> Tensor:
    """Logits (CPU float32 ``N×K``) of C(x ⊙ M) in eval mode (inputs moved to C's device batch by batch)."""
    device = model_device(net.classifier)
    out = []
    with torch.no_grad(), eval_mode(net):
        for lo in range(0, len(x), batch_size):
            xb, ab = x[lo:lo + batch_size].to(device).float(), a[lo:lo + batch_size].to(device).float()
            out.append(net(xb, ab).float().cpu())
    return torch.cat(out)


def masked_predictions(net: MaskedClassifier, x: Tensor, a: Tensor, batch_size: int = 256) -> Tensor:
    """Predicted classes (CPU int64 ``N``) of C(x ⊙ M)."""
    return masked_logits(net, x, a, batch_size).argmax(1)


def masked_accuracy(net: MaskedClassifier, x: Tensor, a: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """Accuracy of C(x ⊙ M) on (x, a, y)."""
    return float((masked_predictions(net, x, a, batch_size) == y.cpu()).double().mean())


def masks(net: MaskedClassifier, x: Tensor, a: Tensor, batch_size: int = 256) -> Tensor:
    """The masks M of (x, a) in eval mode, on the CPU."""
    device = model_device(net.classifier)
    with torch.no_grad(), eval_mode(net):
        return torch.cat([net.mask(x[lo:lo + batch_size].to(device).float(), a[lo:lo + batch_size].to(device).float()).cpu()
                          for lo in range(0, len(x), batch_size)])


def train_mixer(
    classifier: nn.Module, x: Tensor, a: Tensor, y: Tensor, config: MixerConfig = MixerConfig(), *,
    progress: Progress | None = None, task: str = "mixer",
) -> MixerResult:
    """Train Fx, FA and the Mixer for the frozen ``classifier`` on inputs ``x``, attributions ``a`` (both
    ``N×...``, any float dtype, CPU is fine) and labels ``y`` (``N``); returns the best Mixer.

    ``config.holdout`` of the samples are held out (seeded by ``config.seed``) for early stopping
    and the grid choice. The classifier is used in eval mode and never changed (its parameters,
    buffers and ``requires_grad`` flags are as before when this returns, also after an error).
    """
    if not (len(x) == len(a) == len(y)) or x.shape != a.shape:
        raise HeatlabError(f"Inputs {tuple(x.shape)}, attributions {tuple(a.shape)} and labels {tuple(y.shape)} "
                           "must hold the same samples, with attributions shaped like the inputs.")
    device = model_device(classifier)
    fit, hold = holdout_split(len(y), config.holdout, config.seed)
    flags = [(p, p.requires_grad) for p in classifier.parameters()]
    best: MixerResult | None = None
    history: list[dict] = []
    candidates = config.candidates()
    try:
        with eval_mode(classifier):
            for i, (batch_size, lr) in enumerate(candidates):
                result = _train_one(classifier, x, a, y, fit, hold, config, batch_size, lr, device,
                                    lambda e: report(progress, task, i * config.epochs + e, len(candidates) * config.epochs))
                history += result.history
                if best is None or (result.holdout_accuracy, -result.holdout_loss) > (best.holdout_accuracy, -best.holdout_loss):
                    best = result
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    report(progress, task, len(candidates) * config.epochs, len(candidates) * config.epochs)
    best.history = history
    return best


def _train_one(classifier, x, a, y, fit, hold, config: MixerConfig, batch_size: int, lr: float, device, tick) -> MixerResult:
    with _seeded(config.seed):
        mixer = Mixer(tuple(x.shape[1:]), architecture=config.architecture, per_channel=config.per_channel,
                      width=config.width).to(device)
    net = MaskedClassifier(classifier, mixer)
    opt = torch.optim.Adam(mixer.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(config.seed + 1)
    best_loss, best_acc, best_epoch, best_state, stale = math.inf, 0.0, 0, None, 0
    history = []
    for epoch in range(1, config.epochs + 1):
        net.train()
        order = fit[torch.randperm(len(fit), generator=gen)]
        total, count = 0.0, 0
        for lo in range(0, len(order), batch_size):
            idx = order[lo:lo + batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on one sample
                continue
            xb, ab, yb = x[idx].to(device).float(), a[idx].to(device).float(), y[idx].to(device)
            loss = F.cross_entropy(net(xb, ab), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        logits = masked_logits(net, x[hold], a[hold])
        hold_loss = float(F.cross_entropy(logits, y[hold].cpu()))
        acc = float((logits.argmax(1) == y[hold].cpu()).double().mean())
        history.append({"batch_size": batch_size, "lr": lr, "epoch": epoch, "loss": total / max(count, 1),
                        "holdout_loss": hold_loss, "holdout_accuracy": acc})
        tick(epoch)
        # The hold-out loss decides (its accuracy barely moves when C already fits the training data).
        if hold_loss < best_loss:
            best_loss, best_acc, best_epoch, stale = hold_loss, acc, epoch, 0
            best_state = copy.deepcopy(mixer.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                break
    mixer.load_state_dict(best_state)
    return MixerResult(mixer.eval(), batch_size, lr, best_epoch, best_acc, best_loss, history)


# --------------------------------------------------------------------------------- label leak
def random_wrong_labels(labels: Tensor, n_classes: int, seed: int) -> Tensor:
    """One seeded wrong label per sample (CPU int64 ``N``), uniform over the ``n_classes − 1`` others."""
    if n_classes < 2:
        raise HeatlabError(f"A wrong label needs at least 2 classes, got n_classes={n_classes}; pass the number of classes.")
    shift = torch.randint(1, n_classes, (len(labels),), generator=torch.Generator().manual_seed(seed))
    return (labels.cpu().long() + shift) % n_classes


def leak_scores(predictions: Tensor, labels: Tensor, wrong: Tensor) -> dict[str, float]:
    """The leak test of a label-informed Mixer fed the attribution of ``wrong`` labels instead of the true ones.

    predictions: C(x ⊙ M) of that run (``N``); returns ``leak_accuracy`` (share equal to the true
    ``labels``) and ``leak_wrong_share`` (share equal to the ``wrong`` label fed). A Mixer whose mask
    ignored which label the attribution was taken for would predict the fed label about as often as
    C(x) does; one that passes the label through predicts it every time.
    """
    p, y, w = predictions.cpu(), labels.cpu(), wrong.cpu()
    if not (p.shape == y.shape == w.shape) or p.dim() != 1 or not len(p):
        raise HeatlabError(f"predictions {tuple(p.shape)}, labels {tuple(y.shape)} and wrong {tuple(w.shape)} must be "
                           "one label per sample for the same samples.")
    if bool((w == y).any()):
        raise HeatlabError("Some 'wrong' labels equal the true labels; draw them with random_wrong_labels().")
    return {"leak_accuracy": float((p == y).double().mean()), "leak_wrong_share": float((p == w).double().mean())}


def setting_label(setting: str) -> str:
    """How a setting is named wherever it is shown: label-informed settings say so."""
    return f"{setting} (label-informed)" if setting in LABEL_INFORMED else setting
