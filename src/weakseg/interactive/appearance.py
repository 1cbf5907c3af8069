r"""Per-class colour / intensity models: smoothed histograms (Parzen densities on a grid).

Class :math:`k`'s model is the density of the intensities of the pixels given to it, weighted
by :math:`w_{kp}` (the scribbles, or the soft segmentation of an outer iteration):

.. math::
    p_k(I) \propto \epsilon + \sum_p w_{kp}\, (G_\sigma * \delta_{b(I_p)})(b(I)),

with :math:`b(\cdot)` the bin of an intensity on a regular grid over 0-255 and
:math:`G_\sigma` a Gaussian over the bins, normalized to sum 1 over the bins. This is the
non-parametric data term of the kernel-cut papers (a Parzen density) rather than GrabCut's
5-component GMM: fitting is one weighted bincount and a separable blur, evaluation one lookup
per pixel, whatever the number of classes, and it is multimodal by nature. Any number of
channels: 64 bins per channel up to 3 channels, fewer beyond (at most 2^18 bins in all).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["HistogramModels", "bins_per_channel"]

_MAX_BINS = 1 << 18
# Pseudo-count spread over all bins: a colour never seen in a class keeps a finite cost.
_FLOOR = 1e-3


def bins_per_channel(channels: int) -> int:
    """Histogram bins along each of ``channels`` intensity axes (64 for up to 3, fewer beyond)."""
    return max(2, min(64, round(_MAX_BINS ** (1.0 / channels))))


def _blur_axis(hist: np.ndarray, axis: int, kernel: np.ndarray) -> np.ndarray:
    """Convolve ``hist`` along ``axis`` with the odd ``kernel`` (zero padding), by shifted
    views of the padded array (no copies per tap)."""
    radius = len(kernel) // 2
    padded = np.pad(hist, [(radius, radius) if a == axis else (0, 0) for a in range(hist.ndim)])
    length = hist.shape[axis]
    before = (slice(None),) * axis
    out = kernel[0] * padded[(*before, slice(0, length))]
    for i in range(1, len(kernel)):
        out += kernel[i] * padded[(*before, slice(i, i + length))]
    return out


@njit(cache=True)
def _add_stamps(hist, pixel_bins, classes, weight, bins, channels, kernel):  # pragma: no cover
    """Add ``weight`` times the smoothing kernel's ``(2r+1)^C`` stamp (cut at the grid's
    edge) at the flat bin ``pixel_bins[i]`` of row ``classes[i]`` of ``hist [K, bins**C]``."""
    radius = kernel.shape[0] // 2
    width = kernel.shape[0]
    centre = np.empty(channels, np.int64)
    offset = np.empty(channels, np.int64)
    for i in range(pixel_bins.shape[0]):
        rest = pixel_bins[i]
        for c in range(channels - 1, -1, -1):
            centre[c] = rest % bins
            rest //= bins
        offset[:] = 0
        while True:  # every combination of offsets, the last channel's fastest
            flat = 0
            value = weight
            inside = True
            for c in range(channels):
                b = centre[c] + offset[c] - radius
                if b < 0 or b >= bins:
                    inside = False
                    break
                flat = flat * bins + b
                value *= kernel[offset[c]]
            if inside:
                hist[classes[i], flat] += value
            c = channels - 1
            while c >= 0 and offset[c] == width - 1:
                offset[c] = 0
                c -= 1
            if c < 0:
                break
            offset[c] += 1


class HistogramModels:
    """One smoothed intensity histogram per class over a shared bin grid.

    Args:
        image: float ``[C, N]`` intensities in 0-255 (values outside are clipped).
        sigma: smoothing of the histograms, in intensity units (converted to bins).

    The bin of every pixel is computed once; :meth:`fit` and :meth:`log_likelihood` reuse it.

    Example:
        >>> image = np.array([[10.0, 12.0, 200.0, 210.0]])
        >>> models = HistogramModels(image)
        >>> weights = np.array([[1.0, 1, 0, 0], [0, 0, 1, 1]])
        >>> log_p = models.fit(weights).log_likelihood()
        >>> (log_p.argmax(axis=0) == [0, 0, 1, 1]).all()
        np.True_
    """

    def __init__(self, image: np.ndarray, *, sigma: float = 6.0, bins: int | None = None) -> None:
        channels = image.shape[0]
        self.bins = bins_per_channel(channels) if bins is None else bins
        self.channels = channels
        width = 256.0 / self.bins
        index = np.clip((image / width).astype(np.int64), 0, self.bins - 1)  # (C, N)
        flat = np.zeros(image.shape[1], np.int64)
        for c in range(channels):
            flat = flat * self.bins + index[c]
        self.pixel_bins = flat  # (N,) flat bin of every pixel
        sigma_bins = max(sigma / width, 1e-3)
        radius = max(1, math.ceil(2.5 * sigma_bins))
        offsets = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 * (offsets / sigma_bins) ** 2)
        self.kernel = (kernel / kernel.sum()).astype(np.float32)
        self.log_density: np.ndarray | None = None  # (K, bins**C) once fitted
        self.density: np.ndarray | None = None  # its exp, float64 (K, bins**C)
        self.smoothed: np.ndarray | None = None  # the blurred weight sums, (K, bins**C)

    def fit(self, weights: np.ndarray) -> HistogramModels:
        """Fit every class's histogram to the pixel weights ``[K, N]`` (>= 0); returns self."""
        size = self.bins**self.channels
        hist = np.stack(
            [np.bincount(self.pixel_bins, weights=w, minlength=size) for w in weights]
        ).astype(np.float32)  # float32 blur: half the memory traffic of the 64^3 bins
        hist = hist.reshape(len(weights), *(self.bins,) * self.channels)
        for axis in range(self.channels):  # all classes at once (axis 0 is the class)
            hist = _blur_axis(hist, 1 + axis, self.kernel)
        self.smoothed = hist.reshape(len(weights), size)
        self.density = self.densities(self.smoothed)
        self.log_density = np.log(self.density)
        return self

    @staticmethod
    def densities(smoothed: np.ndarray) -> np.ndarray:
        """Blurred weight sums ``[K, bins**C]`` -> densities (float64, rows sum to 1, with the
        pseudo-count; uniform for an empty row)."""
        size = smoothed.shape[1]
        total = smoothed.sum(axis=1, keepdims=True)
        uniform = np.full((1, size), 1.0 / size)
        densities = np.where(total > 0, smoothed / np.where(total > 0, total, 1.0), uniform)
        densities = densities.astype(np.float64) + _FLOOR / size
        return densities / densities.sum(axis=1, keepdims=True)

    def add_pixels(
        self, smoothed: np.ndarray, pixels: np.ndarray, classes: np.ndarray, weight: float
    ) -> None:
        """Add ``weight`` for each pixel ``pixels [M]`` (indices) to row ``classes [M]`` of the
        blurred weight sums ``smoothed [K, bins**C]`` (float64, in place): what :meth:`fit`
        would blur in, for a few pixels without blurring the whole grid."""
        _add_stamps(
            smoothed,
            self.pixel_bins[pixels],
            classes.astype(np.int64),
            float(weight),
            self.bins,
            self.channels,
            self.kernel.astype(np.float64),
        )

    def log_likelihood(self) -> np.ndarray:
        """``log p_k(I_p)`` for every class and pixel: float32 ``[K, N]``."""
        if self.log_density is None:
            raise RuntimeError("HistogramModels.fit must be called first")
        return self.log_density[:, self.pixel_bins].astype(np.float32)
