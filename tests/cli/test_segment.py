import argparse
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from weakseg.cli import main
from weakseg.cli.segment import DEFAULTS, add_parser
from weakseg.interactive.appearance_crf import segment_image


def _write(tmp_path, image, scribbles, name="image.png"):
    Image.fromarray(image).save(tmp_path / name)
    Image.fromarray(scribbles).save(tmp_path / "scribbles.png")
    return str(tmp_path / name), str(tmp_path / "scribbles.png")


def _two_halves(height=16, width=24):
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, width // 2 :] = 200
    scribbles = np.full((height, width), 255, dtype=np.uint8)
    scribbles[4, 2], scribbles[10, width - 3] = 0, 1
    return image, scribbles


def test_segment_command_writes_mask(tmp_path, capsys):
    image_path, scribble_path = _write(tmp_path, *_two_halves())
    out = tmp_path / "mask.png"
    assert main(["segment", image_path, "--scribbles", scribble_path, "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    mask = np.asarray(Image.open(out))
    assert mask.shape == (16, 24) and mask.dtype == np.uint8
    assert (mask[:, :12] == 0).all() and (mask[:, 12:] == 1).all()


def test_segment_help_names_the_python_annotation_loop():
    parser = add_parser(argparse.ArgumentParser().add_subparsers())
    assert "InteractiveSegmenter" in parser.description and "--previous" in parser.description


def test_segment_command_defaults_are_segment_image_defaults():
    parser = add_parser(argparse.ArgumentParser().add_subparsers())
    args = parser.parse_args(["image.png", "--scribbles", "s.png", "-o", "m.png"])
    assert args.method == "appearance_crf"
    defaults = inspect.signature(segment_image).parameters
    for name, value in DEFAULTS.items():
        assert defaults[name].default == value, name
    assert args.appearance_weight == DEFAULTS["appearance_weight"]
    assert args.distance_weight == DEFAULTS["distance_weight"]
    assert args.grid_weight == DEFAULTS["grid_weight"]
    assert args.outer == DEFAULTS["n_outer"]


def _noisy_halves():
    """A gray image of two halves (means 90 and 150) under strong noise (std 35), one stroke
    in each half at the same distance from the boundary, so that the distance term is
    neutral near it. Per pixel, the colour models are unsure (the halves' histograms
    overlap): only the pairwise terms make the labels agree with the neighbours'."""
    rng = np.random.default_rng(0)
    columns = np.arange(96)[None, :]
    image = np.where(columns < 48, 90.0, 150.0) + rng.normal(0, 35, (48, 96))
    image = np.clip(image, 0, 255).astype(np.uint8)
    scribbles = np.full((48, 96), 255, dtype=np.uint8)
    scribbles[8:40, 20], scribbles[8:40, 76] = 0, 1
    return image, scribbles, (columns >= 48).repeat(48, axis=0)


def test_segment_regularizer_decides_the_noisy_pixels(tmp_path):
    """Replaces a test that passed with the regularizer zeroed: with the locality term weak
    (``--distance-weight 0.05``, which it raises where the colours overlap, as here), the
    dense CRF + grid terms bring the error from about 10% (both weights 0) to under 1%
    (measured 10.4% / 0.5%), so the test fails if the regularizers do nothing."""
    image, scribbles, truth = _noisy_halves()
    image_path, scribble_path = _write(tmp_path, image, scribbles)
    errors = {}
    for name, extra in [("with", []), ("without", ["--weight", "0", "--grid-weight", "0"])]:
        out = tmp_path / f"{name}.png"
        argv = ["segment", image_path, "--scribbles", scribble_path, "-o", str(out), *extra]
        argv += ["--distance-weight", "0.05"]
        assert main(argv) == 0
        errors[name] = float((np.asarray(Image.open(out)) != truth).mean())
    assert errors["with"] < 0.02
    assert errors["without"] > 0.04


def test_segment_previous_refines(tmp_path):
    image, scribbles = _two_halves(32, 48)
    image_path, scribble_path = _write(tmp_path, image, scribbles)
    wrong = np.zeros((32, 48), dtype=np.uint8)  # a previous result that is all class 0
    Image.fromarray(wrong).save(tmp_path / "previous.png")
    out = tmp_path / "mask.png"
    argv = ["segment", image_path, "--scribbles", scribble_path, "-o", str(out)]
    assert main([*argv, "--previous", str(tmp_path / "previous.png")]) == 0
    mask = np.asarray(Image.open(out))
    assert (mask[:, 24:] == 1).mean() > 0.9


def test_segment_logit_field_method_still_available(tmp_path):
    image, scribbles = _two_halves(12, 16)
    image_path, scribble_path = _write(tmp_path, image, scribbles)
    out = tmp_path / "mask.png"
    argv = ["segment", image_path, "--scribbles", scribble_path, "-o", str(out)]
    assert main([*argv, "--method", "grid_potts", "--init", "nearest"]) == 0
    assert np.asarray(Image.open(out)).shape == (12, 16)


def _error(capsys, argv):
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_segment_reports_mismatched_scribbles(tmp_path, capsys):
    Image.fromarray(np.zeros((12, 16), dtype=np.uint8)).save(tmp_path / "image.png")
    Image.fromarray(np.full((10, 16), 255, dtype=np.uint8)).save(tmp_path / "scribbles.png")
    argv = ["segment", str(tmp_path / "image.png"), "--scribbles", str(tmp_path / "scribbles.png")]
    err = _error(capsys, [*argv, "-o", str(tmp_path / "mask.png")])
    assert "size mismatch" in err and "16x12" in err and "16x10" in err
    assert "scribbles.png" in err
    assert not (tmp_path / "mask.png").exists()


@pytest.mark.parametrize(
    ("edit", "extra", "match"),
    [
        (lambda s: s.fill(255), [], "has no scribble"),
        (lambda s: s.__setitem__(s != 255, 0), [], "hold only class 0"),
        (lambda s: s.__setitem__((0, 0), 5), ["--num-classes", "3"], "class id 5, beyond"),
    ],
)
def test_segment_reports_bad_scribbles(tmp_path, capsys, edit, extra, match):
    image, scribbles = _two_halves()
    edit(scribbles)
    image_path, scribble_path = _write(tmp_path, image, scribbles)
    out = tmp_path / "mask.png"
    err = _error(
        capsys, ["segment", image_path, "--scribbles", scribble_path, "-o", str(out), *extra]
    )
    assert match in err and "scribbles.png" in err
    assert not out.exists()


def test_segment_refuses_output_equal_to_an_input(tmp_path, capsys):
    image_path, scribble_path = _write(tmp_path, *_two_halves())
    before = (tmp_path / "image.png").read_bytes()
    for target in (image_path, scribble_path):
        err = _error(capsys, ["segment", image_path, "--scribbles", scribble_path, "-o", target])
        assert "is the input file" in err and target in err
    assert (tmp_path / "image.png").read_bytes() == before


def test_segment_checks_output_before_any_work(tmp_path, capsys, monkeypatch):
    image_path, scribble_path = _write(tmp_path, *_two_halves())
    import weakseg.interactive.appearance_crf as module

    def fail(*args, **kwargs):
        raise AssertionError("optimization started before the output was checked")

    monkeypatch.setattr(module, "segment_image", fail)
    argv = ["segment", image_path, "--scribbles", scribble_path, "-o"]
    (tmp_path / "dir.png").mkdir()
    assert "is a directory" in _error(capsys, [*argv, str(tmp_path / "dir.png")])
    (tmp_path / "file").write_text("")  # a file where the output's folder should be
    err = _error(capsys, [*argv, str(tmp_path / "file" / "mask.png")])
    assert "cannot be written" in err and "file/mask.png" in err
    assert "must end in .png" in _error(capsys, [*argv, str(tmp_path / "mask.jpg")])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_segment_reports_unwritable_output_folder(tmp_path, capsys):
    image_path, scribble_path = _write(tmp_path, *_two_halves())
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        err = _error(
            capsys,
            ["segment", image_path, "--scribbles", scribble_path, "-o", str(locked / "m.png")],
        )
    finally:
        locked.chmod(0o700)
    assert "cannot be written" in err and "locked is not writable" in err


@pytest.mark.parametrize(
    ("previous", "match"),
    [
        (np.zeros((10, 24), np.uint8), ["size mismatch", "24x16", "24x10", "previous.png"]),
        (np.full((16, 24), 4, np.uint8), ["previous.png", "class id 4", "num_classes=2"]),
    ],
)
def test_segment_reports_bad_previous_mask(tmp_path, capsys, previous, match):
    image_path, scribble_path = _write(tmp_path, *_two_halves())
    Image.fromarray(previous).save(tmp_path / "previous.png")
    out = tmp_path / "mask.png"
    argv = ["segment", image_path, "--scribbles", scribble_path, "-o", str(out)]
    err = _error(capsys, [*argv, "--previous", str(tmp_path / "previous.png")])
    assert all(part in err for part in match), err
    assert not out.exists()


def _nifti(path, array, spacing=(1.5, 1.5, 4.0)):
    nibabel = pytest.importorskip("nibabel")
    nibabel.save(nibabel.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))


def test_segment_volume_through_the_command(tmp_path, capsys):
    """A NIfTI volume (x, y, z) = (24, 20, 5), two halves along x, one stroke per class on
    the middle slice only: the mask is written as NIfTI with the input's affine and every
    slice is segmented (the strokes reach the other slices through 3D)."""
    nibabel = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    image = np.where(np.arange(24)[:, None, None] < 12, 40.0, 160.0) + rng.normal(0, 5, (24, 20, 5))
    scribbles = np.full((24, 20, 5), 255, np.uint8)
    scribbles[3, 4:16, 2], scribbles[20, 4:16, 2] = 0, 1
    _nifti(tmp_path / "image.nii.gz", image.astype(np.float32))
    _nifti(tmp_path / "scribbles.nii.gz", scribbles)
    out = tmp_path / "mask.nii.gz"
    argv = ["segment", str(tmp_path / "image.nii.gz"), "--scribbles"]
    assert main([*argv, str(tmp_path / "scribbles.nii.gz"), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    written = nibabel.load(str(out))
    mask = np.asarray(written.dataobj)
    assert mask.shape == (24, 20, 5)
    np.testing.assert_allclose(written.affine, np.diag([1.5, 1.5, 4.0, 1.0]))
    truth = np.broadcast_to(np.arange(24)[:, None, None] >= 12, mask.shape)
    assert (mask == truth).mean() > 0.98


def test_segment_volume_reports_mismatched_scribbles(tmp_path, capsys):
    _nifti(tmp_path / "image.nii.gz", np.zeros((24, 20, 5), np.float32))
    _nifti(tmp_path / "scribbles.nii.gz", np.full((24, 20, 4), 255, np.uint8))
    out = tmp_path / "mask.nii.gz"
    argv = ["segment", str(tmp_path / "image.nii.gz"), "--scribbles"]
    err = _error(capsys, [*argv, str(tmp_path / "scribbles.nii.gz"), "-o", str(out)])
    assert "size mismatch" in err and "scribbles.nii.gz" in err
    assert not out.exists()


def test_segment_command_does_not_import_torch(tmp_path):
    image_path, scribble_path = _write(tmp_path, *_two_halves())
    code = (
        "import sys\nfrom weakseg.cli import main\n"
        f"status = main(['segment', {image_path!r}, '--scribbles', {scribble_path!r}, "
        f"'-o', {str(tmp_path / 'mask.png')!r}])\n"
        "print(status, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    # (scipy is not asserted on: numba imports it itself when it is installed)
    assert result.stdout.split()[-2:] == ["0", "False"], result.stderr
