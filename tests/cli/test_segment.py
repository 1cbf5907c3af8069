import numpy as np
from PIL import Image

from weakseg.cli import main


def test_segment_command_writes_mask(tmp_path, capsys):
    image = np.zeros((16, 24, 3), dtype=np.uint8)
    image[:, 12:] = 200
    scribbles = np.full((16, 24), 255, dtype=np.uint8)
    scribbles[4, 2], scribbles[10, 21] = 0, 1
    Image.fromarray(image).save(tmp_path / "image.png")
    Image.fromarray(scribbles).save(tmp_path / "scribbles.png")
    out = tmp_path / "mask.png"
    status = main(
        [
            "segment",
            str(tmp_path / "image.png"),
            "--scribbles",
            str(tmp_path / "scribbles.png"),
            "-o",
            str(out),
            "--loss",
            "dense_crf",
            "--sigma-xy",
            "10",
        ]
    )
    assert status == 0 and "wrote" in capsys.readouterr().out
    mask = np.asarray(Image.open(out))
    assert mask.shape == (16, 24) and mask.dtype == np.uint8
    assert (mask[:, :12] == 0).mean() > 0.9 and (mask[:, 12:] == 1).mean() > 0.9
