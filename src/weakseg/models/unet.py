"""A small U-Net (Ronneberger et al. 2015) for gray or multi-channel images on CPU or GPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UNet"]


class _DoubleConv(nn.Sequential):
    """(conv 3x3 -> BatchNorm -> LeakyReLU) x 2, same size."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.01, inplace=True),
        )


class UNet(nn.Module):
    """U-Net with ``depth`` poolings and ``base_channels * 2**i`` channels at level ``i``.

    The default (16-32-64-128-256 channels, ~1.8 M parameters) is the U-Net of the WSL4MIS
    scribble baselines on ACDC; it trains at 128-256 px on a CPU. Any input size works: the
    input is zero-padded (bottom/right) to a multiple of ``2**depth`` and the output cropped
    back, so the logits always have the input's size.

    Args:
        in_channels: image channels (1 for gray MRI, 3 for RGB).
        num_classes: number of classes ``K``.
        base_channels: channels of the first level.
        depth: number of 2x poolings (>= 1).
        dropout: Dropout2d probability inside each block of the two deepest levels.
        channels_last: keep the weights and activations in the channels-last memory format
            (NHWC). Same results up to rounding; on CPU a training step at 160-224 px takes
            about 0.7x the time (``benchmarks/train_step.py``). The logits are returned
            contiguous (NCHW).

    Shape:
        ``Tensor[B, in_channels, H, W]`` -> logits ``Tensor[B, K, H, W]``.

    Example:
        >>> net = UNet(1, 4)
        >>> net(torch.randn(2, 1, 50, 70)).shape
        torch.Size([2, 4, 50, 70])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        base_channels: int = 16,
        depth: int = 4,
        dropout: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if base_channels < 1:
            raise ValueError(f"base_channels must be >= 1, got {base_channels}")
        self.depth = depth
        widths = [base_channels * 2**i for i in range(depth + 1)]
        drops = [dropout if i >= depth - 1 else 0.0 for i in range(depth + 1)]
        self.encoder = nn.ModuleList()
        previous = in_channels
        for width, drop in zip(widths, drops, strict=True):
            self.encoder.append(_DoubleConv(previous, width, drop))
            previous = width
        self.reduce = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(depth)):
            self.reduce.append(nn.Conv2d(widths[level + 1], widths[level], 1))
            self.decoder.append(_DoubleConv(2 * widths[level], widths[level], 0.0))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, H, W]`` -> logits ``[B, K, H, W]``."""
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # zero = the mean of a normalized image
        if self.channels_last:  # both the input and the weights, or the convolutions use NCHW
            x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        for level, block in enumerate(self.encoder):
            if level > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for reduce, block in zip(self.reduce, self.decoder, strict=True):
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([skip, reduce(x)], dim=1))
        logits = self.classifier(x)[..., :height, :width]
        return logits.contiguous() if self.channels_last else logits

    def extra_repr(self) -> str:
        return f"depth={self.depth}, channels_last={self.channels_last}"
