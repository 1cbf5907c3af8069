"""DeepLab-family segmentation networks on the backbones of :mod:`weakseg.models.backbones`.

- :class:`DeepLabV3Plus` (Chen et al. 2018): ASPP on the deepest features plus a decoder that
  fuses the stride-4 features; the network of the rloss PyTorch code.
- :class:`DeepLabLargeFOV` (Chen et al. 2015, DeepLab v1/v2): VGG16, fc6 dilated 12, output
  stride 8, optionally with the multi-scale (MSc) heads; the Caffe networks of the paper's tables.
- :class:`BackboneHeadNet`: a backbone plus one of torchvision's heads (DeepLabV3, FCN, LR-ASPP).

Every model returns logits ``[B, K, H, W]`` bilinearly upsampled to the input size and has a
``backbone`` attribute (the part that ImageNet weights initialize) and a
``load_backbone_state_dict(state)`` method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.models.segmentation.lraspp import LRASPPHead

from weakseg.models.backbones import VGG16Backbone, load_backbone_state_dict

__all__ = [
    "BackboneHeadNet",
    "DeepLabLargeFOV",
    "DeepLabV3Plus",
    "aspp_rates",
    "deeplabv3_head",
]


def aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """ASPP dilation rates of DeepLabV3: (6, 12, 18) at output stride 16, doubled at 8."""
    return (6, 12, 18) if output_stride == 16 else (12, 24, 36)


def _upsample(logits: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class _BackboneMixin:
    backbone: nn.Module

    def load_backbone_state_dict(self, state: Mapping[str, Tensor], source: str = "") -> None:
        """Load ImageNet classification weights (e.g. a torchvision state dict) into the
        backbone; see :func:`weakseg.models.backbones.load_backbone_state_dict`."""
        load_backbone_state_dict(self.backbone, state, source or "state dict")


def deeplabv3_head(in_channels: int, num_classes: int, output_stride: int) -> nn.Sequential:
    """torchvision's ``DeepLabHead`` (ASPP, 3x3 conv 256, BN, ReLU, 1x1 conv K) with the ASPP
    rates of ``output_stride``."""
    return nn.Sequential(
        ASPP(in_channels, aspp_rates(output_stride)),
        nn.Conv2d(256, 256, 3, padding=1, bias=False),
        nn.BatchNorm2d(256),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, num_classes, 1),
    )


class DeepLabV3Plus(_BackboneMixin, nn.Module):
    """DeepLabV3+: ASPP on ``backbone(x)["out"]``, decoder with ``backbone(x)["low"]``.

    Args:
        backbone: a module returning ``{"low": [B, low_channels, H/4, W/4], "out": [B,
            out_channels, H/s, W/s]}`` with attributes ``low_channels``, ``out_channels`` and
            ``output_stride`` (see :mod:`weakseg.models.backbones`).
        num_classes: number of classes ``K``.

    Shape:
        ``Tensor[B, C, H, W]`` -> logits ``Tensor[B, K, H, W]``. In training mode ASPP's image
        pooling branch has BatchNorm on ``[B, 256, 1, 1]``, so batches need B >= 2.
    """

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.aspp = ASPP(backbone.out_channels, aspp_rates(backbone.output_stride))
        self.project = nn.Sequential(
            nn.Conv2d(backbone.low_channels, 48, 1, bias=False),
            nn.BatchNorm2d(48),
            nn.ReLU(inplace=True),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(256 + 48, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(256, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, H, W]`` -> logits ``[B, K, H, W]``."""
        features = self.backbone(x)
        low = self.project(features["low"])  # (B, 48, H/4, W/4)
        high = _upsample(self.aspp(features["out"]), low.shape[-2:])  # (B, 256, H/4, W/4)
        logits = self.classifier(self.decoder(torch.cat([high, low], dim=1)))
        return _upsample(logits, x.shape[-2:])


