"""The MNIST networks of paper 004 (S1, S2, AL1, AL2), layer by layer as in DESIGN §4.7.

=================  =====  ===========  =======================================================
zoo name           input  parameters   paper name
=================  =====  ===========  =======================================================
``smallnet``       28     270,578      S1, "SmallNet"
``smallnet140``    140    273,381      S2 (images enlarged to 140×140 by the data pipeline)
``alexnetlike``    28     2,664,138    AL1, "AlexNet-like"
``alexnetlike140`` 140    2,874,810    AL2
=================  =====  ===========  =======================================================

(parameter counts for ``num_classes=10, in_channels=1``; the tests check them exactly.)

**SmallNet**: ``block1`` … ``block6``, each ``conv`` (3×3, padding 1, with bias) → ``bn``
(BatchNorm2d) → ``act`` (LeakyReLU 0.01), channels in→24→48→64→48→24→24 (S2: the sixth block
ends 24→1); then ``head1``: a conv whose kernel covers the whole image (28×28, S2 140×140, no
padding) 24→K (S2 1→K), and ``head2``, ``head3``: 1×1 convs K→K; each head block is also
``conv → bn → act``, the last one included (that is what the text says, and the BatchNorm after
the last 1×1 conv is needed for the exact count; the LeakyReLU carries no parameters). The 1×1
output map is flattened into ``N×K`` logits with ``torch.flatten`` (no module).

**AlexNet-like** (28 px): ``block1`` conv 1→96 k5 p2 → act → pool (MaxPool 2); ``block2``
96→256 k4 p1 → act → pool; ``block3`` 256→384 k3; ``block4`` 384→384 k2; ``block5`` 384→256 k2 →
act → pool (convs with bias, no BatchNorm, each followed by LeakyReLU 0.01); spatial sizes
28→14→6→4→3→1. Then ``head1`` 1×1 256→512 → act, ``head2`` 1×1 512→512 → act, ``head3`` 1×1
512→K without activation (the logits). **AL2** (140 px): ``block1`` 1→96 k5 p0 → act → pool;
``block2`` 96→256 k4 p0 → act → pool; ``block3`` 256→96 k3; ``block4`` 96→48 k15; ``block5``
48→96 k14 → act → pool (136→68→65→32→30→16→3→1); heads 96→512→512→K as in AL1. The text does not
name activations for AL2 or between the 1×1 convs; heatlab uses one LeakyReLU after every conv
but the last (activations have no parameters, so the counts do not decide this).

Module names are readable (``block3.conv``, ``head1.bn``, ...) because the LRP code picks layers by
name. Every model class has ``heatlab_filter_layers``: the modules at whose *output* paper 004's
code (``relprop_drivethru0003``) filters the relevance on its way down, i.e. after it has passed
the head and then each conv block down to block 3: SmallNet at the outputs of blocks 6, 5, 4, 3, 2,
AlexNet-like at blocks 5, 4, 3, 2 (never between blocks 2 and 1, never at a head layer or the
logits), listed in backward order. ``heatlab_lrp_maxpool = "average"``: LRP passes relevance
through max-pooling as the original did, as through an average pool (see
:mod:`heatlab.explain.methods.lrp`). Every activation is its own module (none is reused, none works in
place), so the models pass :func:`heatlab.models.safety.check_attribution_safe`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from heatlab.errors import HeatlabError
from heatlab.models.zoo import ModelEntry

__all__ = [
    "SmallNet",
    "AlexNetLike",
    "LEAKY_SLOPE",
    "SMALLNET_WIDTHS",
    "build_smallnet",
    "build_smallnet140",
    "build_alexnetlike",
    "build_alexnetlike140",
]

LEAKY_SLOPE = 0.01
#: Output channels of SmallNet's six 3×3 blocks (S2 replaces the last 24 by 1).
SMALLNET_WIDTHS = (24, 48, 64, 48, 24, 24)


def _conv_block(
    in_c: int, out_c: int, kernel: int, *, padding: int = 0, bn: bool = False, act: bool = True, pool: bool = False
) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict(conv=nn.Conv2d(in_c, out_c, kernel, padding=padding))
    if bn:
        layers["bn"] = nn.BatchNorm2d(out_c)
    if act:
        layers["act"] = nn.LeakyReLU(LEAKY_SLOPE)
    if pool:
        layers["pool"] = nn.MaxPool2d(2)
    return nn.Sequential(layers)


class _MnistNet(nn.Module):
    """Shared forward: blocks in order, then the 1×1 map flattened into ``N×K`` logits."""

    #: State-dict prefixes of the classifier head (skipped by ``backbone_weights``).
    heatlab_head_prefixes = ("head1.", "head2.", "head3.")
    heatlab_filter_layers: tuple[str, ...] = ()
    #: LRP's default max-pooling rule for these nets (paper 004's ``MaxPool2d_LRP``).
    heatlab_lrp_maxpool = "average"

    def __init__(self, image_size: int):
        super().__init__()
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise HeatlabError(
                f"{type(self).__name__} expects images N×C×{self.image_size}×{self.image_size}, got "
                f"{tuple(x.shape)}; open the data with size={self.image_size}."
            )
        for block in self.children():
            x = block(x)
        # torch.flatten, not an nn.Flatten module: LRP rule maps reject unknown leaf modules.
        return torch.flatten(x, 1)

    @property
    def filter_layers(self) -> list[str]:
        """Module names after which paper 004's filters act (backward order), as a new list."""
        return list(self.heatlab_filter_layers)


