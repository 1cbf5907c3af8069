"""Segmentation networks: :func:`build_model` by name, or the classes directly.

=================================  ==========================================  =============
name                               network                                     output stride
=================================  ==========================================  =============
``unet``                           small U-Net (gray / medical, CPU-friendly)  --
``deeplabv3plus_resnet50``         DeepLabV3+, ResNet-50                       16 (or 8)
``deeplabv3plus_resnet101``        DeepLabV3+, ResNet-101                      16 (or 8)
``deeplabv3plus_mobilenet_v2``     DeepLabV3+, MobileNetV2                     16 (or 8)
``deeplabv3plus_mobilenet_v3``     DeepLabV3+, MobileNetV3-Large               16 (or 8)
``deeplab_largefov``               DeepLab-LargeFOV, VGG16                     8
``deeplab_msc_largefov``           DeepLab-MSc-LargeFOV, VGG16                 8
``deeplabv3_resnet50`` / ``101``   torchvision DeepLabV3 head                  8 (or 16)
``deeplabv3_mobilenet_v3``         torchvision DeepLabV3 head                  16 (or 8)
``fcn_resnet50`` / ``101``         torchvision FCN head                        8 (or 16)
``lraspp_mobilenet_v3``            torchvision LR-ASPP head                    16 (or 8)
=================================  ==========================================  =============

All return logits ``[B, K, H, W]`` at the input resolution (bilinear upsampling of the head's
output). The output-stride defaults are those of the original networks (torchvision's for its
models); U-Net and LargeFOV have a fixed architecture and reject any other ``output_stride``.
:class:`CRFLayerModel` follows any of them with a trainable CRF-as-RNN layer (the
``crf_layer`` setting of ``weakseg train``).

Example:
    >>> model = build_model("unet", num_classes=4, in_channels=1)
    >>> model(torch.randn(2, 1, 64, 64)).shape
    torch.Size([2, 4, 64, 64])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from weakseg.errors import DataError, MissingFileError
from weakseg.models.backbones import (
    IMAGENET_WEIGHTS,
    MobileNetBackbone,
    ResNetBackbone,
    VGG16Backbone,
    adapt_first_conv,
    load_backbone_state_dict,
)
from weakseg.models.crf_layer import CRFLayerModel, build_crf_layer_model
from weakseg.models.deeplab import BackboneHeadNet, DeepLabLargeFOV, DeepLabV3Plus
from weakseg.models.unet import UNet
from weakseg.models.weights_file import read_weights

__all__ = [
    "MODEL_NAMES",
    "BackboneHeadNet",
    "CRFLayerModel",
    "DeepLabLargeFOV",
    "DeepLabV3Plus",
    "MobileNetBackbone",
    "ResNetBackbone",
    "UNet",
    "VGG16Backbone",
    "adapt_first_conv",
    "build_crf_layer_model",
    "build_model",
    "load_backbone_state_dict",
    "load_pretrained",
    "read_weights",
]

# name -> (backbone name for ImageNet weights or None, default output stride or None if fixed)
_MODELS: dict[str, tuple[str | None, int | None]] = {
    "unet": (None, None),
    "deeplabv3plus_resnet50": ("resnet50", 16),
    "deeplabv3plus_resnet101": ("resnet101", 16),
    "deeplabv3plus_mobilenet_v2": ("mobilenet_v2", 16),
    "deeplabv3plus_mobilenet_v3": ("mobilenet_v3_large", 16),
    "deeplab_largefov": ("vgg16", None),
    "deeplab_msc_largefov": ("vgg16", None),
    "deeplabv3_resnet50": ("resnet50", 8),
    "deeplabv3_resnet101": ("resnet101", 8),
    "deeplabv3_mobilenet_v3": ("mobilenet_v3_large", 16),
    "fcn_resnet50": ("resnet50", 8),
    "fcn_resnet101": ("resnet101", 8),
    "lraspp_mobilenet_v3": ("mobilenet_v3_large", 16),
}

MODEL_NAMES: tuple[str, ...] = tuple(_MODELS)


def _backbone(name: str, output_stride: int, in_channels: int) -> nn.Module:
    if name.startswith("resnet"):
        return ResNetBackbone(int(name[len("resnet") :]), output_stride, in_channels)
    return MobileNetBackbone(name, output_stride, in_channels)


# The architecture options a model accepts through build_model(..., options=...).
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "unet": ("base_channels", "depth", "dropout", "channels_last")
}


def _construct(
    name: str,
    num_classes: int,
    in_channels: int,
    output_stride: int | None,
    options: Mapping[str, Any],
):
    backbone_name, _ = _MODELS[name]
    if name == "unet":
        return UNet(in_channels, num_classes, **options)
    if name in ("deeplab_largefov", "deeplab_msc_largefov"):
        return DeepLabLargeFOV(num_classes, in_channels, msc=name == "deeplab_msc_largefov")
    backbone = _backbone(backbone_name, output_stride, in_channels)
    if name.startswith("deeplabv3plus_"):
        return DeepLabV3Plus(backbone, num_classes)
    return BackboneHeadNet(backbone, name.split("_", 1)[0], num_classes)


def build_model(
    name: str,
    num_classes: int,
    *,
    in_channels: int = 3,
    pretrained: str | Path | None = None,
    output_stride: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build the segmentation network ``name`` (see the module docstring for the list).

    Args:
        name: one of :data:`MODEL_NAMES`.
        num_classes: number of classes ``K`` (>= 1).
        in_channels: image channels (1 for gray); an ImageNet first convolution is adapted by
            summing its RGB filters (:func:`adapt_first_conv`).
        pretrained: ``None`` (random initialization), ``"imagenet"`` (the backbone's torchvision
            ImageNet weights, downloaded by torchvision on first use) or the path of a local file
            read with ``torch.load(weights_only=True)``: a state dict of this very model, a
            weakseg checkpoint (its ``"model"`` entry), or ImageNet classification weights of the
            backbone (see :func:`load_pretrained`).
        output_stride: 8 or 16 for the dilated-backbone models; ``None`` = the network's default.
        options: architecture keyword arguments among :data:`MODEL_OPTIONS` of ``name`` (U-Net:
            ``base_channels``, ``depth``, ``dropout``, ``channels_last``).

    Returns:
        The model (train mode); ``model(x [B, in_channels, H, W])`` gives logits ``[B, K, H, W]``.

    Raises:
        ValueError: unknown name (the message lists the known ones), bad ``num_classes``,
            ``in_channels`` or ``output_stride``.
        DataError, MissingFileError: the ``pretrained`` file (see :func:`load_pretrained`).
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    options = dict(options or {})
    allowed = MODEL_OPTIONS.get(name, ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(allowed) if allowed else "none"
        raise ValueError(f"model {name!r} has no option {unknown[0]!r}; its options: {known}")
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if int(in_channels) != in_channels or in_channels < 1:
        raise ValueError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    backbone_name, default_stride = _MODELS[name]
    if default_stride is None:
        if output_stride is not None and output_stride != _fixed_stride(name):
            raise ValueError(
                f"model {name!r} has a fixed architecture; output_stride must be None, "
                f"got {output_stride!r}"
            )
        stride = None
    else:
        stride = default_stride if output_stride is None else output_stride
        if stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16 for {name!r}, got {output_stride!r}")
    model = _construct(name, int(num_classes), int(in_channels), stride, options)
    if pretrained is not None:
        if str(pretrained) == "imagenet":
            if backbone_name is None:
                raise ValueError(
                    f"model {name!r} has no ImageNet backbone; pretrained must be None or a path"
                )
            state = _imagenet_state_dict(backbone_name)
            model.load_backbone_state_dict(state, f"torchvision {backbone_name} ImageNet weights")
        else:
            load_pretrained(model, pretrained)
    return model


def _fixed_stride(name: str) -> int | None:
    return 8 if "largefov" in name else None


def _imagenet_state_dict(backbone_name: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights of the backbone, from its cache or downloaded.

    Raises:
        MissingFileError: they are not cached and cannot be downloaded (offline, a proxy, a
            corrupt download), naming the weights, the reason and where to put them.
    """
    enum_name, member = IMAGENET_WEIGHTS[backbone_name]
    weights = getattr(getattr(torchvision.models, enum_name), member)
    try:
        return weights.get_state_dict(progress=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash a RuntimeError
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        raise MissingFileError(
            f"cannot get torchvision's ImageNet weights {enum_name}.{member} of {backbone_name} "
            f"({weights.url}): {exc}",
            hint=f"download that file into {folder} where there is internet, or set pretrained "
            "to the path of a local weights file",
        ) from None


def load_pretrained(model: nn.Module, path: str | Path) -> None:
    """Load the weights of a local file into ``model`` (in place).

    The file (read with ``torch.load(weights_only=True)``) holds a state dict, or a dict with a
    ``"model"`` entry (a weakseg / torchvision-reference checkpoint); a ``module.`` prefix
    (DistributedDataParallel) is removed. When its keys are exactly the model's, the whole model
    is loaded; otherwise it is taken as backbone weights (e.g. torchvision's ``resnet101-*.pth``)
    and loaded with ``model.load_backbone_state_dict``.

    Raises:
        MissingFileError: no such file (also a ``FileNotFoundError``).
        DataError: the file is unreadable or holds pickled objects (refused), holds no state
            dict, or one that fits neither the model nor its backbone (the message names the
            file and the first mismatching keys / shapes; also a ``ValueError``).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"pretrained weights file not found: {path}")
    state = read_weights(path, "cpu", what="pretrained weights file")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise DataError(f"pretrained file {path} does not hold a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    if set(state) == set(own):
        bad = [
            f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in state.items()
            if v.shape != own[k].shape
        ]
        if bad:
            raise DataError(
                f"pretrained file {path} has the keys of this model but other shapes "
                f"(another num_classes or in_channels?): {bad[:5]}"
            )
        model.load_state_dict(state, strict=True)
        return
    loader: Callable | None = getattr(model, "load_backbone_state_dict", None)
    if loader is None:
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        raise DataError(
            f"pretrained file {path} does not match the {type(model).__name__}: "
            f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    loader(state, f"pretrained file {path}")
