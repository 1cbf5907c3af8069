import pytest
import torch

import weakseg
from weakseg.segment import segment_image


def _two_regions(channels=1, size=(20, 20)):
    image = torch.zeros(channels, *size)
    image[:, :, size[1] // 2 :] = 200.0
    scribbles = torch.full(size, 255)
    scribbles[5, 2] = 0
    scribbles[14, size[1] - 3] = 1
    return image, scribbles


@pytest.mark.parametrize("loss", ["dense_crf", "normalized_cut", "kernel_cut"])
@pytest.mark.parametrize("channels", [1, 3])
def test_two_regions_recovered(loss, channels):
    image, scribbles = _two_regions(channels)
    labels = segment_image(image, scribbles, loss=loss, sigma_xy=10.0, backend="exact")
    assert labels.shape == (20, 20) and labels.dtype == torch.int64
    expected = torch.zeros(20, 20, dtype=torch.int64)
    expected[:, 10:] = 1
    assert float((labels == expected).float().mean()) >= 0.95


def test_three_classes_probs_and_scribbles_kept():
    image = torch.zeros(3, 12, 18)
    image[:, :, 6:12] = 120.0
    image[:, :, 12:] = 240.0
    scribbles = torch.full((12, 18), 255)
    scribbles[6, 1], scribbles[6, 8], scribbles[6, 16] = 0, 1, 2
    probs = segment_image(image, scribbles, sigma_xy=8.0, return_probs=True)
    assert probs.shape == (3, 12, 18)
    torch.testing.assert_close(probs.sum(0), torch.ones(12, 18))
    labels = segment_image(image, scribbles, sigma_xy=8.0, weight=0.0, n_steps=5)
    assert int(labels[6, 8]) == 1 and int(labels[6, 16]) == 2
    assert weakseg.segment_image is segment_image


def test_downscaled_optimisation_returns_full_size():
    image, scribbles = _two_regions(size=(30, 40))
    scribbles[10:20, 2], scribbles[10:20, 37] = 0, 1  # 1-pixel-wide strokes survive downscaling
    labels = segment_image(image, scribbles, sigma_xy=10.0, scale_factor=0.25)
    assert labels.shape == (30, 40)
    assert float((labels[:, :20] == 0).float().mean()) > 0.9
    assert float((labels[:, 20:] == 1).float().mean()) > 0.9


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"image": torch.zeros(20, 20)}, ValueError, r"image must have shape \[C, H, W\]"),
        ({"image": torch.zeros(1, 20, 20, dtype=torch.uint8)}, TypeError, "image must be a "),
        ({"scribbles": torch.zeros(20, 20)}, TypeError, "scribbles must be an integer tensor"),
        ({"scribbles": torch.zeros(20, 19, dtype=torch.long)}, ValueError, "scribbles must have"),
        ({"scribbles": torch.full((20, 20), 255)}, ValueError, "scribbles has no labeled pixel"),
        ({"loss": "grabcut"}, ValueError, "loss must be one of"),
        ({"backend": "cpp"}, ValueError, "backend must be one of"),
        ({"weight": -1.0}, ValueError, "weight must be a finite number >= 0"),
        ({"sigma_xy": 0.0}, ValueError, "sigma_xy must be a finite number > 0"),
        ({"n_steps": -3}, ValueError, "n_steps must be an int >= 0"),
        ({"num_classes": 1}, ValueError, "class id 1 but num_classes is 1"),
        ({"scale_factor": 0.0}, ValueError, "scale_factor must be a finite number > 0"),
    ],
)
def test_errors(change, error, match):
    image, scribbles = _two_regions()
    args = {"image": image, "scribbles": scribbles}
    args.update({k: change.pop(k) for k in list(change) if k in args})
    with pytest.raises(error, match=match):
        segment_image(args["image"], args["scribbles"], **change)
