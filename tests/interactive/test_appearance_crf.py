import inspect

import numpy as np
import pytest

from weakseg.errors import DataError
from weakseg.interactive.appearance import HistogramModels
from weakseg.interactive.appearance_crf import (
    InteractiveSegmenter,
    _overlaps,
    segment_image,
)
from weakseg.interactive.distance import BlockedDistances, blocked_distances


def test_overlaps_are_one_for_shared_colours_and_zero_for_disjoint_ones():
    image = np.array([[10.0, 10.0, 200.0, 200.0, 10.0, 10.0]])
    models = HistogramModels(image, sigma=4.0)
    weights = np.array([[1.0, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]])
    overlap = _overlaps(models.fit(weights).density, np.array([True, True, True]))
    # classes 0 and 2 share their colour (coefficient 1), class 1's is disjoint from both
    np.testing.assert_allclose(overlap, [1.0, 0.0, 1.0], atol=0.03)
    # an absent class neither has an overlap nor lends one
    overlap = _overlaps(models.density, np.array([True, True, False]))
    np.testing.assert_allclose(overlap, [0.0, 0.0, 0.0], atol=0.03)


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image [3, 40, 60], truth [40, 60], scribbles [40, 60])``: a dark background with a
    bright disc and a mid-gray bar (classes 1 and 2), noise, one short stroke per class."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:40, :60]
    truth = np.zeros((40, 60), np.int64)
    truth[(rows - 20) ** 2 + (cols - 15) ** 2 < 81] = 1
    truth[5:35, 40:48] = 2
    colours = np.array([[40.0, 50, 60], [210, 190, 60], [120, 130, 200]])
    image = colours[truth].transpose(2, 0, 1) + rng.normal(0, 12, (3, 40, 60))
    scribbles = np.full((40, 60), 255, np.int64)
    scribbles[2, 2:20], scribbles[20, 12:18], scribbles[10:20, 44] = 0, 1, 2
    return np.clip(image, 0, 255).astype(np.float32), truth, scribbles


def _more(scribbles: np.ndarray) -> np.ndarray:
    """One more stroke per class, one of them over the gap between the disc and the bar."""
    out = scribbles.copy()
    out[30:38, 28], out[18:23, 14], out[25:32, 42] = 0, 1, 2
    return out


def test_interactive_segmenter_defaults_are_segment_image_defaults():
    ours = inspect.signature(InteractiveSegmenter).parameters
    theirs = inspect.signature(segment_image).parameters
    shared = set(ours) & set(theirs)
    assert shared >= {"sigma_xy", "weight", "n_outer", "hist_sigma", "ignore_index"}
    for name in shared - {"image"}:
        assert ours[name].default == theirs[name].default, name


@pytest.mark.parametrize("coarse_pixels", [25_000, 300])  # one grid, and a coarse one (3x)
def test_first_call_equals_segment_image(coarse_pixels):
    image, _, scribbles = _scene()
    expected = segment_image(image, scribbles, coarse_pixels=coarse_pixels, return_probs=True)
    segmenter = InteractiveSegmenter(image, coarse_pixels=coarse_pixels)
    np.testing.assert_array_equal(segmenter.segment(scribbles, return_probs=True), expected)
    labels = segmenter.segment(scribbles)  # again: the cached lattices change nothing
    np.testing.assert_array_equal(
        labels, segment_image(image, scribbles, coarse_pixels=coarse_pixels)
    )


def test_refine_equals_the_update_with_everything_recomputed(monkeypatch):
    """The incremental parts of refine (distance maps, the scribbles' colour counts) give
    the result of recomputing them. The distances are equal to the bit; the colour counts are
    float32 sums when fitted and float64 when updated, so the class overlaps agree to ~1e-7
    and Q to 1e-5."""
    image, _, scribbles = _scene()
    segmenter = InteractiveSegmenter(image, coarse_pixels=300)
    segmenter.segment(scribbles)
    incremental = segmenter.refine(_more(scribbles), return_probs=True)

    def recompute(self, labels):
        self.__init__(
            labels,
            self.num_classes,
            spacing=self.spacing,
            ignore_index=self.ignore_index,
            max_sweeps=self.max_sweeps,
        )

    fitted = InteractiveSegmenter._scribble_terms
    monkeypatch.setattr(BlockedDistances, "update", recompute)
    monkeypatch.setattr(
        InteractiveSegmenter, "_scribble_terms", lambda self, s, k, last=None: fitted(self, s, k)
    )
    segmenter = InteractiveSegmenter(image, coarse_pixels=300)
    segmenter.segment(scribbles)
    recomputed = segmenter.refine(_more(scribbles), return_probs=True)
    np.testing.assert_allclose(incremental, recomputed, atol=1e-5)
    np.testing.assert_array_equal(incremental.argmax(axis=0), recomputed.argmax(axis=0))


