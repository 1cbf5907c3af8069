import random

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from weakseg.data.dataset import to_sample
from weakseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PadIfNeeded,
    RandomRot90Flip,
    RandomRotation,
    RandomScale,
    ScribbleBoxPrior,
    ValidMask,
    denormalize,
    eval_transforms,
    normalize,
    train_transforms,
)


def _spatial(c: int = 3, h: int = 10, w: int = 12) -> dict:
    label = torch.randint(0, 3, (h, w))
    return {
        "image": tv_tensors.Image(torch.rand(c, h, w)),
        "label": tv_tensors.Mask(label),
        "mask": tv_tensors.Mask(label.clone()),
        "valid_mask": ValidMask(torch.ones(h, w, dtype=torch.bool)),
    }


@pytest.mark.parametrize("channels", [1, 3])
def test_pad_fills_mean_255_false(channels: int) -> None:
    out = PadIfNeeded((16, 20))(_spatial(channels))
    assert out["image"].shape == (channels, 16, 20)
    fill = torch.tensor(IMAGENET_MEAN) / 255
    if channels == 1:
        fill = fill.mean(0, keepdim=True)
    torch.testing.assert_close(out["image"][:, 12, 15], fill)
    assert (out["label"][10:] == 255).all() and (out["label"][:, 12:] == 255).all()
    assert (out["mask"][10:] == 255).all()
    assert out["valid_mask"].dtype == torch.bool
    assert out["valid_mask"][:10, :12].all() and not out["valid_mask"][10:].any()
    assert not out["valid_mask"][:, 12:].any()


def test_train_transform_joint_and_normalized_padding_is_zero() -> None:
    torch.manual_seed(0)
    image = torch.rand(3, 10, 12) * 255
    label = (image[0] > 128).long()  # label follows the image: checks they move together
    transform = train_transforms(24, scale=(0.8, 1.2), jitter=0.0)
    sample = to_sample("x", image, label, None, torch.ones(2, dtype=torch.bool), transform,
                       IMAGENET_MEAN, IMAGENET_STD)  # fmt: skip
    assert sample["image"].shape == (3, 24, 24) and sample["label"].shape == (24, 24)
    valid = sample["valid_mask"]
    assert 0 < valid.sum() < valid.numel()
    assert (sample["label"][~valid] == 255).all()
    assert sample["image"][:, ~valid].abs().max() < 1e-5  # mean padding -> 0 after normalizing
    assert set(sample["label"][valid].unique().tolist()) <= {0, 1}


def test_random_scale_nearest_for_masks() -> None:
    out = RandomScale((2.0, 2.0))(_spatial())
    assert out["image"].shape == (3, 20, 24) and out["label"].shape == (20, 24)
    assert set(out["label"].unique().tolist()) <= {0, 1, 2}
    assert isinstance(out["image"], tv_tensors.Image) and out["valid_mask"].all()


def test_eval_transforms_deterministic_divisor() -> None:
    data = _spatial()
    a, b = eval_transforms(size_divisor=8)(data), eval_transforms(size_divisor=8)(data)
    assert a["image"].shape == (3, 16, 16)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    same = eval_transforms()(data)
    assert torch.equal(same["image"], data["image"])


def test_photometric_jitter_keeps_range_and_labels() -> None:
    data = _spatial()
    out = v2.ColorJitter(0.5, 0.5, 0.5)(data)
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    assert torch.equal(out["label"], data["label"])


def test_rotation_moves_all_and_fills_mean_255_false() -> None:
    torch.manual_seed(0)
    h = w = 21
    image = torch.zeros(1, h, w)
    image[0, 10, 14:] = 1.0  # a bar right of the centre
    label = (image[0] > 0.5).long()
    spatial = {
        "image": tv_tensors.Image(image),
        "label": tv_tensors.Mask(label),
        "valid_mask": ValidMask(torch.ones(h, w, dtype=torch.bool)),
    }
    transform = RandomRotation(90.0, mean=(51.0,))
    out = v2.functional.rotate(spatial["label"], 90.0)  # reference: counter-clockwise
    rotated = transform.transform(spatial["label"], {"angle": 90.0})
    assert (rotated == 255).sum() == 0 and (rotated == out).all()  # 90 degrees: no corner
    assert rotated[4:7, 10].all()  # the bar now points up
    for key, angle in (("image", 45.0), ("label", 45.0), ("valid_mask", 45.0)):
        result = transform.transform(spatial[key], {"angle": angle})
        corner = result[..., 0, 0]
        expected = {"image": 51.0 / 255, "label": 255, "valid_mask": False}[key]
        assert torch.allclose(corner.float(), torch.tensor(float(expected))), key
    sample = RandomRotation(30.0)(spatial)
    assert (sample["label"][~sample["valid_mask"]] == 255).all()
    with pytest.raises(ValueError, match=r"degrees must be in \[0, 180\], got 200"):
        RandomRotation(200)


