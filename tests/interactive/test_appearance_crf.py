import numpy as np

from weakseg.interactive.appearance import HistogramModels
from weakseg.interactive.appearance_crf import _overlaps


def test_overlaps_are_one_for_shared_colours_and_zero_for_disjoint_ones():
    image = np.array([[10.0, 10.0, 200.0, 200.0, 10.0, 10.0]])
    models = HistogramModels(image, sigma=4.0)
    weights = np.array([[1.0, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]])
    overlap = _overlaps(models.fit(weights), np.array([True, True, True]))
    # classes 0 and 2 share their colour (coefficient 1), class 1's is disjoint from both
    np.testing.assert_allclose(overlap, [1.0, 0.0, 1.0], atol=0.03)
    # an absent class neither has an overlap nor lends one
    overlap = _overlaps(models, np.array([True, True, False]))
    np.testing.assert_allclose(overlap, [0.0, 0.0, 0.0], atol=0.03)
