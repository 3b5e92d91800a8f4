"""datasets/voc.py against hand-written VOC XML fixtures (tests/fixtures/VOCdevkit)."""

from __future__ import annotations

import functools
import logging
import re
import shutil
from pathlib import Path

import cv2
import hostile_files as hf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd_datasets import parse_class_names
from ssd_datasets.voc import VOC_CLASSES, load_voc, load_voc_with_report, parse_split, write_voc_annotation

FIXTURES = Path(__file__).parent / "fixtures" / "VOCdevkit"
MISSING_JPEG = "000017"


def cls(name: str) -> int:
    return VOC_CLASSES.index(name) + 1


@functools.cache
def jpeg_bytes(width: int, height: int) -> bytes:
    """A real (grey) JPEG of width x height: what the loader's header check reads."""
    return cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))[1].tobytes()


def write_jpeg(path: Path, width: int, height: int) -> None:
    path.write_bytes(jpeg_bytes(width, height))


@pytest.fixture
def devkit(tmp_path: Path) -> Path:
    """A copy of the fixture devkit with a JPEG of each annotation's <size> (all but 000017's)."""
    root = tmp_path / "VOCdevkit"
    shutil.copytree(FIXTURES, root)
    for year in root.iterdir():
        (year / "JPEGImages").mkdir()
        for xml in (year / "Annotations").glob("*.xml"):
            if xml.stem != MISSING_JPEG:
                sides = [re.search(rf"<{tag}>(\d+)</{tag}>", xml.read_text()) for tag in ("width", "height")]
                write_jpeg(year / "JPEGImages" / f"{xml.stem}.jpg", *(int(m[1]) if m else 8 for m in sides))
    return root


def write_set(folder: Path, name: str, ids: list[str]) -> None:
    (folder / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(ids) + "\n")


def by_id(dataset):
    return {s.image_id: s for s in dataset.samples}


def test_voc_classes_in_design_order():
    assert len(VOC_CLASSES) == 20
    assert (VOC_CLASSES[0], VOC_CLASSES[8], VOC_CLASSES[14], VOC_CLASSES[19]) == (
        "aeroplane", "chair", "person", "tvmonitor",
    )  # fmt: skip


def test_one_based_inclusive_pixels_become_zero_based_continuous(devkit):
    # VOC (141, 50, 500, 330), 1-based inclusive, covers columns 141..500 = 360 pixels.
    sample = by_id(load_voc(devkit, ["VOC2007:good"]))["000007"]
    np.testing.assert_array_equal(sample.boxes, [[140, 49, 500, 330]])
    assert sample.boxes[0, 2] - sample.boxes[0, 0] == 500 - 141 + 1
    assert (sample.width, sample.height) == (500, 333)
    assert sample.labels.tolist() == [cls("car")]  # " car " with spaces is still a car
    assert sample.image_path.endswith("VOC2007/JPEGImages/000007.jpg")


def test_multi_object_file_hand_worked(devkit):
    sample = by_id(load_voc(devkit, ["VOC2007:good"]))["000005"]
    assert sample.boxes.dtype == np.float32 and sample.labels.dtype == np.int32
    np.testing.assert_array_equal(
        sample.boxes,
        [[262, 210, 324, 339], [4, 243, 67, 374], [0, 0, 500, 375], [276, 185, 277, 190]],
    )
    assert sample.labels.tolist() == [cls("chair"), cls("chair"), cls("person"), cls("pottedplant")]
    assert sample.difficult.tolist() == [False, True, False, True]


def test_full_image_and_one_pixel_boxes_are_not_reported(devkit):
    # (1, 1, 500, 375) is exactly the 500x375 image, xmin == xmax is one pixel wide: both valid.
    _, report = load_voc_with_report(devkit, ["VOC2007:good"])
    assert report.issues == []
    assert (report.files, report.objects) == (2, 5)


