r"""A segmentation network followed by a trainable CRF-as-RNN layer (Table 4, "end-to-end CRF").

:class:`CRFLayerModel` wraps any network of :func:`~weakseg.models.build_model`: the network's
logits, upsampled to the input size, are the unaries of :class:`~weakseg.crf.CRFasRNN`
(Zheng et al., ICCV 2015), which runs ``n_iter`` mean-field steps with learnable filter weights
and compatibility on the raw 0-255 image. The wrapper returns :math:`\log Q`, so everything
that expects logits works unchanged: ``softmax(log Q) = Q`` for evaluation and prediction, and
partial cross-entropy on it is :math:`-\log Q` at the scribbles, the loss Tang et al. train
CRF-as-RNN with for Table 4. Gradients flow through every iteration into the network and into
the CRF parameters.

The raw image comes from the caller (``weakseg train`` passes the batch's ``image_raw``, as it
does for the regularizers) or, when it is not given (evaluation, prediction, multi-scale and
flipped views), from the network input itself: the datasets normalize with
``(image_raw - mean) / std`` (:func:`~weakseg.data.transforms.normalize`), which
:func:`~weakseg.data.transforms.denormalize` inverts exactly, padding included (it is filled
with the mean).

Example:
    >>> from weakseg.crf import CRFasRNN
    >>> from weakseg.models import UNet
    >>> model = CRFLayerModel(UNet(1, 3), CRFasRNN(3, n_iter=2), mean=[127.5], std=[63.75])
    >>> log_q = model(torch.randn(2, 1, 32, 32))
    >>> log_q.exp().sum(dim=1).allclose(torch.ones(2, 32, 32))
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weakseg.crf import CRFasRNN
from weakseg.data.transforms import denormalize

__all__ = ["CRFLayerModel", "build_crf_layer_model"]


class CRFLayerModel(nn.Module):
    """``network`` followed by the trainable dense CRF layer ``crf``; returns ``log Q``.

    Args:
        network: maps a normalized image ``[B, C, H, W]`` to logits ``[B, K, h, w]``.
        crf: a :class:`~weakseg.crf.CRFasRNN` with ``num_classes = K``.
        mean, std: the normalization of the network input, 0-255 per channel (one value, or
            three for gray images: their averages are used, as the datasets do).

    Shape:
        - image: Tensor[B, C, H, W], network-normalized; image_raw: Tensor[B, C, H, W], 0-255.
        - output: Tensor[B, K, H, W], log-probabilities of the CRF output (float32).
    """

    def __init__(
        self, network: nn.Module, crf: CRFasRNN, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        if not isinstance(crf, CRFasRNN):
            raise TypeError(f"crf must be a CRFasRNN, got {type(crf).__name__}")
        self.network = network
        self.crf = crf
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if not self.mean or len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise ValueError(
                f"mean and std must be non-empty, of the same length, std > 0; got mean="
                f"{list(self.mean)}, std={list(self.std)}"
            )

    @property
    def backbone(self) -> nn.Module | None:
        """The network's backbone, if it has one (the optimizer gives it its own LR)."""
        return getattr(self.network, "backbone", None)

    def forward(self, image: Tensor, image_raw: Tensor | None = None) -> Tensor:
        """``log Q [B, K, H, W]`` of ``image [B, C, H, W]``; ``image_raw`` (0-255, the same
        size) defaults to the denormalized ``image``."""
        size = image.shape[-2:]
        if image_raw is None:
            image_raw = denormalize(image.float(), self.mean, self.std)  # (B, C, H, W)
        elif image_raw.shape[-2:] != size or image_raw.shape[0] != image.shape[0]:
            raise ValueError(
                f"image_raw must have the batch size and spatial size of image "
                f"{tuple(image.shape)}, got {tuple(image_raw.shape)}"
            )
        logits = self.network(image)  # (B, K, h, w)
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        # Mean field in float32 also under autocast: half precision would underflow its messages.
        with torch.autocast(device_type=image.device.type, enabled=False):
            q = self.crf(logits.float(), image_raw.float())  # (B, K, H, W)
            return torch.log(q.clamp_min(torch.finfo(q.dtype).tiny))

    def extra_repr(self) -> str:
        return f"mean={list(self.mean)}, std={list(self.std)}"


def build_crf_layer_model(
    network: nn.Module,
    num_classes: int,
    crf_layer: dict[str, Any],
    mean: Sequence[float],
    std: Sequence[float],
) -> CRFLayerModel:
    """``network`` wrapped with a :class:`~weakseg.crf.CRFasRNN` built from the keyword
    arguments ``crf_layer`` (the ``crf_layer`` setting of ``weakseg train``, stored in the
    checkpoint's ``model_config`` with ``mean`` and ``std``)."""
    return CRFLayerModel(network, CRFasRNN(num_classes, **crf_layer), mean=mean, std=std)
