"""datasets/yolo.py against a hand-written YOLO dataset (tests/fixtures/yolo) with real image headers."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import hostile_files as hf
import numpy as np
import pytest

from ssd_datasets.yolo import label_path, load_yolo, load_yolo_with_report, parse_yaml_names, write_yolo_labels

FIXTURE = Path(__file__).parent / "fixtures" / "yolo"


@pytest.fixture
def yolo(tmp_path: Path) -> Path:
    root = tmp_path / "yolo"
    shutil.copytree(FIXTURE, root)
    return root


def by_id(dataset):
    return {s.image_id: s for s in dataset.samples}


def test_normalised_centres_become_pixels_with_sizes_from_the_headers(yolo):
    dataset = load_yolo(yolo, [""])
    assert dataset.class_names == ("cat", "dog", "traffic light")
    assert sorted(by_id(dataset)) == ["a", "b", "c", "d"]
    a = by_id(dataset)["a"]
    assert (a.width, a.height) == (64, 48)  # a.png's IHDR
    # class 0 at (0.5, 0.5) size (0.25, 0.5) of 64x48 -> x 24..40, y 12..36; class 2 at the corner.
    np.testing.assert_array_equal(a.boxes, [[24, 12, 40, 36], [0, 0, 16, 24]])
    assert a.labels.tolist() == [1, 3] and not a.difficult.any()
    assert (by_id(dataset)["b"].width, by_id(dataset)["b"].height) == (40, 30)  # b.jpg's SOF


def test_empty_and_missing_label_files_are_negatives(yolo):
    dataset, report = load_yolo_with_report(yolo, [""])
    assert len(by_id(dataset)["b"].labels) == 0  # empty labels/b.txt
    assert len(by_id(dataset)["d"].labels) == 0  # no labels/d.txt
    assert sorted(report.empty_images) == ["b", "d"]


def test_bad_lines_are_reported_and_skipped(yolo):
    dataset, report = load_yolo_with_report(yolo, [""])
    c = by_id(dataset)["c"]
    np.testing.assert_allclose(c.boxes, [[85, 15, 100, 35]])  # the good last line, clipped at x = 100
    assert c.labels.tolist() == [2]
    labels_c = str(yolo / "labels" / "c.txt")
    found = [(i.file, i.problem.split(":")[0], i.action) for i in report.issues]
    assert found == [
        (labels_c, "line 1 '0 0.5 0.5 0.2'", "skipped object"),
        (labels_c, "line 2 '5 0.5 0.5 0.1 0.1'", "skipped object"),
        (labels_c, "line 3 '1 x 0.5 0.1 0.1'", "skipped object"),
        (labels_c, "line 4 '1 1.5 0.5 0.1 0.1'", "skipped object"),
        (labels_c, "line 5", "skipped object"),
        (labels_c, "line 7", "clipped box"),
    ]
    assert "class 5 is not in 0..2" in report.issues[1].problem
    assert "degenerate box" in report.issues[4].problem
    with pytest.raises(ValueError, match=r"labels/c.txt: line 1 '0 0.5 0.5 0.2': expected 'class cx cy w h'"):
        load_yolo(yolo, [""], strict=True)


def test_unreadable_image_is_skipped(yolo):
    (yolo / "images" / "e.jpg").write_bytes(b"not an image")
    dataset, report = load_yolo_with_report(yolo, [""])
    assert "e" not in by_id(dataset)
    assert [(i.file, i.action) for i in report.issues if "e.jpg" in i.file] == [
        (str(yolo / "images" / "e.jpg"), "skipped file")]


def test_list_file_and_split_folder(yolo):
    (yolo / "val.txt").write_text("images/c.png\n" + str(yolo / "images" / "a.png") + "\n")
    assert [s.image_id for s in load_yolo(yolo, ["val.txt"]).samples] == ["c", "a"]
    (yolo / "images" / "train").mkdir()
    (yolo / "labels" / "train").mkdir()
    shutil.copy(yolo / "images" / "a.png", yolo / "images" / "train" / "a.png")
    shutil.copy(yolo / "labels" / "a.txt", yolo / "labels" / "train" / "a.txt")
    dataset = load_yolo(yolo, ["train"])
    assert [s.image_id for s in dataset.samples] == ["train/a"] and len(dataset.samples[0].labels) == 2
    with pytest.raises(FileNotFoundError, match="neither a list file"):
        load_yolo(yolo, ["test"])


def test_label_path_replaces_the_last_images_folder():
    assert label_path(Path("/d/images/x/images/train/a.jpg")) == Path("/d/images/x/labels/train/a.txt")
    with pytest.raises(ValueError, match="not inside an 'images' folder"):
        label_path(Path("/d/pics/a.jpg"))


@pytest.mark.parametrize("text", [
    "names: ['cat', 'dog', \"traffic light\"]\n",
    "names: [cat, dog, traffic light]  # flow\nnc: 3\n",
    "train: images\nnames:\n  - cat\n  - dog\n  - 'traffic light'\nval: images\n",
    "names:\n  2: traffic light\n  0: cat\n\n  1: dog\nnc: 3\n",
])
def test_yaml_names_in_every_form_ultralytics_writes(tmp_path, text):
    (tmp_path / "data.yaml").write_text(text)
    assert parse_yaml_names(tmp_path / "data.yaml") == ("cat", "dog", "traffic light")


def test_yaml_without_usable_names(tmp_path):
    path = tmp_path / "data.yaml"
    for text, words in (("nc: 2\n", "no 'names:' key"), ("names:\n  0: a\n  2: b\n", r"ids must be 0..1"),
                        ("names: 3\n", "expected a list")):
        path.write_text(text)
        with pytest.raises(ValueError, match=words):
            parse_yaml_names(path)


def test_written_labels_read_back_to_the_same_pixels(yolo):
    boxes = np.array([[3, 7, 41, 29], [0, 0, 64, 48]], np.float64)
    write_yolo_labels(yolo / "labels" / "a.txt", boxes, np.array([3, 1]), 64, 48)
    a = by_id(load_yolo(yolo, [""]))["a"]
    np.testing.assert_array_equal(a.boxes, boxes.astype(np.float32))
    assert a.labels.tolist() == [3, 1]


def test_special_files_truncated_images_and_unreadable_labels_skip_the_image_by_name(yolo):
    """Images that are links to /dev/zero or FIFOs, a truncated JPEG; label files that are not UTF-8,
    a directory, a FIFO: each skips its image with one issue naming the file."""
    images, labels = yolo / "images", yolo / "labels"
    kinds = hf.special_files(images)
    (images / "cut.jpg").write_bytes((images / "b.jpg").read_bytes()[:-40])
    for stem in ("latin1", "folder", "pipe"):
        shutil.copy(images / "b.jpg", images / f"{stem}.jpg")
    (labels / "latin1.txt").write_bytes("0 0.5 0.5 0.1 0.1 # caf\xe9\n".encode("latin-1"))
    (labels / "folder.txt").mkdir()
    os.mkfifo(labels / "pipe.txt")
    expected = {"zero.jpg": f"image {images / 'zero.jpg'} {kinds['zero']}",
                "fifo.jpg": f"image {images / 'fifo.jpg'} {kinds['fifo']}",
                "cut.jpg": f"image {images / 'cut.jpg'} is a JPEG without its end marker: truncated (a partial copy or download?)",
                "latin1.jpg": f"label file {labels / 'latin1.txt'} is not UTF-8 text (byte 23: invalid continuation byte)",
                "folder.jpg": f"label file {labels / 'folder.txt'} is a directory, not a regular file",
                "pipe.jpg": f"label file {labels / 'pipe.txt'} is a FIFO (named pipe), not a regular file"}
    body = """