class BackboneHeadNet(_BackboneMixin, nn.Module):
    """A backbone and a torchvision head: DeepLabV3 (``head="deeplabv3"``), FCN (``"fcn"``) or
    LR-ASPP (``"lraspp"``, on ``{"low": mid, "high": out}`` features of a MobileNet).

    Shape:
        ``Tensor[B, C, H, W]`` -> logits ``Tensor[B, K, H, W]``.
    """

    HEADS: tuple[str, ...] = ("deeplabv3", "fcn", "lraspp")

    def __init__(self, backbone: nn.Module, head: str, num_classes: int) -> None:
        super().__init__()
        if head not in self.HEADS:
            raise ValueError(f"head must be one of {', '.join(self.HEADS)}, got {head!r}")
        self.backbone = backbone
        self.head_name = head
        if head == "deeplabv3":
            self.head = deeplabv3_head(backbone.out_channels, num_classes, backbone.output_stride)
        elif head == "fcn":
            self.head = FCNHead(backbone.out_channels, num_classes)
        else:
            if not hasattr(backbone, "mid_channels"):
                raise ValueError("the lraspp head needs a MobileNet backbone (stride-8 features)")
            self.head = LRASPPHead(backbone.mid_channels, backbone.out_channels, num_classes, 128)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, H, W]`` -> logits ``[B, K, H, W]``."""
        features = self.backbone(x)
        if self.head_name == "lraspp":
            logits = self.head({"low": features["mid"], "high": features["out"]})
        else:
            logits = self.head(features["out"])
        return _upsample(logits, x.shape[-2:])

    def extra_repr(self) -> str:
        return f"head={self.head_name!r}"


class DeepLabLargeFOV(_BackboneMixin, nn.Module):
    """DeepLab-LargeFOV (VGG16, output stride 8) and, with ``msc=True``, DeepLab-MSc-LargeFOV.

    After VGG16's conv layers (:class:`VGG16Backbone`): a 3x3 average pooling (``pool5a`` of
    the DeepLab v2 prototxt), fc6 = 3x3 conv with 1024 channels and dilation 12, fc7 = 1x1 conv
    1024 (each with ReLU and dropout 0.5) and fc8 = 1x1 conv K. MSc adds, on the input and on
    pool1-pool4, a two-layer MLP (3x3 conv 128 strided to output stride 8, 1x1 conv 128, ReLU and
    dropout 0.5 each) whose outputs are concatenated with fc7 before fc8 (DeepLab v1, sec. 4.2).

    ImageNet initialization (:meth:`load_backbone_state_dict` with a torchvision VGG16 state dict)
    also sets fc6 and fc7 from VGG16's fully connected layers decimated as in DeepLab (every 4th
    filter, every 3rd spatial tap).

    Shape:
        ``Tensor[B, C, H, W]`` -> logits ``Tensor[B, K, H, W]``.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, msc: bool = False) -> None:
        super().__init__()
        self.backbone = VGG16Backbone(in_channels)
        self.msc = msc
        self.pool5a = nn.AvgPool2d(3, stride=1, padding=1)
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=12, dilation=12)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.dropout = nn.Dropout2d(0.5)
        branch_inputs = [in_channels, 64, 128, 256, 512]  # input, pool1..pool4
        strides = [8, 4, 2, 1, 1]
        self.msc_branches = (
            nn.ModuleList(
                nn.Sequential(
                    nn.Conv2d(channels, 128, 3, stride=stride, padding=1),
                    nn.ReLU(inplace=True),
                    nn.Dropout2d(0.5),
                    nn.Conv2d(128, 128, 1),
                    nn.ReLU(inplace=True),
                    nn.Dropout2d(0.5),
                )
                for channels, stride in zip(branch_inputs, strides, strict=True)
            )
            if msc
            else nn.ModuleList()
        )
        self.fc8 = nn.Conv2d(1024 + 128 * len(self.msc_branches), num_classes, 1)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, H, W]`` -> logits ``[B, K, H, W]``."""
        features = self.backbone(x)
        out = self.pool5a(features["out"])  # (B, 512, H/8, W/8)
        out = self.dropout(F.relu(self.fc6(out)))
        out = self.dropout(F.relu(self.fc7(out)))  # (B, 1024, H/8, W/8)
        if self.msc:
            size = out.shape[-2:]
            parts = [out]
            for index, branch in enumerate(self.msc_branches):
                part = branch(features[f"pool{index}"])
                if part.shape[-2:] != size:  # ceil-mode pooling vs strided conv: off by one px
                    part = _upsample(part, size)
                parts.append(part)
            out = torch.cat(parts, dim=1)  # (B, 1024 + 5 * 128, H/8, W/8)
        return _upsample(self.fc8(out), x.shape[-2:])

    def load_backbone_state_dict(self, state: Mapping[str, Tensor], source: str = "") -> None:
        source = source or "state dict"
        load_backbone_state_dict(self.backbone, state, source)
        fc6, fc7 = state.get("classifier.0.weight"), state.get("classifier.3.weight")
        if fc6 is None or fc7 is None or fc6.shape != (4096, 512 * 7 * 7):
            return  # conv layers only; fc6 / fc7 keep their random initialization
        with torch.no_grad():
            self.fc6.weight.copy_(fc6.view(4096, 512, 7, 7)[::4, :, ::3, ::3])
            self.fc6.bias.copy_(state["classifier.0.bias"][::4])
            self.fc7.weight.copy_(fc7[::4, ::4, None, None])
            self.fc7.bias.copy_(state["classifier.3.bias"][::4])

    def extra_repr(self) -> str:
        return f"msc={self.msc}"
