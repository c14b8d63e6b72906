"""Query-key attention models of paper 000's appendix: CXCMultiSPA, ccfFPA and drybeanFPA.

**SPA** (Spatial Product Attention) shrinks an image fast with four unpadded stride-2
``Conv → BatchNorm → ReLU`` stages (in→7 k7, 7→7 k3, 7→17 k3, 17→2·c k3), flattens the last map
to ``(N, 2c, HW)``, splits its channels into queries ``Q`` (first ``c``) and keys ``K`` (last
``c``) and returns ``softmax(Q Kᵀ / √c)`` over the last axis: an ``(N, c, c)`` map whose size
does not depend on the input's. **FPA** (Feature Product Attention) is the same for a feature
vector: ``(N, d) → (N, 1, d)``, Conv1d 1→7 k7 and 7→2·c k3 (stride 1, each with BatchNorm1d and
ReLU), then the same ``Q Kᵀ`` softmax.

Parameter counts (checked in the tests), layer by layer (conv weights + biases, BatchNorm
weight + bias; running statistics are buffers, not parameters):

- CXCMultiSPA, 1 input channel, 4 classes: SPA(1, 128) = 350 + 14 + 448 + 14 + 1,088 + 34 +
  39,424 + 512 = 41,884; ConvTranspose2d(1, 3, k3, no bias) = 27; SPA(3, 16) = 1,036 + 14 +
  448 + 14 + 1,088 + 34 + 4,928 + 64 = 7,626; Linear(256, 4) = 1,028; total **50,565**.
  (Each extra input channel adds 7·49 = 343.)
- ccfFPA (c = 7, 2 classes): 56 + 14 + 308 + 28 + Linear(49, 2) 100 = **506**.
- drybeanFPA (c = 14, 7 classes): 56 + 14 + 616 + 56 + Linear(196, 7) 1,379 = **2,121**.

The feature count ``d`` changes no parameter (``Q Kᵀ`` sums over it); it is recorded as
``num_features`` and checked on every forward pass, so a model trained on 28 features refuses
16. ``in_channels`` means nothing for the tabular FPA models and is ignored (the zoo passes it to
every builder). Every activation and softmax is its own module and nothing works in place, so
hook-based attribution methods are safe; LRP has no rule for the ``Q Kᵀ`` product.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.models.zoo import ModelEntry

#: Channels of the three stages before the query-key stage (both SPA and FPA start with 7).
SPA_WIDTHS = (7, 7, 17)
SPA_KERNELS = (7, 3, 3, 3)
FPA_WIDTH = 7
FPA_KERNELS = (7, 3)

#: Smallest image side SPA accepts: each unpadded stride-2 stage needs ``k`` pixels in and
#: gives ``(n − k) // 2 + 1`` out, so the last map is at least 1×1 from 35 pixels on.
SPA_MIN_SIZE = 35
#: Smallest feature count FPA accepts: two unpadded convolutions (k7, k3) need 7 + 3 − 1.
FPA_MIN_FEATURES = 9


def _query_key(x: Tensor, channels: int, softmax: nn.Softmax) -> Tensor:
    """(N, 2c, L) -> softmax(Q Kᵀ / √c) of shape (N, c, c), Q = first c channels, K = last c."""
    q, k = x[:, :channels], x[:, channels:]
    return softmax(q @ k.transpose(1, 2) / channels**0.5)


def _stages(conv: type[nn.Module], bn: type[nn.Module], widths: tuple[int, ...], kernels: tuple[int, ...], stride: int):
    """``Conv → BatchNorm → ReLU`` per consecutive pair in ``widths`` (unpadded), as one Sequential."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (a, b, k) in enumerate(zip(widths[:-1], widths[1:], kernels)):
        layers[f"conv{i}"] = conv(a, b, k, stride=stride)
        layers[f"bn{i}"] = bn(b)
        layers[f"relu{i}"] = nn.ReLU()  # one module per use (hook-based methods need it)
    return nn.Sequential(layers)


