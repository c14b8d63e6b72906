"""torchvision ResNet18, ResNet34, AlexNet and VGG16 with the papers' heads, built attribution-safe.

Backbones are torchvision's architectures with random weights (never downloaded) and
torchvision's parameter names, so a torchvision checkpoint you have on disk loads with
``create(name, ..., backbone_weights="resnet34-b627a593.pth")`` (head entries are ignored). They
differ from torchvision only where attribution needs it: out-of-place activations, one ReLU
module per use and ``out = out + identity`` in residual blocks (see :mod:`heatlab.models.safety`).

Heads (``head=``):
- ``"paper002"`` (default; synthetic cells, DESIGN §4.7): ResNet34 through avgpool, then a 1×1
  conv 512→C, flattened; AlexNet features+avgpool → Dropout → Linear 9216→4096 → LeakyReLU →
  Dropout → Linear 4096→4096 → LeakyReLU → Linear 4096→C; VGG16 features+avgpool → Dropout →
  Linear 25088→4096 → LeakyReLU → Dropout → Linear 4096→C.
- ``"paper000"`` (pneumonia): ResNet34 through avgpool → Linear(512, C, bias=False); AlexNet's
  torchvision classifier up to the second 4096 layer (with its ReLU) → Linear(4096, C, bias=False).
- ``"torchvision"`` (ResNet18's default; natural images): torchvision's own ``fc``, Linear(512, C)
  with bias, after avgpool; ResNet18 also takes ``"paper002"`` and ``"paper000"`` as above.

``in_channels != 3`` replaces the first convolution (same kernel, stride, padding).
``normalize="imagenet"`` (or ``{"mean": [...], "std": [...]}``, see :mod:`heatlab.models.normalize`)
applies a :class:`Normalize` first (ImageNet's mean/std is what torchvision checkpoints expect;
inputs stay in [0, 1] pixel space); it is not in the state dict and is not a layer type Captum's
LRP knows. Input sizes: ResNet18/34 ≥ 32 px, AlexNet ≥ 63 px, VGG16 ≥ 32 px
(the papers use 224 px for AlexNet/VGG).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.alexnet import AlexNet as TorchvisionAlexNet
from torchvision.models import resnet as tv_resnet
from torchvision.models import vgg as tv_vgg

from heatlab.errors import HeatlabError
from heatlab.models.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize, make_normalize  # noqa: F401 (re-exported)
from heatlab.models.safety import SafeBasicBlock, disable_inplace
from heatlab.models.zoo import ModelEntry

def _check_head(name: str, head: str, allowed: tuple[str, ...]) -> None:
    if head not in allowed:
        raise HeatlabError(f"Model '{name}' has no head {head!r}; choose one of: {', '.join(allowed)}.")


def _with_in_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """``conv`` itself when it already takes ``in_channels``, else a fresh conv like it (Kaiming init)."""
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


class ResNetClassifier(tv_resnet.ResNet):
    """torchvision ResNet with safe blocks and a paper head: (N, C_in, H, W) -> (N, num_classes).

    The head is ``fc``: a 1×1 ``Conv2d`` (paper002), a bias-free ``Linear`` (paper000) or
    torchvision's ``Linear`` with bias (torchvision).
    """

    heatlab_head_prefixes = ("fc.",)
    #: Default LRP filter points: the outputs of the four residual stages, in backward order.
    heatlab_filter_layers = ("layer4", "layer3", "layer2", "layer1")

    def __init__(self, layers: list[int], num_classes: int, in_channels: int, head: str, normalize: Normalize | None):
        super().__init__(SafeBasicBlock, layers)
        self.conv1 = _with_in_channels(self.conv1, in_channels)
        self.relu = nn.ReLU()  # the stem's activation, out of place
        width = 512 * SafeBasicBlock.expansion
        if head == "paper002":
            self.fc = nn.Conv2d(width, num_classes, 1)
        else:
            self.fc = nn.Linear(width, num_classes, bias=head == "torchvision")
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize is not None:
            x = self.normalize(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
        if isinstance(self.fc, nn.Conv2d):
            return torch.flatten(self.fc(x), 1)
        return self.fc(torch.flatten(x, 1))


class FeaturesClassifier(nn.Module):
    """torchvision's AlexNet/VGG layout: features -> avgpool -> flatten -> classifier.

    (N, C_in, H, W) -> (N, num_classes); parameter names match torchvision's ``features.*``.
    """

    def __init__(
        self,
        features: nn.Sequential,
        avgpool: nn.Module,
        classifier: nn.Sequential,
        head_prefixes: tuple[str, ...],
        normalize: Normalize | None = None,
    ):
        super().__init__()
        self.normalize = normalize
        self.features = disable_inplace(features)
        self.avgpool = avgpool
        self.classifier = disable_inplace(classifier)
        self.heatlab_head_prefixes = head_prefixes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize is not None:
            x = self.normalize(x)
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def build_resnet34(
    *, num_classes: int, in_channels: int, head: str = "paper002", normalize: str | dict | None = None
) -> nn.Module:
    """ResNet34 (21.3 M backbone parameters) with the paper002 (1×1 conv) or paper000 (Linear) head."""
    _check_head("resnet34", head, ("paper002", "paper000"))
    return ResNetClassifier([3, 4, 6, 3], num_classes, in_channels, head, make_normalize(normalize, in_channels))


def build_resnet18(
    *, num_classes: int, in_channels: int, head: str = "torchvision", normalize: str | dict | None = None
) -> nn.Module:
    """ResNet18 (11.2 M backbone parameters) with torchvision's head Linear(512, C) (default), paper002 or paper000."""
    _check_head("resnet18", head, ("torchvision", "paper002", "paper000"))
    return ResNetClassifier([2, 2, 2, 2], num_classes, in_channels, head, make_normalize(normalize, in_channels))


