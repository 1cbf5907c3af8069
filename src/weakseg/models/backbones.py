"""Dilated torchvision backbones (ResNet-50/101, MobileNetV2/V3, VGG16) returning feature dicts.

Each backbone keeps the attribute names of its torchvision model (``conv1``, ``layer1``...,
``features``), so that a torchvision ImageNet state dict loads into it directly (after dropping the
ImageNet classifier, see :func:`load_backbone_state_dict`). Output stride 8 or 16 is obtained as in
DeepLab: the strides of the last stages are removed and their convolutions dilated instead.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import vgg

from weakseg.errors import DataError

__all__ = [
    "IMAGENET_WEIGHTS",
    "MobileNetBackbone",
    "ResNetBackbone",
    "VGG16Backbone",
    "adapt_first_conv",
    "load_backbone_state_dict",
]

# torchvision weights of each backbone for ``pretrained="imagenet"`` (enum, member).
IMAGENET_WEIGHTS: dict[str, tuple[str, str]] = {
    "resnet50": ("ResNet50_Weights", "IMAGENET1K_V1"),
    "resnet101": ("ResNet101_Weights", "IMAGENET1K_V1"),
    "mobilenet_v2": ("MobileNet_V2_Weights", "IMAGENET1K_V1"),
    "mobilenet_v3_large": ("MobileNet_V3_Large_Weights", "IMAGENET1K_V1"),
    "vgg16": ("VGG16_Weights", "IMAGENET1K_V1"),
}

# Keys of the ImageNet classifiers, which the segmentation backbones do not have.
_CLASSIFIER_PREFIXES = ("fc.", "classifier.")


def _check_output_stride(output_stride: int, allowed: tuple[int, ...], what: str) -> int:
    if output_stride not in allowed:
        raise ValueError(
            f"output_stride must be one of {', '.join(map(str, allowed))} for {what}, "
            f"got {output_stride!r}"
        )
    return int(output_stride)


def _replace_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` (untrained) that takes ``in_channels`` input channels."""
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if conv.in_channels == in_channels:
        return conv
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
    )


def adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """RGB filters ``[O, 3, k, k]`` -> ``[O, in_channels, k, k]`` with the same response to a gray
    image replicated over the channels (sum over RGB, shared equally by the new channels)."""
    if weight.shape[1] == in_channels:
        return weight
    summed = weight.sum(dim=1, keepdim=True)  # (O, 1, k, k)
    return summed.repeat(1, in_channels, 1, 1) / in_channels


def _set_dilation(conv: nn.Conv2d, dilation: int) -> None:
    if conv.kernel_size[0] > 1:
        conv.dilation = (dilation, dilation)
        conv.padding = ((conv.kernel_size[0] - 1) // 2 * dilation,) * 2


def dilate_blocks(blocks: nn.Sequential, output_stride: int) -> list[int]:
    """Remove the strides of ``blocks`` beyond ``output_stride`` and dilate instead, in place.

    A block whose stride is removed keeps the previous dilation in its (formerly) strided conv and
    doubles it for the others, as torchvision's ``replace_stride_with_dilation`` does for ResNet.

    Returns:
        The nominal output stride after each block (as if nothing were dilated), to find the
        stride-4 and stride-8 features.
    """
    stride, nominal, dilation, strides = 1, 1, 1, []
    for block in blocks:
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        downsamples = any(m.stride[0] == 2 for m in convs)
        if downsamples and stride >= output_stride:
            previous, dilation = dilation, dilation * 2
            for conv in convs:
                if conv.stride[0] == 2:
                    conv.stride = (1, 1)
                    _set_dilation(conv, previous)
                else:
                    _set_dilation(conv, dilation)
        elif downsamples:
            stride *= 2
        elif dilation > 1:
            for conv in convs:
                _set_dilation(conv, dilation)
        nominal *= 2 if downsamples else 1
        strides.append(nominal)
    return strides


class ResNetBackbone(nn.Module):
    """ResNet-50/101 body; ``forward`` returns ``{"low": [B, 256, H/4, W/4], "out": [B, 2048,
    H/s, W/s]}`` with ``s = output_stride`` (8 or 16)."""

    def __init__(self, depth: int = 50, output_stride: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        builders = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}
        if depth not in builders:
            raise ValueError(f"ResNet depth must be 50 or 101, got {depth!r}")
        output_stride = _check_output_stride(output_stride, (8, 16), f"resnet{depth}")
        net = builders[depth](
            weights=None, replace_stride_with_dilation=[False, output_stride == 8, True]
        )
        self.conv1 = _replace_first_conv(net.conv1, in_channels)
        self.bn1, self.relu, self.maxpool = net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.low_channels, self.out_channels = 256, 2048
        self.output_stride = output_stride

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)  # (B, 256, H/4, W/4)
        out = self.layer4(self.layer3(self.layer2(low)))  # (B, 2048, H/s, W/s)
        return {"low": low, "out": out}