dataset, report = load_yolo_with_report(sys.argv[1], [""])
result = {"ids": sorted(s.image_id for s in dataset.samples), "issues": [[i.file, i.problem, i.action] for i in report.issues]}
"""
    run = hf.measure("from ssd_datasets.yolo import load_yolo_with_report", body, yolo)
    assert run["result"]["ids"] == ["a", "b", "c", "d"]
    issues = {Path(file).name: (problem, action) for file, problem, action in run["result"]["issues"]
              if "labels/c.txt" not in file}
    assert issues == {name: (problem, "skipped file") for name, problem in expected.items()}
    assert run["peak_mb"] - run["baseline_mb"] < hf.LOAD_BOUND_MB and run["seconds"] < hf.LOAD_BOUND_S, run
    (labels / "c.txt").unlink()  # its bad lines would come first
    with pytest.raises(ValueError, match=r"(cut|fifo|zero|latin1|folder|pipe)\.jpg: (image|label file) "):
        load_yolo(yolo, [""], strict=True)


@pytest.mark.parametrize("names, words", [("names: ['a', ' ']", "class 1: name ' ' is empty or only whitespace"),
                                          ("names:\n  0: a\n  1: ''\n", "class 1: name '' is empty"),
                                          ("names: ['a', 'b\\x07c']", "class 1: name 'b\\x07c' contains a line break or control")])
def test_class_names_labels_txt_cannot_hold_are_refused_naming_file_and_id(tmp_path, names, words):
    (tmp_path / "data.yaml").write_text(names.replace("\\x07", "\x07"))
    with pytest.raises(ValueError, match=re.escape(f"data.yaml: {words}")):
        load_yolo(tmp_path, [""])


def test_non_utf8_classes_txt_is_named(tmp_path):
    (tmp_path / "classes.txt").write_bytes("cat\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"classes.txt is not UTF-8"):
        load_yolo(tmp_path, [""])