def test_include_difficult_false_drops_difficult_objects(devkit):
    dataset, report = load_voc_with_report(devkit, ["VOC2007:good"], include_difficult=False)
    sample = by_id(dataset)["000005"]
    assert sample.labels.tolist() == [cls("chair"), cls("person")]
    assert not sample.difficult.any()
    assert report.dropped_difficult == 2


def test_bad_objects_skipped_or_clipped_and_reported(devkit):
    dataset, report = load_voc_with_report(devkit, ["VOC2007:trainval"])
    sample = by_id(dataset)["000012"]
    # dog kept; bird (350, -10, 420, 40) clipped to the 400x300 image; unicorn, the inverted cat,
    # the boat entirely right of the image and the cow with xmin "ten" skipped.
    np.testing.assert_array_equal(sample.boxes, [[100, 50, 200, 150], [350, 0, 400, 40]])
    assert sample.labels.tolist() == [cls("dog"), cls("bird")]
    problems = [(Path(i.file).name, i.action) for i in report.issues]
    assert problems.count(("000012.xml", "skipped object")) == 4
    assert problems.count(("000012.xml", "clipped box")) == 1
    text = " ".join(str(i) for i in report.issues)
    for word in ("unicorn", "degenerate", "outside", "ten"):
        assert word in text


def test_bad_files_skipped_and_reported_by_name(devkit):
    dataset, report = load_voc_with_report(devkit, ["VOC2007:bad"])
    assert [s.image_id for s in dataset.samples] == ["000012"]
    skipped = {Path(i.file).name: i.problem for i in report.issues if i.action == "skipped file"}
    assert set(skipped) == {"000009.xml", "000016.xml", "000017.xml"}
    assert "XML" in skipped["000009.xml"]
    assert "size" in skipped["000016.xml"]
    assert "000017.jpg" in skipped["000017.xml"]
    summary = report.summary()
    # one entry per kind of problem, with its count and one example path
    assert "2 images skipped: bad annotation file (e.g. " in summary
    assert f"1 images skipped: file missing (e.g. {devkit / 'VOC2007' / 'JPEGImages' / '000017.jpg'})" in summary
    for kind in ("unknown class", "degenerate box", "box outside the image", "malformed object"):
        assert f"1 objects skipped: {kind} (e.g. {devkit / 'VOC2007' / 'Annotations' / '000012.xml'})" in summary
    assert "1 boxes clipped: crosses the border" in summary


def test_nothing_degenerate_reaches_a_sample(devkit):
    dataset = load_voc(devkit, ["VOC2007:trainval", "VOC2007:bad", "VOC2012:trainval"])
    for s in dataset.samples:
        assert np.all(s.boxes[:, 2:] > s.boxes[:, :2])
        assert np.all(s.boxes >= 0)
        assert np.all(s.boxes[:, [0, 2]] <= s.width) and np.all(s.boxes[:, [1, 3]] <= s.height)
        assert np.all((s.labels >= 1) & (s.labels <= 20))


@pytest.mark.parametrize(
    "image_id, message",
    [("000009", "XML"), ("000012", "unicorn"), ("000016", "size"), ("000017", "missing")],
)
def test_strict_raises_naming_file_and_problem(devkit, image_id, message):
    write_set(devkit / "VOC2007", "one", [image_id])
    with pytest.raises(ValueError, match=message) as err:
        load_voc(devkit, ["VOC2007:one"], strict=True)
    assert f"{image_id}.xml" in str(err.value)


def test_strict_accepts_clean_data(devkit):
    strict, report = load_voc_with_report(devkit, ["VOC2007:good"], strict=True)
    lenient = load_voc(devkit, ["VOC2007:good"])
    assert report.issues == [] and [s.image_id for s in strict.samples] == ["000005", "000007"]
    for a, b in zip(strict.samples, lenient.samples, strict=True):  # strict reads exactly what lenient keeps
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert a.labels.tolist() == b.labels.tolist() and a.difficult.tolist() == b.difficult.tolist()
    assert by_id(strict)["000007"].labels.tolist() == [cls("car")]


