"""Segmentation backbones, chosen by name: the paper's U-Net and MONAI's DynUNet.

All backbones expose ``encoder_stages`` (an nn.ModuleList of the encoder blocks, shallow to
deep) and ``bottleneck`` (the deepest block), so that feature-statistics methods (MixStyle, DSU)
can wrap them by position without knowing the class.
"""
from __future__ import annotations

import torch
from torch import nn

from dgbench.registry import register_backbone


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding="same", padding_mode="reflect", bias=False),
        nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class PaperUNet(nn.Module):
    """The MaskGen/anatomix segmentation U-Net (Diaz et al. 2026).

    Stem conv; `levels` encoder levels of two conv-BN-ReLU blocks then max-pool (widths
    width·2^i); a bottleneck of two blocks at width·2^levels; mirrored decoder with nearest
    upsampling and (skip, upsampled) concatenation; a bias-free 3³ head. Reflect padding, no
    conv biases. Patch sides must be multiples of 2^levels and keep >= 2 voxels at the bottleneck.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 20, levels: int = 5):
        super().__init__()
        self.levels = levels
        self.stem = conv_block(in_channels, width)
        widths = [width * 2 ** i for i in range(levels)]
        self.encoder_stages = nn.ModuleList()
        cin = width
        for w in widths:
            self.encoder_stages.append(nn.Sequential(conv_block(cin, w), conv_block(w, w)))
            cin = w
        self.pool = nn.MaxPool3d(2)
        self.bottleneck = nn.Sequential(conv_block(cin, cin * 2), conv_block(cin * 2, cin * 2))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.decoder_stages = nn.ModuleList()
        below = cin * 2
        for w in reversed(widths):
            self.decoder_stages.append(nn.Sequential(conv_block(w + below, w), conv_block(w, w)))
            below = w
        self.head = nn.Conv3d(width, out_channels, 3, padding="same", padding_mode="reflect", bias=False)

    @staticmethod
    def patch_rule(levels: int = 5, **_) -> tuple[int, int]:
        """(multiple, smallest side) of the patches this U-Net can take."""
        return 2 ** levels, 2 ** (levels + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = 2 ** self.levels
        if any(s % step or s // step < 2 for s in x.shape[2:]):
            raise ValueError(f"PaperUNet(levels={self.levels}) needs spatial sizes that are multiples of "
                             f"{step} and at least {2 * step}; got {tuple(x.shape[2:])}")
        x = self.stem(x)
        skips = []
        for stage in self.encoder_stages:
            x = stage(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for stage in self.decoder_stages:
            x = stage(torch.cat([skips.pop(), self.up(x)], dim=1))
        return self.head(x)


class DynUNetBackbone(nn.Module):
    """MONAI DynUNet (nnU-Net-like) with `levels` resolution levels."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 32, levels: int = 5,
                 max_width: int = 320):
        super().__init__()
        from monai.networks.nets import DynUNet
        filters = [min(width * 2 ** i, max_width) for i in range(levels)]
        self.net = DynUNet(3, in_channels, out_channels, kernel_size=[3] * levels,
                           strides=[1] + [2] * (levels - 1), upsample_kernel_size=[2] * (levels - 1),
                           filters=filters, norm_name="instance", res_block=True)
        self.encoder_stages = nn.ModuleList([self.net.input_block, *self.net.downsamples])

    @staticmethod
    def patch_rule(levels: int = 5, **_) -> tuple[int, int]:
        """(multiple, smallest side): levels - 1 stride-2 downsamplings."""
        return 2 ** (levels - 1), 2 ** (levels - 1)

    @property
    def bottleneck(self) -> nn.Module:     # a property: no second name for it in the state_dict
        return self.net.bottleneck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


register_backbone("unet")(PaperUNet)
register_backbone("dynunet")(DynUNetBackbone)


def build_backbone(name: str, in_channels: int, out_channels: int, **kwargs) -> nn.Module:
    from dgbench.registry import BACKBONES
    return BACKBONES.get(name)(in_channels, out_channels, **kwargs)
