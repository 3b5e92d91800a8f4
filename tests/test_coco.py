"""datasets/coco.py against a hand-written COCO instances file (tests/fixtures/coco)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import hostile_files as hf
import numpy as np
import pytest
from image_bombs import jpeg_bomb, png_header

from ssd_datasets.coco import default_image_dir, load_coco, load_coco_with_report, write_coco_json

FIXTURE = Path(__file__).parent / "fixtures" / "coco"
MISSING_IMAGE = "000000000009.jpg"


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    """A copy of the fixture with image placeholders in <root>/val (all but image 9's): a JPEG header
    declaring the entry's size and the end marker, no pixels (the load check decodes nothing)."""
    root = tmp_path / "coco"
    shutil.copytree(FIXTURE, root)
    (root / "val").mkdir()
    for entry in json.loads((root / "annotations" / "instances_val.json").read_text())["images"]:
        if entry["file_name"] != MISSING_IMAGE:
            (root / "val" / entry["file_name"]).write_bytes(jpeg_bomb(entry.get("width", 1), entry.get("height", 1)))
    return root / "annotations" / "instances_val.json"


def by_id(dataset):
    return {s.image_id: s for s in dataset.samples}


def test_categories_in_file_order_with_their_original_ids(coco):
    dataset = load_coco(coco)
    assert dataset.class_names == ("car", "person", "toothbrush")
    assert dataset.category_ids == (3, 1, 90)  # the gap (90 for the third class) is kept


def test_bbox_xywh_becomes_xyxy_pixels_and_labels_follow_file_order(coco):
    sample = by_id(load_coco(coco))["397133"]
    assert (sample.width, sample.height) == (640, 427)
    assert sample.image_path == str(coco.parent.parent / "val" / "000000397133.jpg")
    np.testing.assert_allclose(sample.boxes, [[102.49, 118.47, 102.49 + 7.9, 118.47 + 17.31],
                                              [0, 10, 640, 110], [300, 200, 500, 350]], rtol=1e-6)
    assert sample.labels.tolist() == [2, 3, 2]  # person is the file's second category, toothbrush the third
    assert sample.difficult.tolist() == [False, False, True]  # the crowd object is an ignore region


def test_crowd_objects_left_out_for_training(coco):
    dataset, report = load_coco_with_report(coco, include_crowd=False)
    sample = by_id(dataset)["397133"]
    assert sample.labels.tolist() == [2, 3] and not sample.difficult.any()
    assert report.dropped_crowd == 1


def test_image_without_annotations_kept_as_negative_or_left_out(coco):
    dataset, report = load_coco_with_report(coco)
    assert len(by_id(dataset)["42"].labels) == 0
    assert report.empty_images == ["42"]
    dataset, report = load_coco_with_report(coco, include_empty=False)
    assert "42" not in by_id(dataset) and report.dropped_empty == 1


def test_bad_data_is_reported_and_skipped(coco):
    dataset, report = load_coco_with_report(coco)
    assert sorted(by_id(dataset)) == ["397133", "42", "7"]
    seven = by_id(dataset)["7"]
    assert seven.image_path.endswith("000000000007.jpg")  # the first entry of the repeated id
    np.testing.assert_array_equal(seven.boxes, [[250, 150, 300, 200]])  # clipped to the 300x200 image
    assert seven.labels.tolist() == [1]
    problems = [(issue.problem, issue.action) for issue in report.issues]
    assert all(issue.file == str(coco) for issue in report.issues)

    def has(words: str, action: str) -> bool:
        return any(words in p and a == action for p, a in problems)

    assert has("duplicate image id 7", "skipped file")
    assert has(f"{MISSING_IMAGE} is missing", "skipped file")
    assert has("size must be whole numbers of 1..65535 pixels per side, got 100x0", "skipped file")
    assert has("image entry 6 needs id, file_name, width and height", "skipped file")
    assert has("refers to image id 999", "skipped object")
    assert has("unknown category id 2", "skipped object")
    assert has("bbox must be 4 numbers", "skipped object")
    assert has("degenerate box xywh=[10.0, 10.0, 0.0, 20.0]", "skipped object")
    assert has("outside the 300x200 image", "skipped object")
    assert has("annotation 3 (image 7): box xywh=[250.0, 150.0, 100.0, 80.0] crosses the border of the "
               "300x200 image", "clipped box")
    assert len(problems) == 11
    # Annotations of the skipped image 9 are reported as such, not silently dropped.
    assert any("annotation 9 (id 10): refers to image id 9" in p for p, _ in problems)


def test_strict_refuses_the_first_problem(coco):
    with pytest.raises(ValueError, match=r"instances_val.json: duplicate image id 7"):
        load_coco(coco, strict=True)


def test_unsound_categories_and_files_are_errors(tmp_path):
    path = tmp_path / "instances_x.json"
    (tmp_path / "images").mkdir()
    for categories, words in (([], "names no classes"), ([{"id": 1, "name": "a"}, {"id": 1, "name": "b"}],
                                                          r"category ids must be unique, \[1\] repeat"),
                              ([{"name": "a"}], "needs an integer 'id'")):
        path.write_text(json.dumps({"images": [], "annotations": [], "categories": categories}))
        with pytest.raises(ValueError, match=words):
            load_coco(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a COCO object"):
        load_coco(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_coco(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_coco(tmp_path / "nope.json")


def test_default_image_dir(tmp_path):
    (tmp_path / "annotations").mkdir()
    with pytest.raises(FileNotFoundError, match="no image folder"):
        default_image_dir(tmp_path / "annotations" / "instances_train2017.json")
    (tmp_path / "images").mkdir()
    assert default_image_dir(tmp_path / "annotations" / "instances_train2017.json") == tmp_path / "images"
    (tmp_path / "train2017").mkdir()
    assert default_image_dir(tmp_path / "annotations" / "instances_train2017.json") == tmp_path / "train2017"


def test_write_then_load_round_trip(coco, tmp_path):
    dataset = load_coco(coco)
    out = tmp_path / "annotations" / "instances_copy.json"
    out.parent.mkdir()
    write_coco_json(out, dataset.class_names, dataset.samples, dataset.category_ids)
    again = load_coco(out, coco.parent.parent / "val")
    assert again.class_names == dataset.class_names and again.category_ids == dataset.category_ids
    for a, b in zip(dataset.samples, again.samples, strict=True):
        assert (a.image_id, a.image_path, a.width, a.height) == (b.image_id, b.image_path, b.width, b.height)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
        assert a.labels.tolist() == b.labels.tolist() and a.difficult.tolist() == b.difficult.tolist()


def jpeg_bytes(width: int, height: int) -> bytes:
    return cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))[1].tobytes()


def coco_file(path: Path, images: list[dict], categories: list[dict] | None = None) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": [],
                                "categories": categories or [{"id": 1, "name": "a"}]}))
    return path


