"""Exports as labelling tools write them (layouts from each tool's documentation), read with no split flags.

Each fixture draws its images with OpenCV and writes the annotations in the tool's own layout and
conventions, independently of the library's writers; the expected boxes are the drawn ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ssd_datasets import load_dataset, load_train_val
from ssd_datasets.classes import select_classes
from ssd_datasets.exports import recognise
from tests.export_fixtures import (CVAT_CLASSES, IMAGES, LABEL_STUDIO_CLASSES, ULTRALYTICS_CLASSES, coco_json,
                                   write_cvat_coco, write_label_studio, write_labelimg, write_roboflow,
                                   write_ultralytics)

def expected(images=IMAGES, names=None) -> dict[str, tuple]:
    """{stem: (width, height, boxes, class names)} of the fixture."""
    return {stem: (size, [o[1:] for o in objs if names is None or o[0] in names],
                   [o[0] for o in objs if names is None or o[0] in names]) for stem, size, objs in images}


def check(dataset, images=IMAGES, names=None) -> None:
    """The dataset holds exactly the drawn images and boxes, classes by name."""
    want = expected(images, names)
    got = {Path(s.image_path).stem: s for s in dataset.samples}
    assert sorted(got) == sorted(want)
    for stem, (size, boxes, labels) in want.items():
        sample = got[stem]
        assert (sample.width, sample.height) == size
        np.testing.assert_allclose(sample.boxes, np.array(boxes, np.float32).reshape(-1, 4), atol=1e-4)
        assert [dataset.class_names[k - 1] for k in sample.labels.tolist()] == labels


# --- Ultralytics YOLO: data.yaml with path: and a names map; labels with trailing spaces, blank lines


def test_ultralytics_data_yaml(tmp_path):
    yaml = write_ultralytics(tmp_path)
    data = load_train_val(yaml)
    assert data.train.class_names == ULTRALYTICS_CLASSES
    assert (data.train_splits, data.val_splits) == (("train",), ("val",))
    check(data.train, IMAGES[:3])
    check(data.val, IMAGES[3:])
    assert recognise(yaml).tool == "Ultralytics YOLO"


@pytest.mark.parametrize("yaml_text, message", [
    ("train: images/train\nval: images/val\n", r"data.yaml: no 'names:' key: add the class names"),
    ("train: images/train\nnc: 2\nnames: [a, b, c]\n", r"data.yaml: nc is 2 but names lists 3 classes"),
    ("val: images/val\nnames: [a]\n", r"data.yaml: no 'train:' key"),
])
def test_ultralytics_misconfiguration_named(tmp_path, yaml_text, message):
    (tmp_path / "data.yaml").write_text(yaml_text)
    with pytest.raises(ValueError, match=message):
        load_train_val(tmp_path / "data.yaml")


def test_ultralytics_split_folder_missing_named(tmp_path):
    yaml = write_ultralytics(tmp_path)
    yaml.write_text(yaml.read_text().replace("val: images/val", "val: images/valid"))
    with pytest.raises(FileNotFoundError, match=r"shapes/images/valid: no such folder or list file"):
        load_train_val(yaml)


# --- Roboflow COCO: train/ valid/ test/, each _annotations.coco.json with its images beside it

def test_roboflow_coco(tmp_path, caplog):
    root = write_roboflow(tmp_path)
    with caplog.at_level("INFO", logger="ssd_datasets"):
        load_dataset(root, ["train", "valid", "test"])
    said = [r.getMessage() for r in caplog.records if "supercategory" in r.getMessage()]
    assert len(said) == 1 and "category 'shapes' (id 0) is the other categories' supercategory" in said[0]
    data = load_train_val(root)
    assert data.train.class_names == ("circle", "square", "triangle")  # "shapes" is their supercategory
    assert data.train.category_ids == (1, 2, 3)
    assert (data.train_splits, data.val_splits) == (("train",), ("valid",))
    check(data.train, IMAGES[:2])
    check(data.val, IMAGES[2:3])


def test_classes_select_and_order_on_any_format(tmp_path):
    root = write_roboflow(tmp_path)
    dataset = load_dataset(root, ["train", "valid"], "triangle,circle")
    assert dataset.class_names == ("triangle", "circle") and dataset.category_ids == (3, 1)
    check(dataset, IMAGES[:3], names={"triangle", "circle"})
    with pytest.raises(ValueError, match=r"--classes: hexagon not among the dataset's classes circle, square, "
                                         r"triangle"):
        load_dataset(root, ["train"], "circle,hexagon")


def test_dropped_classes_counted_in_the_summary(tmp_path, caplog):
    root = write_roboflow(tmp_path)
    with caplog.at_level("INFO", logger="ssd_datasets"):
        load_dataset(root, ["train"], "circle")
    assert "2 objects of other classes left out (1 square, 1 triangle)" in caplog.text


# --- CVAT "COCO 1.0": annotations/instances_<subset>.json + images/ (or images/<subset>/)

@pytest.mark.parametrize("image_folder", ["images", "images/default"])
def test_cvat_coco(tmp_path, image_folder):
    root = write_cvat_coco(tmp_path / "cvat", image_folder)
    data = load_train_val(root)
    assert data.train.class_names == CVAT_CLASSES and data.val is None
    check(data.train)
    held = load_train_val(root, val_fraction=0.25, seed=3)
    assert (len(held.train), len(held.val)) == (3, 1)
    assert sorted(s.image_id for s in held.train.samples + held.val.samples) == ["1", "2", "3", "4"]
    again = load_train_val(root, val_fraction=0.25, seed=3)
    assert [s.image_id for s in again.val.samples] == [s.image_id for s in held.val.samples]  # seeded


# --- Label Studio "COCO": result.json + images/, file_name with or without "images/"

@pytest.mark.parametrize("file_name", [lambda s: f"images/{s}.jpg", lambda s: f"{s}.jpg",
                                       lambda s: f"images\\{s}.jpg"], ids=["prefixed", "bare", "windows"])
def test_label_studio_coco(tmp_path, file_name):
    root = write_label_studio(tmp_path / "label-studio", file_name)
    for path in (root, root / "result.json"):
        data = load_train_val(path)
        assert data.train.class_names == LABEL_STUDIO_CLASSES and data.val is None
        check(data.train)


def test_image_folder_not_found_lists_where_it_looked(tmp_path):
    root = tmp_path / "label-studio"
    categories = [{"id": 0, "name": "circle"}]
    (root / "images").mkdir(parents=True)
    (root / "result.json").write_text(json.dumps(coco_json(IMAGES[:1], categories[:1] + [
        {"id": 1, "name": "square"}])))
    with pytest.raises(FileNotFoundError, match=r"result.json: none of its 1 images was found \(e.g. .*a.jpg\); "
                                                r"looked in .*label-studio, .*label-studio/images"):
        load_train_val(root)


# --- LabelImg: VOC XML beside each image, or in a folder of its own; no ImageSets

@pytest.mark.parametrize("xml_folder, image_folder", [("photos", "photos"), ("annotations", "images")],
                         ids=["beside", "own-folder"])
def test_labelimg_folder(tmp_path, caplog, xml_folder, image_folder):
    root = tmp_path / "labelimg"
    write_labelimg(root, xml_folder, image_folder)
    with caplog.at_level("INFO", logger="ssd_datasets"):
        data = load_train_val(root)
    assert data.train.class_names == ("circle", "square", "triangle") and data.val is None
    assert "classes found in the XML files" in caplog.text and "circle, square, triangle" in caplog.text
    check(data.train)


def test_voc_image_sets_split_missing_names_the_splits(tmp_path):
    root = tmp_path / "voc"
    write_labelimg(root, "Annotations", "JPEGImages")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("c\nd\n")
    data = load_train_val(root)
    check(data.train, IMAGES[:2])
    check(data.val, IMAGES[2:])
    with pytest.raises(FileNotFoundError, match=r"no split 'test'; its splits: train, val"):
        load_train_val(root, ["train"], ["test"])


def test_select_classes_maps_a_superset_in_another_order():
    """A run's classes (square, circle) on data with (circle, square, triangle): labels follow the names."""
    from ssd.records import DetectionDataset, Sample

    sample = Sample("1", "x.jpg", 10, 10, np.array([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]], np.float32),
                    np.array([1, 2, 3], np.int32), np.zeros(3, bool))
    data = DetectionDataset(("circle", "square", "triangle"), (sample,), (7, 3, 90))
    chosen = select_classes(data, ("square", "circle", "hexagon"), allow_missing=True)
    assert chosen.dataset.class_names == ("square", "circle", "hexagon")
    assert chosen.dataset.category_ids == (3, 7, 91)  # the dataset's own; a new id for the missing class
    assert chosen.dataset.samples[0].labels.tolist() == [2, 1]
    assert chosen.dropped == {"triangle": 1} and chosen.missing == ("hexagon",)