def test_empty_image_kept_and_counted(devkit):
    dataset, report = load_voc_with_report(devkit, ["VOC2007:trainval"])
    sample = by_id(dataset)["000019"]
    assert sample.boxes.shape == (0, 4) and sample.labels.shape == (0,)
    assert [Path(p).name for p in report.empty_images] == ["000019.xml"]


def test_year_union_prefixes_ids_and_keeps_same_stems_apart(devkit):
    dataset = load_voc(devkit, ["VOC2007:good", "VOC2012:trainval"])
    samples = by_id(dataset)
    assert sorted(samples) == ["VOC2007/000005", "VOC2007/000007", "VOC2012/000005", "VOC2012/2008_000008"]
    assert samples["VOC2012/000005"].labels.tolist() == [cls("dog")]
    assert samples["VOC2007/000005"].labels[0] == cls("chair")


def test_single_folder_keeps_plain_ids(devkit):
    assert [s.image_id for s in load_voc(devkit, ["VOC2012:trainval"]).samples] == ["000005", "2008_000008"]


def test_plain_root_without_year_folders(devkit):
    dataset = load_voc(devkit / "VOC2007", ["good"])
    assert [s.image_id for s in dataset.samples] == ["000005", "000007"]


def test_same_image_listed_twice_is_loaded_once(devkit):
    assert len(load_voc(devkit, ["VOC2007:good", "VOC2007:trainval"])) == 4


def test_voc2012_quirks_fractional_no_difficult_parts_and_tag_order(devkit):
    samples = by_id(load_voc(devkit, ["VOC2012:trainval"]))
    np.testing.assert_allclose(samples["000005"].boxes, [[44.5, 89, 300.25, 400]])
    assert samples["000005"].difficult.tolist() == [False]
    # the <part> (head) bndbox must not be read as an object box
    np.testing.assert_array_equal(samples["2008_000008"].boxes, [[157, 42, 212, 256]])
    assert (samples["2008_000008"].width, samples["2008_000008"].height) == (500, 442)


def test_custom_class_list_skips_others(devkit):
    dataset = load_voc(devkit, ["VOC2007:good"], class_names=("person", "car"))
    assert dataset.class_names == ("person", "car")
    assert {s.image_id: s.labels.tolist() for s in dataset.samples} == {"000005": [1], "000007": [2]}


def test_missing_set_file_and_bad_split_names(devkit):
    with pytest.raises(FileNotFoundError, match="nosuchset.txt"):
        load_voc(devkit, ["VOC2007:nosuchset"])
    with pytest.raises(ValueError, match="split"):
        parse_split(":trainval")
    with pytest.raises(TypeError, match="sequence"):
        load_voc(devkit, "VOC2007:good")
    assert parse_split("VOC2007:test") == ("VOC2007", "test") and parse_split("test") == ("", "test")


