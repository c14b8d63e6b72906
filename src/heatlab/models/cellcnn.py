"""CellCNN: the small default classifier for the synthetic cell benchmark.

Five blocks ``Conv3x3 -> BatchNorm -> ReLU -> MaxPool2`` then global average pooling and one
linear layer. Global pooling makes it work for any square or rectangular input of at least
32 pixels per side (five halvings); the default cell size is 3x128x128. Every leaf module is a type
Captum's LRP has a rule for (Conv2d, BatchNorm2d, ReLU, MaxPool2d, AdaptiveAvgPool2d, Linear).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

#: Output channels of the five convolution blocks.
CELLCNN_WIDTHS = (16, 32, 64, 64, 96)


def _block(in_c: int, out_c: int) -> nn.Sequential:
    # Each block owns its ReLU so no activation module is called twice (hook-based methods
    # such as GuidedBackprop and DeepLift attach to every activation call separately).
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_c, out_c, kernel_size=3, padding=1, bias=False),
            bn=nn.BatchNorm2d(out_c),
            relu=nn.ReLU(),
            pool=nn.MaxPool2d(2),
        )
    )


class CellCNN(nn.Module):
    """Small CNN: (N, in_channels, H, W) with H, W >= 32 -> logits (N, num_classes).

    ``features.0.conv`` is the first ``Conv2d`` in module order (LayerGradCam's default layer);
    ``features.4.conv`` is the last convolution, at 1/16 of the input resolution.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths: tuple[int, ...] = CELLCNN_WIDTHS):
        super().__init__()
        chans = (in_channels, *widths)
        self.features = nn.Sequential(*(_block(a, b) for a, b in zip(chans[:-1], chans[1:])))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last makes CPU BatchNorm/MaxPool about 1.7x faster (measured); input gradients
        # still come back in the caller's (contiguous) layout.
        x = self.features(x.contiguous(memory_format=torch.channels_last))
        # torch.flatten, not an nn.Flatten module: Captum's LRP rejects unknown leaf modules.
        return self.fc(torch.flatten(self.avgpool(x), 1))