def test_a_runs_classes_in_another_order_or_missing_are_matched_by_name(tmp_path, caplog):
    """Resuming a run on data that lists its classes otherwise: labels follow the names; a class of the
    run the data lacks is reported (no objects), not refused."""
    root = write_labelimg(tmp_path / "labelimg")
    with caplog.at_level("WARNING", logger="ssd_datasets"):
        data = load_train_val(root, class_names=("triangle", "hexagon", "circle"), run_classes=True)
    assert data.train.class_names == ("triangle", "hexagon", "circle")
    check(data.train, names={"triangle", "circle"})
    assert "the run's classes: classes hexagon are not in the data" in caplog.text
    with pytest.raises(ValueError, match="--classes: hexagon not among the dataset's classes"):
        load_train_val(root, class_names=("triangle", "hexagon"))


def test_ultralytics_lists_of_entries_list_files_and_parent_paths(tmp_path):
    """`train:` as a list of a folder and a list file ("./" lines relative to it); Roboflow's YOLO
    export writes `../train/images` relative to a yaml beside train/ (Ultralytics drops the ../)."""
    write_ultralytics(tmp_path)
    root = tmp_path / "shapes"
    (root / "extra.txt").write_text("./images/val/d.jpeg\n")
    (root / "data.yaml").write_text("train: [images/train, extra.txt]\nval: ../images/val\nnc: 3\n"
                                    "names: ['square', 'circle', 'triangle']\n")
    data = load_train_val(root / "data.yaml")
    check(data.train)
    check(data.val, IMAGES[3:])