def test_summary_logged_and_details_with_verbose(devkit, caplog):
    with caplog.at_level(logging.INFO, logger="ssd_datasets.voc"):
        load_voc(devkit, ["VOC2007:bad"])
    assert len(caplog.records) == 1 and "--verbose lists each" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ssd_datasets.voc"):
        load_voc(devkit, ["VOC2007:bad"], verbose=True)
    assert "unicorn" in caplog.text and "000016.xml" in caplog.text


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_writer_round_trips_through_loader(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("voc")
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    width, height = data.draw(st.integers(2, 600)), data.draw(st.integers(2, 600))
    n = data.draw(st.integers(0, 5))
    boxes = []
    for _ in range(n):
        x0 = data.draw(st.integers(0, width - 1))
        y0 = data.draw(st.integers(0, height - 1))
        boxes.append((x0, y0, data.draw(st.integers(x0 + 1, width)), data.draw(st.integers(y0 + 1, height))))
    names = [data.draw(st.sampled_from(VOC_CLASSES)) for _ in range(n)]
    difficult = [data.draw(st.booleans()) for _ in range(n)]
    write_voc_annotation(root / "Annotations" / "a.xml", "a.jpg", width, height, boxes, names, difficult, [False] * n)
    write_jpeg(root / "JPEGImages" / "a.jpg", width, height)
    write_set(root, "all", ["a"])
    dataset, report = load_voc_with_report(root, ["all"], strict=True)
    sample = dataset.samples[0]
    assert report.issues == []
    np.testing.assert_array_equal(sample.boxes, np.array(boxes, np.float32).reshape(-1, 4))
    assert sample.labels.tolist() == [VOC_CLASSES.index(c) + 1 for c in names]
    assert sample.difficult.tolist() == difficult
    assert (sample.width, sample.height) == (width, height)


def test_name_files_must_be_utf8_and_errors_name_the_file(tmp_path):
    (tmp_path / "classes.txt").write_bytes(b"cat\n\xff\xfedog\n")
    with pytest.raises(ValueError, match=r"classes.txt is not UTF-8"):
        parse_class_names(str(tmp_path / "classes.txt"))
    (tmp_path / "classes.txt").write_text("cat\n\n  dog \n")
    assert parse_class_names("cat, dog,") == ("cat", "dog")
    assert parse_class_names(str(tmp_path / "classes.txt")) == ("cat", "dog")
    with pytest.raises(ValueError, match="names no classes"):
        parse_class_names(" , ")


def write_annotation_text(folder: Path, stem: str, size: str, objects: str) -> None:
    """A raw annotation (for values the writer would never produce) and its JPEG placeholder."""
    (folder / "Annotations" / f"{stem}.xml").write_text(
        f"<annotation><filename>{stem}.jpg</filename><size>{size}<depth>3</depth></size>{objects}</annotation>")
    write_jpeg(folder / "JPEGImages" / f"{stem}.jpg", 400, 300)


def voc_object(name: str, xmin: str, ymin: str = "3", xmax: str = "306", ymax: str = "118") -> str:
    return (f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{xmin}</xmin>"
            f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e400"])
def test_non_finite_coordinate_skips_the_object_with_a_named_report(devkit, value):
    folder = devkit / "VOC2007"
    write_annotation_text(folder, "nanbox", "<width>400</width><height>300</height>",
                          voc_object("dog", value) + voc_object("cat", "10"))
    write_set(folder, "nan", ["nanbox"])
    dataset, report = load_voc_with_report(devkit, ["VOC2007:nan"])
    np.testing.assert_array_equal(dataset.samples[0].boxes, [[9, 2, 306, 118]])  # only the cat
    assert dataset.samples[0].labels.tolist() == [cls("cat")]
    [issue] = report.issues
    assert Path(issue.file).name == "nanbox.xml" and issue.action == "skipped object"
    assert "dog" in issue.problem and "<xmin>" in issue.problem and value in issue.problem
    with pytest.raises(ValueError, match=r"nanbox\.xml.*<xmin>.*finite"):
        load_voc(devkit, ["VOC2007:nan"], strict=True)


@pytest.mark.parametrize("size", [
    "<width>nan</width><height>300</height>", "<width>400</width><height>1e400</height>",
    "<width>inf</width><height>300</height>", "<width>400</width><height>70000</height>",
])  # fmt: skip
def test_non_finite_or_absurd_size_skips_the_file_not_the_load(devkit, size):
    folder = devkit / "VOC2007"
    write_annotation_text(folder, "badsize", size, voc_object("dog", "10"))
    write_set(folder, "badsize", ["badsize", "000007"])
    dataset, report = load_voc_with_report(devkit, ["VOC2007:badsize"])
    assert [s.image_id for s in dataset.samples] == ["000007"]
    [issue] = report.issues
    assert Path(issue.file).name == "badsize.xml" and issue.action == "skipped file" and "<size>" in issue.problem
    with pytest.raises(ValueError, match=r"badsize\.xml.*size"):
        load_voc(devkit, ["VOC2007:badsize"], strict=True)


def test_non_utf8_image_set_is_named(devkit):
    (devkit / "VOC2007" / "ImageSets" / "Main" / "latin1.txt").write_bytes("000007\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"image set file \S+latin1\.txt is not UTF-8"):
        load_voc(devkit, ["VOC2007:latin1"])


def test_empty_split_is_named_as_such(devkit):
    write_set(devkit / "VOC2007", "empty", [])
    with pytest.raises(ValueError, match=r"empty\.txt lists no image ids: the split is empty"):
        load_voc(devkit, ["VOC2007:empty"])


def test_unreadable_images_are_skipped_at_load_by_name(devkit):
    folder = devkit / "VOC2007"
    jpeg = jpeg_bytes(400, 300)
    assert jpeg.endswith(b"\xff\xd9")
    bad = {  # stem -> (bytes of its "JPEG", what the report must say)
        "zero": (b"", "is empty (0 bytes)"),
        "cut": (jpeg[: len(jpeg) * 2 // 3], "without its end marker: truncated"),
        "text": (b"<html>not found</html>", "is not a JPEG, PNG, BMP or WebP image"),
        "other": (jpeg_bytes(300, 400), "is 300x400, the annotation's size says 400x300"),
    }
    for stem, (data, _) in bad.items():
        write_annotation_text(folder, stem, "<width>400</width><height>300</height>", voc_object("dog", "10"))
        (folder / "JPEGImages" / f"{stem}.jpg").write_bytes(data)
    write_annotation_text(folder, "padded", "<width>400</width><height>300</height>", voc_object("dog", "10"))
    (folder / "JPEGImages" / "padded.jpg").write_bytes(jpeg + b"\x00" * 10)  # zeros after the end marker: fine
    write_set(folder, "images", [*bad, "padded", "000007"])
    dataset, report = load_voc_with_report(devkit, ["VOC2007:images"])
    assert sorted(s.image_id for s in dataset.samples) == ["000007", "padded"]
    skipped = {Path(i.file).stem: i.problem for i in report.issues}
    assert set(skipped) == {"zero", "cut", "text", "other"}
    for stem, problem in skipped.items():
        assert f"{stem}.jpg" in problem and bad[stem][1] in problem, problem
    with pytest.raises(ValueError, match=r"zero\.xml: image \S+zero\.jpg is empty"):
        load_voc(devkit, ["VOC2007:images"], strict=True)


def test_image_declaring_too_many_pixels_is_skipped_at_load(devkit):
    from ssd_datasets.image_check import image_file_problem

    path = devkit / "VOC2007" / "JPEGImages" / "000007.jpg"
    assert image_file_problem(str(path), 500, 333) is None
    assert "declares 500x333 = 166,500 pixels, more than the limit of 166,499" in \
        image_file_problem(str(path), 500, 333, max_pixels=500 * 333 - 1)


def test_special_files_are_refused_by_name_without_reading_them(devkit):
    """A JPEGImages entry linking to /dev/zero read 15 GB in 30 s; a FIFO blocked the load forever."""
    folder = devkit / "VOC2007"
    for stem in ("zero", "fifo"):
        write_annotation_text(folder, stem, "<width>400</width><height>300</height>", voc_object("dog", "10"))
        (folder / "JPEGImages" / f"{stem}.jpg").unlink()
    kinds = hf.special_files(folder / "JPEGImages")
    write_set(folder, "special", [*kinds, "000007"])
    body = """
dataset, report = load_voc_with_report(sys.argv[1], ["VOC2007:special"])
result = {"ids": [s.image_id for s in dataset.samples], "issues": [[i.file, i.problem, i.action] for i in report.issues]}
"""
    run = hf.measure("from ssd_datasets.voc import load_voc_with_report", body, devkit)
    assert run["result"]["ids"] == ["000007"]
    issues = {Path(file).stem: (problem, action) for file, problem, action in run["result"]["issues"]}
    for stem, words in kinds.items():
        assert issues[stem] == (f"image {folder / 'JPEGImages' / stem}.jpg {words}", "skipped file")
    assert run["peak_mb"] - run["baseline_mb"] < hf.LOAD_BOUND_MB and run["seconds"] < hf.LOAD_BOUND_S, run