def test_images_get_the_header_end_marker_size_and_folder_checks(tmp_path):
    """What VOC skips, COCO skips too: each entry names its image and what is wrong."""
    folder = tmp_path / "images"
    folder.mkdir()
    whole = jpeg_bytes(40, 30)
    files = {"ok.jpg": whole, "other.jpg": jpeg_bytes(30, 40), "empty.jpg": b"", "cut.jpg": whole[: len(whole) // 2],
             "huge.png": png_header(70000, 2)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    entries = {"ok.jpg": (40, 30, None),
               "other.jpg": (40, 30, "is 30x40, the annotation's size says 40x30"),
               "empty.jpg": (40, 30, "is empty (0 bytes)"),
               "cut.jpg": (40, 30, "a JPEG without its end marker: truncated"),
               "huge.png": (70000, 2, "size must be whole numbers of 1..65535 pixels per side, got 70000x2"),
               "/etc/hostname": (40, 30, "file_name '/etc/hostname' leaves the image folder"),
               "../ok.jpg": (40, 30, "file_name '../ok.jpg' leaves the image folder")}
    images = [{"id": k, "file_name": name, "width": w, "height": h} for k, (name, (w, h, _)) in enumerate(entries.items())]
    images.append({"id": 99, "file_name": "ok.jpg", "width": float("inf"), "height": 30})  # json writes Infinity
    path = coco_file(tmp_path / "instances_x.json", images)
    path.write_text(path.read_text().replace("Infinity", "1e400"))
    dataset, report = load_coco_with_report(path, folder)
    assert [s.image_id for s in dataset.samples] == ["0"]
    problems = [issue.problem for issue in report.issues]
    assert all(issue.file == str(path) and issue.action == "skipped file" for issue in report.issues)
    for k, (name, (_, _, words)) in enumerate(entries.items()):
        if words:
            assert any(p.startswith(f"image {k} ({name}): ") and words in p for p in problems), (name, problems)
    assert any(p.startswith("image 99 (ok.jpg): size must be whole numbers") and "inf" in p for p in problems)
    with pytest.raises(ValueError, match=r"instances_x.json: image 1 \(other.jpg\): image \S+other.jpg is 30x40"):
        load_coco(path, folder, strict=True)


def test_special_image_files_are_refused_by_name_without_reading_them(tmp_path):
    folder = tmp_path / "images"
    kinds = hf.special_files(folder)
    path = coco_file(tmp_path / "instances_x.json",
                     [{"id": k, "file_name": f"{stem}.jpg", "width": 40, "height": 30} for k, stem in enumerate(kinds)])
    body = """
dataset, report = load_coco_with_report(sys.argv[1], sys.argv[2])
result = {"ids": [s.image_id for s in dataset.samples], "issues": [i.problem for i in report.issues]}
"""
    run = hf.measure("from ssd_datasets.coco import load_coco_with_report", body, path, folder)
    assert run["result"]["ids"] == []
    for k, (stem, words) in enumerate(kinds.items()):
        assert f"image {k} ({stem}.jpg): image {folder / stem}.jpg {words}" in run["result"]["issues"]
    assert run["peak_mb"] - run["baseline_mb"] < hf.LOAD_BOUND_MB and run["seconds"] < hf.LOAD_BOUND_S, run


def test_deeply_nested_json_is_a_clear_error(tmp_path):
    path = tmp_path / "instances_deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"instances_deep.json: JSON nested too deeply"):
        load_coco(path, tmp_path)


@pytest.mark.parametrize("name, words", [("", "'' is empty or only whitespace"), ("  ", "is empty or only whitespace"),
                                         ("cat\ndog", "contains a line break"), ("cat\u2028", "contains a line break"),
                                         (" cat", "leading or trailing whitespace"), (7, "7 is of type int, not text")])
def test_category_names_that_labels_txt_cannot_hold_are_refused(tmp_path, name, words):
    path = coco_file(tmp_path / "instances_x.json", [], [{"id": 1, "name": "a"}, {"id": 5, "name": name}])
    with pytest.raises(ValueError, match=re.escape("instances_x.json: category 5: name ") + ".*" + re.escape(words)):
        load_coco(path, tmp_path)
