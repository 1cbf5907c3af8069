"""weakseg.viz.render: colours, panel resizing and the signed gradient map."""

from __future__ import annotations

import numpy as np

from weakseg.viz.render import (
    CLASS_COLOURS,
    NEGATIVE,
    POSITIVE,
    fit_size,
    gradient_rgb,
    image_rgb,
    label_rgb,
    panel,
    probability_rgb,
    scribble_rgb,
    soft_label_rgb,
)


def test_class_colours_distinct_for_voc() -> None:
    assert CLASS_COLOURS.shape == (256, 3) and CLASS_COLOURS.dtype == np.uint8
    assert CLASS_COLOURS[:4].tolist() == [[0, 0, 0], [245, 130, 40], [50, 200, 80], [60, 110, 245]]
    assert len(np.unique(CLASS_COLOURS[:21], axis=0)) == 21  # PASCAL VOC's 21 classes


def test_fit_size_keeps_aspect_ratio() -> None:
    assert fit_size(100, 50, 256) == (128, 256)
    assert fit_size(30, 60, 120) == (120, 60)
    assert fit_size(1, 1000, 100) == (100, 1)


def test_panel_nearest_when_enlarging_box_when_shrinking() -> None:
    rgb = np.array([[[0, 0, 0], [200, 100, 50]], [[10, 20, 30], [90, 90, 90]]], dtype=np.uint8)
    large = np.asarray(panel(rgb, (4, 6)))  # (width, height)
    assert large.shape == (6, 4, 3)
    np.testing.assert_array_equal(large[:3, :2], np.broadcast_to(rgb[0, 0], (3, 2, 3)))
    np.testing.assert_array_equal(large[3:, 2:], np.broadcast_to(rgb[1, 1], (3, 2, 3)))
    small = np.asarray(panel(np.repeat(rgb, 2, axis=1), (2, 1)))  # [2, 4] -> [1, 2]: means
    np.testing.assert_array_equal(small[0, 0], [5, 10, 15])
    np.testing.assert_array_equal(small[0, 1], [145, 95, 70])


def test_gradient_rgb_signs_and_scale() -> None:
    gradient = np.array([[-2.0, -1.0, 0.0, 1.0, 2.0]])
    rgb = gradient_rgb(gradient)
    np.testing.assert_array_equal(rgb[0, 2], [0, 0, 0])
    np.testing.assert_array_equal(rgb[0, 4], np.rint(POSITIVE))  # |g| at the 99th percentile
    np.testing.assert_array_equal(rgb[0, 0], np.rint(NEGATIVE))
    np.testing.assert_array_equal(
        rgb[0, 1], np.rint(NEGATIVE * 1 / np.percentile([2, 1, 0, 1, 2], 99))
    )
    assert gradient_rgb(np.zeros((3, 3))).max() == 0  # no push: black, no division by zero


def test_label_soft_label_probability_image_and_scribble_colours() -> None:
    label = np.array([[0, 1], [2, 3]])
    outline = np.array([[False, True], [False, False]])
    assert label_rgb(label, outline)[0, 1].tolist() == [255, 255, 255]
    assert label_rgb(label)[1, 1].tolist() == CLASS_COLOURS[3].tolist()
    probs = np.zeros((2, 1, 2))
    probs[:, 0, 0] = [0.5, 0.5]
    probs[1, 0, 1] = 1.0
    soft = soft_label_rgb(probs)
    assert soft[0, 0].tolist() == np.rint(CLASS_COLOURS[:2].mean(axis=0)).tolist()
    assert soft[0, 1].tolist() == CLASS_COLOURS[1].tolist()
    assert probability_rgb(np.array([[0.0, 1.0]])).tolist() == [[[0, 0, 0], [255, 255, 255]]]
    gray = np.full((1, 2, 2), 100.0, dtype=np.float32)
    assert image_rgb(gray).shape == (2, 2, 3) and image_rgb(gray)[0, 0].tolist() == [100] * 3
    scribbles = np.array([[255, 2], [255, 255]], dtype=np.uint8)
    drawn = scribble_rgb(image_rgb(gray), scribbles)
    assert drawn[0, 1].tolist() == CLASS_COLOURS[2].tolist()
    assert drawn[0, 0].tolist() == [int(0.35 * 100 + 0.65 * 255)] * 3  # faded towards white