class SmallNet(_MnistNet):
    """Paper 004's SmallNet (S1 at ``image_size=28``; S2 with ``last_width=1`` at 140)."""

    heatlab_filter_layers = ("block6", "block5", "block4", "block3", "block2")

    def __init__(self, num_classes: int = 10, in_channels: int = 1, *, image_size: int = 28, last_width: int = 24):
        super().__init__(image_size)
        chans = (in_channels, *SMALLNET_WIDTHS[:-1], last_width)
        for i, (a, b) in enumerate(zip(chans[:-1], chans[1:]), start=1):
            self.add_module(f"block{i}", _conv_block(a, b, 3, padding=1, bn=True))
        self.head1 = _conv_block(last_width, num_classes, image_size, bn=True)
        self.head2 = _conv_block(num_classes, num_classes, 1, bn=True)
        self.head3 = _conv_block(num_classes, num_classes, 1, bn=True)


class AlexNetLike(_MnistNet):
    """Paper 004's AlexNet-like nets: AL1 (``variant="28"``) and AL2 (``variant="140"``)."""

    heatlab_filter_layers = ("block5", "block4", "block3", "block2")

    def __init__(self, num_classes: int = 10, in_channels: int = 1, *, variant: str = "28"):
        if variant == "28":
            super().__init__(28)
            self.block1 = _conv_block(in_channels, 96, 5, padding=2, pool=True)
            self.block2 = _conv_block(96, 256, 4, padding=1, pool=True)
            self.block3 = _conv_block(256, 384, 3)
            self.block4 = _conv_block(384, 384, 2)
            self.block5 = _conv_block(384, 256, 2, pool=True)
            width = 256
        elif variant == "140":
            super().__init__(140)
            self.block1 = _conv_block(in_channels, 96, 5, pool=True)
            self.block2 = _conv_block(96, 256, 4, pool=True)
            self.block3 = _conv_block(256, 96, 3)
            self.block4 = _conv_block(96, 48, 15)
            self.block5 = _conv_block(48, 96, 14, pool=True)
            width = 96
        else:
            raise HeatlabError(f"Unknown AlexNet-like variant {variant!r}; use '28' (AL1) or '140' (AL2).")
        self.head1 = _conv_block(width, 512, 1)
        self.head2 = _conv_block(512, 512, 1)
        self.head3 = _conv_block(512, num_classes, 1, act=False)


def _check_size(image_size: object) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise HeatlabError(f"image_size must be a whole number of pixels ≥ 1, got {image_size!r}; pass e.g. image_size=28.")
    return image_size


def build_smallnet(*, num_classes: int, in_channels: int, image_size: int = 28) -> SmallNet:
    """S1: SmallNet for ``image_size`` px inputs (28 in the paper; the first head conv covers the image)."""
    return SmallNet(num_classes, in_channels, image_size=_check_size(image_size))


def build_smallnet140(*, num_classes: int, in_channels: int) -> SmallNet:
    """S2: SmallNet for 140 px inputs, sixth block 24→1 and a 140×140 head conv 1→K."""
    return SmallNet(num_classes, in_channels, image_size=140, last_width=1)


def build_alexnetlike(*, num_classes: int, in_channels: int) -> AlexNetLike:
    """AL1: the AlexNet-like net for 28 px inputs."""
    return AlexNetLike(num_classes, in_channels, variant="28")


def build_alexnetlike140(*, num_classes: int, in_channels: int) -> AlexNetLike:
    """AL2: the AlexNet-like net for 140 px inputs."""
    return AlexNetLike(num_classes, in_channels, variant="140")


#: This family's models (collected by :func:`heatlab.models.zoo.builtin_models`).
MODELS = (
    ModelEntry("smallnet", build_smallnet),
    ModelEntry("smallnet140", build_smallnet140),
    ModelEntry("alexnetlike", build_alexnetlike),
    ModelEntry("alexnetlike140", build_alexnetlike140),
)