def build_alexnet(
    *, num_classes: int, in_channels: int, head: str = "paper002", normalize: str | dict | None = None
) -> nn.Module:
    """AlexNet with the paper002 (LeakyReLU, new classifier) or paper000 (torchvision classifier) head."""
    _check_head("alexnet", head, ("paper002", "paper000"))
    norm = make_normalize(normalize, in_channels)
    tv = TorchvisionAlexNet(num_classes=num_classes)
    features, classifier = tv.features, tv.classifier
    features[0] = _with_in_channels(features[0], in_channels)
    if head == "paper002":
        # Same layer positions as torchvision (classifier.1/.4/.6), with LeakyReLU activations.
        classifier[2], classifier[5] = nn.LeakyReLU(), nn.LeakyReLU()
        head_prefixes = ("classifier.",)
    else:
        classifier[6] = nn.Linear(4096, num_classes, bias=False)
        head_prefixes = ("classifier.6.",)
    return FeaturesClassifier(features, tv.avgpool, classifier, head_prefixes, norm)


def build_vgg16(
    *, num_classes: int, in_channels: int, head: str = "paper002", normalize: str | dict | None = None
) -> nn.Module:
    """VGG16 (no BatchNorm) with the paper002 head Dropout → 25088→4096 → LeakyReLU → Dropout → 4096→C."""
    _check_head("vgg16", head, ("paper002",))
    norm = make_normalize(normalize, in_channels)
    features = tv_vgg.make_layers(tv_vgg.cfgs["D"], batch_norm=False)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):  # torchvision VGG's initialisation (no BatchNorm, so it matters)
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    features[0] = _with_in_channels(features[0], in_channels)
    classifier = nn.Sequential(
        nn.Dropout(),
        nn.Linear(512 * 7 * 7, 4096),
        nn.LeakyReLU(),
        nn.Dropout(),
        nn.Linear(4096, num_classes),
    )
    return FeaturesClassifier(features, nn.AdaptiveAvgPool2d((7, 7)), classifier, ("classifier.",), norm)


#: This family's models (collected by :func:`heatlab.models.zoo.builtin_models`).
MODELS = (
    ModelEntry("resnet34", build_resnet34),
    ModelEntry("resnet18", build_resnet18),
    ModelEntry("alexnet", build_alexnet),
    ModelEntry("vgg16", build_vgg16),
)