class MobileNetBackbone(nn.Module):
    """MobileNetV2 / V3-Large ``features``; ``forward`` returns ``{"low"`` (stride 4),
    ``"mid"`` (stride 8), ``"out"`` (stride ``output_stride``)``}``."""

    def __init__(
        self, version: str = "mobilenet_v2", output_stride: int = 16, in_channels: int = 3
    ) -> None:
        super().__init__()
        builders = {
            "mobilenet_v2": torchvision.models.mobilenet_v2,
            "mobilenet_v3_large": torchvision.models.mobilenet_v3_large,
        }
        if version not in builders:
            raise ValueError(
                f"MobileNet version must be one of {', '.join(builders)}, got {version!r}"
            )
        output_stride = _check_output_stride(output_stride, (8, 16), version)
        features = builders[version](weights=None).features
        first = features[0][0]
        features[0][0] = _replace_first_conv(first, in_channels)
        strides = dilate_blocks(features, output_stride)
        self.features = features
        self.low_index = max(i for i, s in enumerate(strides) if s == 4)
        self.mid_index = max(i for i, s in enumerate(strides) if s == 8)
        self.low_channels = _out_channels(features[: self.low_index + 1])
        self.mid_channels = _out_channels(features[: self.mid_index + 1])
        self.out_channels = _out_channels(features)
        self.output_stride = output_stride

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        found = {}
        for index, block in enumerate(self.features):
            x = block(x)
            if index == self.low_index:
                found["low"] = x
            if index == self.mid_index:
                found["mid"] = x
        found["out"] = x
        return found


def _out_channels(blocks: nn.Sequential) -> int:
    convs = [m for m in blocks.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


# Indices of the VGG16 ``features`` max-poolings and of the conv5 layers.
_VGG_POOLS = (4, 9, 16, 23, 30)
_VGG_CONV5 = (24, 26, 28)


class VGG16Backbone(nn.Module):
    """VGG16 conv layers as in DeepLab-LargeFOV: output stride 8.

    pool1-3 are 3x3 stride-2 max-poolings (Caffe's ceil mode), pool4 and pool5 3x3 stride 1, and
    conv5 is dilated by 2. ``forward`` returns ``{"pool0": input, "pool1".."pool4", "out": pool5
    [B, 512, H/8, W/8]}`` (the MSc variant reads the intermediate poolings).
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        # the conv layers only: building the whole vgg16 would initialize 120 M unused weights
        features = vgg.make_layers(vgg.cfgs["D"], batch_norm=False)
        features[0] = _replace_first_conv(features[0], in_channels)
        for index in _VGG_POOLS:
            if index <= 16:
                features[index] = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
            else:
                features[index] = nn.MaxPool2d(3, stride=1, padding=1)
        for index in _VGG_CONV5:
            _set_dilation(features[index], 2)
        self.features = features
        self.out_channels = 512
        self.output_stride = 8

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        found = {"pool0": x}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _VGG_POOLS[:4]:
                found[f"pool{_VGG_POOLS.index(index) + 1}"] = x
        found["out"] = x
        return found


def load_backbone_state_dict(
    backbone: nn.Module, state: Mapping[str, Tensor], source: str = "state dict"
) -> None:
    """Load an ImageNet classification state dict into a backbone of this module.

    Classifier keys (``fc.*``, ``classifier.*``) are dropped; a first convolution trained on RGB
    is adapted (:func:`adapt_first_conv`) when the backbone takes another number of channels.
    Raises :class:`~weakseg.errors.DataError` (a ``ValueError``) naming ``source`` and the keys
    when the rest does not match exactly.
    """
    own = backbone.state_dict()
    kept = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    for key, value in kept.items():
        target = own.get(key)
        if (
            target is not None
            and value.ndim == 4
            and target.ndim == 4
            and value.shape[1] != target.shape[1]
            and value.shape[0] == target.shape[0]
            and value.shape[2:] == target.shape[2:]
        ):
            kept[key] = adapt_first_conv(value, target.shape[1])
    missing = sorted(set(own) - set(kept))
    unexpected = sorted(set(kept) - set(own))
    if missing or unexpected:
        raise DataError(
            f"{source} does not match the {type(backbone).__name__}: "
            f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    bad = [
        f"{k}: {tuple(kept[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if kept[k].shape != own[k].shape
    ]
    if bad:
        raise DataError(f"{source} has shapes that do not match the backbone: {bad[:5]}")
    with torch.no_grad():
        backbone.load_state_dict(kept, strict=True)