def test_refine_corrects_the_region_of_a_stroke():
    """A class-0 stroke on a region the first call gave to class 1 (a bright patch inside the
    dark half, with no class-0 scribble of its colour): the refine gives the patch to class 0.
    Without releasing the old labels near the stroke, the patch stays class 1 (measured: 4%
    of it corrected; with the release, all of it)."""
    rng = np.random.default_rng(1)
    image = np.full((3, 40, 80), 40.0) + rng.normal(0, 8, (3, 40, 80))
    image[:, :, 40:] = 200 + rng.normal(0, 8, (3, 40, 40))
    image[:, 14:26, 14:26] = 200 + rng.normal(0, 8, (3, 12, 12))  # bright, yet background
    image = np.clip(image, 0, 255).astype(np.float32)
    scribbles = np.full((40, 80), 255, np.int64)
    scribbles[5:35, 4], scribbles[5:35, 70] = 0, 1
    segmenter = InteractiveSegmenter(image)
    first = segmenter.segment(scribbles)
    assert (first[14:26, 14:26] == 1).mean() > 0.9  # the colour gave the patch to class 1
    scribbles[20, 17:23] = 0
    refined = segmenter.refine(scribbles)
    assert (refined[14:26, 14:26] == 0).mean() > 0.9
    assert (refined[:, 44:] == 1).mean() > 0.95 and (refined[:, :12] == 0).mean() > 0.95


def test_refine_accepts_erased_strokes():
    image, _, scribbles = _scene()
    segmenter = InteractiveSegmenter(image)
    segmenter.segment(_more(scribbles))
    refined = segmenter.refine(scribbles)  # the second round's strokes erased again
    assert refined.shape == scribbles.shape
    np.testing.assert_array_equal(refined[scribbles != 255], scribbles[scribbles != 255])


@pytest.mark.parametrize(
    ("scribbles", "match"),
    [
        (np.full((40, 61), 255), r"scribbles of shape \(40, 61\) do not match image"),
        ("class 3", "holds class id 3, beyond num_classes=3"),
        ("one class", "hold only class 0"),
    ],
)
def test_refine_reports_bad_scribbles(scribbles, match):
    image, _, first = _scene()
    segmenter = InteractiveSegmenter(image)
    segmenter.segment(first)
    if isinstance(scribbles, str) and scribbles == "class 3":
        scribbles = first.copy()
        scribbles[0, 0] = 3
    elif isinstance(scribbles, str):
        scribbles = np.where(first == 0, 0, 255)
    with pytest.raises(DataError, match=match):
        segmenter.refine(scribbles)


def test_refine_before_segment_is_an_error():
    image, _, scribbles = _scene()
    with pytest.raises(DataError, match="refine needs an earlier result"):
        InteractiveSegmenter(image).refine(scribbles)


@pytest.mark.parametrize(
    ("shape", "spacing"), [((30,), None), ((9, 11), None), ((9, 11), (1.5, 0.7)), ((4, 5, 6), None)]
)
def test_blocked_distances_update_equals_recomputation(shape, spacing):
    """Strokes added, erased and relabeled, three classes: the updated maps are those of a
    recomputation, to the bit (both are the shortest path lengths)."""
    rng = np.random.default_rng(len(shape))
    labels = np.where(rng.random(shape) < 0.1, rng.integers(0, 3, shape), 255)
    maps = BlockedDistances(labels, 3, spacing=spacing, max_sweeps=100)
    for _ in range(5):
        edit = rng.random(shape) < 0.08
        values = np.where(rng.random(shape) < 0.3, 255, rng.integers(0, 3, shape))
        labels = np.where(edit, values, labels)
        maps.update(labels)
        expected = blocked_distances(labels, 3, spacing=spacing, max_sweeps=100)
        np.testing.assert_array_equal(maps.values(), expected)
    np.testing.assert_array_equal(maps.labels(), labels)


def test_blocked_distances_update_checks_the_shape():
    maps = BlockedDistances(np.full((4, 5), 255), 2)
    with pytest.raises(ValueError, match=r"labels of shape \(5, 4\), expected \(4, 5\)"):
        maps.update(np.full((5, 4), 255))


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_colour_counts_added_per_pixel_equal_fit(channels):
    """``add_pixels`` blurs each pixel's stamp in: the densities of ``fit`` with one-hot
    weights, to float32 rounding (fit sums in float32)."""
    rng = np.random.default_rng(channels)
    image = rng.uniform(0, 255, (channels, 300))
    models = HistogramModels(image, sigma=4.0)
    classes = rng.integers(0, 3, 300)
    expected = models.fit(np.eye(3)[classes].T).density
    smoothed = np.zeros_like(expected)
    models.add_pixels(smoothed, np.arange(300), classes, 1.0)
    models.add_pixels(smoothed, np.arange(0, 300, 7), classes[::7], -1.0)
    models.add_pixels(smoothed, np.arange(0, 300, 7), classes[::7], 1.0)
    np.testing.assert_allclose(models.densities(smoothed), expected, rtol=1e-5)
