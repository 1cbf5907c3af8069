from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weakseg.data.io import DataError, check_label_values, read_image, read_label, write_label


def test_read_gray_rgb_16bit(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(np.stack([gray, gray + 1, gray + 2], -1)).save(tmp_path / "c.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "w.png")
    g = read_image(tmp_path / "g.png")
    c = read_image(tmp_path / "c.png")
    w = read_image(tmp_path / "w.png")
    assert g.shape == (1, 3, 4) and g.dtype == np.float32 and np.array_equal(g[0], gray)
    assert c.shape == (3, 3, 4) and np.array_equal(c[2], gray + 2)
    np.testing.assert_allclose(w[0], gray, atol=1e-4)  # 16 bit: x * 257 -> x
    assert read_image(tmp_path / "g.png", channels=3).shape == (3, 3, 4)
    assert read_image(tmp_path / "c.png", channels=1).shape == (1, 3, 4)


def test_read_image_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing image file: .*nothere\.png"):
        read_image(tmp_path / "nothere.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(tmp_path / "t.jpg", quality=95)
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"unreadable or truncated image file .*t\.jpg"):
        read_image(tmp_path / "t.jpg")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"unreadable or truncated image file .*junk\.png"):
        read_image(tmp_path / "junk.png")
    with pytest.raises(ValueError, match="channels must be 1, 3 or None"):
        read_image(tmp_path / "junk.png", channels=2)


def test_labels_roundtrip_palette_and_errors(tmp_path: Path) -> None:
    label = np.array([[0, 1, 255], [20, 3, 4]], dtype=np.uint8)
    write_label(tmp_path / "p.png", label)
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert np.array_equal(read_label(tmp_path / "p.png"), label)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"rgb\.png has mode 'RGB'; label maps must be single"):
        read_label(tmp_path / "rgb.png")
    Image.fromarray(np.full((2, 2), 300, np.uint16)).save(tmp_path / "big.png")
    with pytest.raises(DataError, match=r"big\.png holds values outside 0-255"):
        read_label(tmp_path / "big.png")
    with pytest.raises(DataError, match=r"holds label values \{20\} >= num_classes=5"):
        check_label_values(label, 5, tmp_path / "p.png", "mask")
    check_label_values(label, 21, tmp_path / "p.png", "mask")
    with pytest.raises(ValueError, match=r"label must have shape \(H, W\)"):
        write_label(tmp_path / "x.png", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"label values must be in 0\.\.255"):
        write_label(tmp_path / "x.png", np.full((2, 2), 256))


def test_voc_palette_public_and_used(tmp_path: Path) -> None:
    from weakseg.data.io import VOC_PALETTE

    # the VOC devkit's colours: background, aeroplane, person (15), the 255 'void' border
    assert VOC_PALETTE.shape == (256, 3) and VOC_PALETTE.dtype == np.uint8
    assert VOC_PALETTE[0].tolist() == [0, 0, 0] and VOC_PALETTE[1].tolist() == [128, 0, 0]
    assert VOC_PALETTE[15].tolist() == [192, 128, 128]
    assert VOC_PALETTE[255].tolist() == [224, 224, 192]
    with pytest.raises(ValueError, match="read-only"):
        VOC_PALETTE[0, 0] = 1
    write_label(tmp_path / "x.png", np.array([[0, 1], [15, 255]], np.uint8))
    stored = np.asarray(Image.open(tmp_path / "x.png").getpalette()[: 256 * 3], np.uint8)
    np.testing.assert_array_equal(stored.reshape(256, 3), VOC_PALETTE)
