import inspect

import pytest
import torch

from weakseg.interactive.logit_field import (
    SEGMENT_LOSSES,
    nearest_scribble_labels,
)
from weakseg.interactive.logit_field import (
    logit_field_segmentation as segment_image,
)


def _two_regions(channels=1, size=(20, 20)):
    image = torch.zeros(channels, *size)
    image[:, :, size[1] // 2 :] = 200.0
    scribbles = torch.full(size, 255)
    scribbles[5, 2] = 0
    scribbles[14, size[1] - 3] = 1
    return image, scribbles


@pytest.mark.parametrize("loss", SEGMENT_LOSSES)
@pytest.mark.parametrize("channels", [1, 3])
def test_two_regions_recovered(loss, channels):
    image, scribbles = _two_regions(channels)
    labels = segment_image(image, scribbles, loss=loss, backend="exact")
    assert labels.shape == (20, 20) and labels.dtype == torch.int64
    expected = torch.zeros(20, 20, dtype=torch.int64)
    expected[:, 10:] = 1
    assert float((labels == expected).float().mean()) >= 0.95


def test_defaults_are_the_tuned_ones():
    # Tuned on ACDC training slices (see the module docstring and scripts/segment_acdc.py):
    # change them only together with a new measurement.
    defaults = {name: p.default for name, p in inspect.signature(segment_image).parameters.items()}
    expected = {
        "loss": "dense_crf",
        "weight": 1.0,
        "gamma": 1.0,
        "sigma_rgb": 15.0,
        "sigma_xy": 3.0,
        "n_steps": 100,
        "lr": 2.0,
        "init": "uniform",
    }
    assert {name: defaults[name] for name in expected} == expected


def test_far_lookalike_region_stays_with_its_nearest_scribble():
    # A bright object scribbled as class 1 and a bright lookalike far away that no scribble
    # touches: a wide affinity (the old sigma_xy=100) pulls the lookalike to class 1 by
    # intensity alone (it does here at sigma_xy=20 or 100); the local default leaves it to the
    # surrounding background.
    image = torch.full((1, 20, 48), 40.0)
    image[:, 7:13, 4:10] = 220.0  # scribbled object
    image[:, 7:13, 38:44] = 220.0  # lookalike, 28 px away
    scribbles = torch.full((20, 48), 255)
    scribbles[9:11, 6:8] = 1
    scribbles[2, 2:46] = 0
    scribbles[17, 2:46] = 0
    labels = segment_image(image, scribbles, backend="exact")
    assert bool((labels[7:13, 4:10] == 1).all())
    assert bool((labels[7:13, 38:44] == 0).all())
    assert int((labels == 1).sum()) == 36


def test_weight_zero_gives_the_nearest_scribble_partition():
    image = torch.rand(1, 12, 16) * 255
    scribbles = torch.full((12, 16), 255)
    scribbles[2, 3], scribbles[9, 12], scribbles[6, 8] = 0, 1, 2
    labels = segment_image(image, scribbles, weight=0.0, n_steps=3)
    torch.testing.assert_close(labels, nearest_scribble_labels(scribbles))


def test_nearest_init_is_accepted_and_keeps_scribbles():
    image, scribbles = _two_regions()
    labels = segment_image(image, scribbles, init="nearest", backend="exact")
    assert int(labels[5, 2]) == 0 and int(labels[14, 17]) == 1
    assert float((labels[:, 10:] == 1).float().mean()) >= 0.95


def test_nearest_scribble_labels_matches_brute_force():
    generator = torch.Generator().manual_seed(0)
    scribbles = torch.full((9, 13), 255)
    points = torch.randint(0, 9 * 13, (6,), generator=generator)
    scribbles.view(-1)[points] = torch.arange(6) % 3
    ys, xs = torch.meshgrid(torch.arange(9), torch.arange(13), indexing="ij")
    labeled = (scribbles != 255).nonzero()  # (M, 2)
    distance = (ys[..., None] - labeled[:, 0]) ** 2 + (xs[..., None] - labeled[:, 1]) ** 2
    nearest = nearest_scribble_labels(scribbles)
    reached = scribbles[labeled[:, 0], labeled[:, 1]]  # class of each labeled pixel
    # every pixel's class is that of one of its (possibly tied) nearest scribbled pixels
    closest = distance == distance.min(dim=-1, keepdim=True).values  # (9, 13, M)
    assert bool(((reached == nearest[..., None]) & closest).any(dim=-1).all())
    assert nearest.dtype == torch.int64


def test_three_classes_probs_and_scribbles_kept():
    image = torch.zeros(3, 12, 18)
    image[:, :, 6:12] = 120.0
    image[:, :, 12:] = 240.0
    scribbles = torch.full((12, 18), 255)
    scribbles[6, 1], scribbles[6, 8], scribbles[6, 16] = 0, 1, 2
    probs = segment_image(image, scribbles, return_probs=True)
    assert probs.shape == (3, 12, 18)
    torch.testing.assert_close(probs.sum(0), torch.ones(12, 18))
    labels = segment_image(image, scribbles, weight=0.0, n_steps=5)
    assert int(labels[6, 8]) == 1 and int(labels[6, 16]) == 2


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
        ({"init": "random"}, ValueError, "init must be one of"),
        ({"backend": "cpp"}, ValueError, "backend must be one of"),
        ({"weight": -1.0}, ValueError, "weight must be a finite number >= 0"),
        ({"sigma_xy": 0.0}, ValueError, "sigma_xy must be a finite number > 0"),
        ({"lr": 0.0}, ValueError, "lr must be a finite number > 0"),
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
