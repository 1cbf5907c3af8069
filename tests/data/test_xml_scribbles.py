from pathlib import Path

import numpy as np
import pytest

from weakseg.data.io import DataError, read_label
from weakseg.data.xml_scribbles import (
    VOC_CLASSES,
    convert_xml_dir,
    parse_scribble_xml,
    rasterize_scribble_xml,
)


def _xml(width: int, height: int, polygons: list[tuple[str, list[tuple[float, float]]]]) -> str:
    body = "".join(
        f"<polygon><tag>{tag}</tag>"
        + "".join(f"<point><X>{x}</X><Y>{y}</Y></point>" for x, y in points)
        + "</polygon>"
        for tag, points in polygons
    )
    return (
        f"<annotation><filename>a.jpg</filename><size><width>{width}</width>"
        f"<height>{height}</height></size>{body}</annotation>"
    )


def test_voc_names_order() -> None:
    assert len(VOC_CLASSES) == 21
    assert VOC_CLASSES[0] == "background" and VOC_CLASSES[8] == "cat"
    assert VOC_CLASSES[15] == "person" and VOC_CLASSES[20] == "monitor"


def test_hand_made_case_pixel_by_pixel(tmp_path: Path) -> None:
    # a cat stroke from (x=1, y=2) to (4, 2), 3 px wide; then a PASCAL-Context "sky" click
    # outside the image at (10, -3), clipped to (5, 0), drawn as background over the cat
    path = tmp_path / "a.xml"
    path.write_text(_xml(6, 5, [("cat", [(1, 2), (4, 2)]), ("sky", [(10, -3)])]))
    label = rasterize_scribble_xml(path)
    expected = np.array(
        [
            [255, 255, 255, 255, 0, 0],
            [8, 8, 8, 8, 0, 0],
            [8, 8, 8, 8, 8, 8],
            [8, 8, 8, 8, 8, 8],
            [255, 255, 255, 255, 255, 255],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(label, expected)


def test_diagonal_width_one_and_case_insensitive_tags(tmp_path: Path) -> None:
    path = tmp_path / "d.xml"
    path.write_text(_xml(4, 4, [("Person", [(0, 0), (2.2, 1.8)])]))
    label = rasterize_scribble_xml(path, width=1)
    expected = np.full((4, 4), 255, dtype=np.uint8)
    expected[[0, 1, 2], [0, 1, 2]] = 15
    np.testing.assert_array_equal(label, expected)
    (size, polygons) = parse_scribble_xml(path)
    assert size == (4, 4) and polygons[0][0] == "Person" and polygons[0][1].shape == (2, 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<annotation><size>", "is not well-formed XML"),
        ("<annotation></annotation>", "has no <size> element"),
        ("<annotation><size><width>4</width></size></annotation>", r"<size> has no <height>"),
        (
            "<annotation><size><width>4</width><height>x</height></size></annotation>",
            r"<size> has a non-numeric <height>: 'x'",
        ),
        (
            "<annotation><size><width>4</width><height>4</height></size>"
            "<polygon><tag>cat</tag><point><X>1</X></point></polygon></annotation>",
            r"polygon 0 point 0 has no <Y>",
        ),
        (
            "<annotation><size><width>4</width><height>4</height></size>"
            "<polygon><point><X>1</X><Y>1</Y></point></polygon></annotation>",
            r"polygon 0 has no <tag>",
        ),
        ("<annotation><size><width>0</width><height>4</height></size></annotation>", "invalid"),
    ],
)
def test_bad_xml_names_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(DataError, match=rf"scribble XML .*bad\.xml.*{message}"):
        rasterize_scribble_xml(path)


def test_convert_dir_and_skip_bad(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    xml_dir = tmp_path / "xml"
    xml_dir.mkdir()
    (xml_dir / "good.xml").write_text(_xml(6, 5, [("cat", [(1, 2), (4, 2)])]))
    (xml_dir / "bad.xml").write_text("<annotation>")
    with pytest.raises(DataError, match=r"bad\.xml is not well-formed"):
        convert_xml_dir(xml_dir, tmp_path / "out")
    converted, problems = convert_xml_dir(xml_dir, tmp_path / "out", skip_bad=True)
    assert converted == 1 and problems[0][0].name == "bad.xml"
    assert "bad.xml" in caplog.text
    assert read_label(tmp_path / "out" / "good.png")[2, 2] == 8
    with pytest.raises(DataError, match="XML folder not found"):
        convert_xml_dir(tmp_path / "none", tmp_path / "out")
    with pytest.raises(DataError, match=r"no \.xml file in"):
        convert_xml_dir(tmp_path / "out", tmp_path / "out2")
    with pytest.raises(DataError, match=r"missing scribble XML file: .*none\.xml"):
        parse_scribble_xml(tmp_path / "none.xml")
    with pytest.raises(ValueError, match="width must be an integer >= 1"):
        rasterize_scribble_xml(xml_dir / "good.xml", width=0)