class SPA(nn.Module):
    """Spatial Product Attention: (N, in_channels, H, W), H, W >= 35 -> (N, out_channels, out_channels)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.out_channels = out_channels
        widths = (in_channels, *SPA_WIDTHS, 2 * out_channels)
        self.stages = _stages(nn.Conv2d, nn.BatchNorm2d, widths, SPA_KERNELS, stride=2)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        return _query_key(self.stages(x).flatten(2), self.out_channels, self.softmax)


class FPA(nn.Module):
    """Feature Product Attention: (N, d), d >= 9 -> (N, out_channels, out_channels)."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels
        widths = (1, FPA_WIDTH, 2 * out_channels)
        self.stages = _stages(nn.Conv1d, nn.BatchNorm1d, widths, FPA_KERNELS, stride=1)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        return _query_key(self.stages(x.unsqueeze(1)), self.out_channels, self.softmax)


class CXCMultiSPA(nn.Module):
    """Chest X-ray COVID classifier: (N, in_channels, H, W), H, W >= 35 -> logits (N, num_classes).

    SPA(in, 128) gives a 128×128 attention map, read as a one-channel image; a stride-2
    ConvTranspose2d (1→3, k3, no bias) and LeakyReLU(0.01) turn it into 3×257×257, SPA(3, 16)
    gives 16×16 = 256 features, and Linear(256, num_classes) classifies. Paper input: 1×256×256.
    """

    heatlab_head_prefixes = ("fc.",)

    def __init__(self, num_classes: int = 4, in_channels: int = 1):
        super().__init__()
        self.spa1 = SPA(in_channels, 128)
        self.deconv = nn.ConvTranspose2d(1, 3, 3, stride=2, bias=False)
        self.act = nn.LeakyReLU(0.01)
        self.spa2 = SPA(3, 16)
        self.fc = nn.Linear(16 * 16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or min(x.shape[-2:]) < SPA_MIN_SIZE:
            raise HeatlabError(
                f"CXCMultiSPA needs images N×C×H×W with H, W >= {SPA_MIN_SIZE}, got shape {tuple(x.shape)}; "
                "resize the images (the paper uses 256×256)."
            )
        a = self.act(self.deconv(self.spa1(x).unsqueeze(1)))
        return self.fc(torch.flatten(self.spa2(a), 1))


class FPANet(nn.Module):
    """FPA(out_channels) then Linear(out_channels², num_classes): (N, num_features) -> logits (N, num_classes).

    ccfFPA is ``FPANet(28, 2, 7)``, drybeanFPA ``FPANet(16, 7, 14)``.
    """

    heatlab_head_prefixes = ("fc.",)

    def __init__(self, num_features: int, num_classes: int, out_channels: int):
        super().__init__()
        self.num_features = num_features
        self.fpa = FPA(out_channels)
        self.fc = nn.Linear(out_channels**2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise HeatlabError(
                f"This FPA model takes N×{self.num_features} feature tables, got shape {tuple(x.shape)}; "
                f"pass {self.num_features} features per sample (or build it with num_features={x.shape[-1]})."
            )
        return self.fc(torch.flatten(self.fpa(x), 1))


def _check_features(num_features: object) -> int:
    if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < FPA_MIN_FEATURES:
        raise HeatlabError(
            f"num_features must be a whole number of at least {FPA_MIN_FEATURES} (the FPA convolutions need it), "
            f"got {num_features!r}; pass the table's feature count."
        )
    return num_features


def build_cxcmultispa(*, num_classes: int, in_channels: int) -> CXCMultiSPA:
    """Paper 000's COVID-19 radiography model (4 classes, 1×256×256 input: 50,565 parameters)."""
    return CXCMultiSPA(num_classes, in_channels)


def build_ccffpa(*, num_classes: int, in_channels: int, num_features: int = 28) -> FPANet:
    """Paper 000's credit-card fraud model (28 features V1-V28, 2 classes: 506 parameters).

    ``in_channels`` is ignored (a feature table has no channels).
    """
    return FPANet(_check_features(num_features), num_classes, 7)


def build_drybeanfpa(*, num_classes: int, in_channels: int, num_features: int = 16) -> FPANet:
    """Paper 000's dry bean model (16 features, 7 classes: 2,121 parameters); ``in_channels`` is ignored."""
    return FPANet(_check_features(num_features), num_classes, 14)


#: This family's models (collected by :func:`heatlab.models.zoo.builtin_models`).
MODELS = (
    ModelEntry("cxcmultispa", build_cxcmultispa),
    ModelEntry("ccffpa", build_ccffpa),
    ModelEntry("drybeanfpa", build_drybeanfpa),
)