def test_rot90_flip_moves_all_together() -> None:
    torch.manual_seed(0)
    spatial = _spatial(1, 8, 8)
    spatial["label"] = tv_tensors.Mask((spatial["image"][0] * 3).long())
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        import random

        random.seed(seed)
        out = RandomRot90Flip()(spatial)
        assert (out["label"] == (out["image"][0] * 3).long()).all()  # still aligned
        seen.add(tuple(out["image"].flatten()[:3].tolist()))
    assert len(seen) == 8  # every orientation of the square
    sample = train_transforms(8, scale=None, hflip=0.0, rot90_flip=True, rotation=10.0)(spatial)
    assert sample["image"].shape == (1, 8, 8)
    with pytest.raises(ValueError, match=r"rot90_flip needs a square crop_size, got \(8, 6\)"):
        train_transforms((8, 6), rot90_flip=True)


def test_transform_errors() -> None:
    with pytest.raises(ValueError, match="crop_size must be a positive int"):
        train_transforms(0)
    with pytest.raises(ValueError, match="scale must be a range"):
        RandomScale((2.0, 1.0))
    with pytest.raises(ValueError, match="size_divisor must be an integer >= 1"):
        PadIfNeeded(size_divisor=0)
    with pytest.raises(ValueError, match="mean has 2 values but the image has 3 channels"):
        PadIfNeeded((20, 20), mean=(1.0, 2.0))(_spatial())


@pytest.mark.parametrize("channels", [1, 3])
def test_denormalize_inverts_normalize_batched(channels: int) -> None:
    raw = torch.rand(2, channels, 5, 6, dtype=torch.float64) * 255
    normalized = torch.stack([normalize(image, IMAGENET_MEAN, IMAGENET_STD) for image in raw])
    torch.testing.assert_close(denormalize(normalized, IMAGENET_MEAN, IMAGENET_STD), raw)
    with pytest.raises(ValueError, match="mean has 2 values but the image has 3 channels"):
        denormalize(torch.zeros(3, 2, 2), [1.0, 2.0], [1.0, 2.0])


def test_scribble_box_prior_labels_outside_background_first_and_label_only() -> None:
    """The prior acts on ``label`` before any geometry (the padding stays 255, invalid), the
    full ``mask`` beside it is untouched, and a bad margin is refused."""
    label = torch.full((10, 12), 255)
    label[4, 5], label[5, 7] = 1, 0  # box rows 4-5, cols 5-7; margin 1 -> rows 3-6, cols 4-8
    mask = torch.full((10, 12), 2)
    sample = {
        "image": tv_tensors.Image(torch.rand(1, 10, 12)),
        "label": tv_tensors.Mask(label),
        "mask": tv_tensors.Mask(mask),
        "valid_mask": ValidMask(torch.ones(10, 12, dtype=torch.bool)),
    }
    out = ScribbleBoxPrior(1)(sample)
    assert isinstance(out["label"], tv_tensors.Mask)
    expected = torch.zeros(10, 12, dtype=torch.long)
    expected[3:7, 4:9] = 255
    expected[4, 5], expected[5, 7] = 1, 0
    assert torch.equal(out["label"].as_subclass(torch.Tensor), expected)
    assert torch.equal(out["mask"].as_subclass(torch.Tensor), mask)
    padded = train_transforms(16, scale=None, hflip=0.0, box_margin=1)(sample)
    valid = padded["valid_mask"].as_subclass(torch.Tensor)
    background = int((padded["label"][valid] == 0).sum())
    assert (padded["label"][~valid] == 255).all() and background == 10 * 12 - 4 * 5 + 1
    with pytest.raises(ValueError, match="box margin must be an integer >= 0, got -1"):
        ScribbleBoxPrior(-1)


@pytest.mark.parametrize("box_margin", [None, 2])
@pytest.mark.parametrize("seed", range(6))
def test_slab_gets_one_draw_equal_to_each_slice_alone(seed: int, box_margin: int | None) -> None:
    """A slab ``[S, C, H, W]`` through the training transform: each slice comes out as it
    would alone with the same random state (one draw of every parameter for the slab)."""
    transform = train_transforms(
        (20, 20), (0.7, 1.4), 0.5, 0.3, [127.5], rotation=30, rot90_flip=True, box_margin=box_margin
    )
    slices = [_spatial(1, 22, 18) for _ in range(3)]
    for spatial in slices:
        spatial["label"][spatial["label"] == 2] = 255
    slab = {
        key: tv_tensors.wrap(torch.stack([s[key] for s in slices]), like=slices[0][key])
        for key in slices[0]
    }
    random.seed(seed)
    torch.manual_seed(seed)
    out = transform(slab)
    for index, spatial in enumerate(slices):
        random.seed(seed)
        torch.manual_seed(seed)
        alone = transform(spatial)
        for key, value in alone.items():
            assert type(out[key]) is type(value)
            assert torch.equal(out[key][index], value), (index, key)
