"""datasets/synthetic.py and tools/make_synthetic_dataset.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from lxml import etree

from ssd_datasets import load_dataset
from ssd_datasets.synthetic import (SYNTHETIC_CATEGORY_IDS, SYNTHETIC_CLASSES, generate_synthetic, generate_synthetic_voc,
                                load_synthetic, render_image)
from ssd_datasets.voc import load_voc_with_report
from ssd.image_io import read_rgb

SIZES = (96, 160)  # small images keep the tests quick
HUES = {"circle": 0, "star": 60, "square": 120, "ring": 180, "triangle": 240, "cross": 300}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_voc(root, num_train=20, num_test=5, seed=7, image_size_range=SIZES)
    return root


def read_set(root: Path, name: str) -> list[str]:
    return (root / "ImageSets" / "Main" / f"{name}.txt").read_text().split()


def test_image_sets(small_set):
    train, val, trainval, test = (read_set(small_set, n) for n in ("train", "val", "trainval", "test"))
    assert len(train) == 18 and len(val) == 2 and trainval == train + val and len(test) == 5
    assert not set(trainval) & set(test)
    for image_id in trainval + test:
        assert (small_set / "JPEGImages" / f"{image_id}.jpg").is_file()
        assert (small_set / "Annotations" / f"{image_id}.xml").is_file()


def test_annotations_use_the_voc_schema(small_set):
    root = etree.parse(str(small_set / "Annotations" / "000001.xml")).getroot()
    assert root.tag == "annotation"
    assert root.findtext("filename") == "000001.jpg" and root.find("folder") is not None
    assert root.findtext("size/depth") == "3"
    objects = root.findall("object")
    assert objects
    for obj in objects:
        assert obj.findtext("name") in SYNTHETIC_CLASSES
        assert obj.findtext("pose") and obj.findtext("truncated") in ("0", "1")
        assert obj.findtext("difficult") in ("0", "1")
        coords = [int(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")]
        assert 1 <= coords[0] <= coords[2] and 1 <= coords[1] <= coords[3]  # 1-based inclusive
        assert coords[2] <= int(root.findtext("size/width")) and coords[3] <= int(root.findtext("size/height"))


def test_loads_cleanly_and_sizes_match_the_jpegs(small_set):
    dataset, report = load_voc_with_report(small_set, ["trainval", "test"], SYNTHETIC_CLASSES, strict=True)
    assert report.issues == [] and len(dataset) == 25
    for sample in dataset.samples[:6]:
        image = read_rgb(sample.image_path)
        assert image.shape == (sample.height, sample.width, 3)
        assert SIZES[0] <= sample.width <= SIZES[1] and SIZES[0] <= sample.height <= SIZES[1]
    assert len(load_synthetic(small_set, "test")) == 5


def test_same_seed_same_bytes_other_seed_differs(small_set, tmp_path):
    again = tmp_path / "again"
    generate_synthetic_voc(again, num_train=20, num_test=5, seed=7, image_size_range=SIZES)
    for sub, ext in (("JPEGImages", "jpg"), ("Annotations", "xml")):
        for path in sorted((small_set / sub).glob(f"*.{ext}")):
            assert path.read_bytes() == (again / sub / path.name).read_bytes(), path.name
    other = tmp_path / "other"
    generate_synthetic_voc(other, num_train=2, num_test=0, seed=8, image_size_range=SIZES)
    assert (other / "JPEGImages" / "000001.jpg").read_bytes() != (again / "JPEGImages" / "000001.jpg").read_bytes()


def class_pixels(image: np.ndarray, shape: str) -> np.ndarray:
    """Saturated pixels within 15 degrees of the class hue: bool [H, W] (independent of the module)."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL).astype(int)  # hue 0..255 for 0..360 degrees
    hue_degrees = hsv[..., 0] * 360 / 256
    distance = np.abs((hue_degrees - HUES[shape] + 180) % 360 - 180)
    return (distance < 15) & (hsv[..., 1] > 120)


def test_boxes_are_tight_around_the_shapes_pixels():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(15):
        image, boxes, names, difficult, _ = render_image(rng, 200, 150)
        # the background is never mistaken for an object colour
        everything = np.zeros(image.shape[:2], bool)
        for shape in SYNTHETIC_CLASSES:
            everything |= class_pixels(image, shape)
        inside = np.zeros_like(everything)
        for x0, y0, x1, y1 in boxes.astype(int):
            inside[y0:y1, x0:x1] = True
        assert not np.any(everything & ~inside)
        for (x0, y0, x1, y1), shape in zip(boxes.astype(int), names):
            mine = class_pixels(image, shape)[y0:y1, x0:x1]
            # every edge of the box touches a pixel of the shape's colour
            assert mine[0].any() and mine[-1].any() and mine[:, 0].any() and mine[:, -1].any()
            checked += 1
    assert checked > 20


def test_variety_sizes_difficult_truncated():
    rng = np.random.default_rng(1)
    sides, difficult_all, truncated_all, counts = [], [], [], []
    for _ in range(40):
        _, boxes, names, difficult, truncated = render_image(rng, 400, 320)
        sides += list(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
        difficult_all += difficult
        truncated_all += truncated
        counts.append(len(names))
    sides, difficult_all = np.array(sides), np.array(difficult_all)
    assert min(counts) >= 1 and max(counts) >= 4
    assert 0.03 < difficult_all.mean() < 0.35 and 0.05 < np.mean(truncated_all) < 0.6
    assert sides.max() > 120 and np.median(sides[~difficult_all]) > 40
    # objects smaller than 20 pixels are always difficult
    assert np.all(difficult_all[sides < 20])


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_train"):
        generate_synthetic_voc("unused", num_train=0, num_test=1)
    with pytest.raises(ValueError, match="image_size_range"):
        generate_synthetic_voc("unused", num_train=1, num_test=1, image_size_range=(300, 200))


def test_cli_writes_the_dataset(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "make_synthetic_dataset", Path(__file__).parents[1] / "tools" / "make_synthetic_dataset.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "cli"
    args = ["--out", str(out), "--train", "3", "--test", "2", "--seed", "1"]
    args += ["--min-size", "80", "--max-size", "100", "--quiet"]
    assert tool.main(args) == 0
    assert str(out.resolve()) in capsys.readouterr().out
    assert len(read_set(out, "trainval")) == 3 and len(read_set(out, "test")) == 2
    assert tool.main(["--out", str(out), "--train", "0", "--quiet"]) == 2
    assert tool.main(args[:1] + [str(tmp_path / "yolo"), "--format", "yolo"] + args[2:]) == 0
    assert (tmp_path / "yolo" / "test.txt").read_text() == "images/000004.jpg\nimages/000005.jpg\n"
    assert tool.main(args[:1] + [str(tmp_path / "coco"), "--format", "coco"] + args[2:]) == 0
    assert len(json.loads((tmp_path / "coco" / "annotations" / "instances_test.json").read_text())["images"]) == 2


def test_one_synthetic_set_in_three_formats_loads_to_identical_samples(small_set, tmp_path):
    """The same seed written as VOC, COCO and YOLO: every reader gives the same images and boxes."""
    loaded = {"voc": load_dataset(small_set, ["trainval", "test"], strict=True)}
    for fmt in ("coco", "yolo"):
        generate_synthetic(tmp_path / fmt, fmt, num_train=20, num_test=5, seed=7, image_size_range=SIZES)
        loaded[fmt] = load_dataset(tmp_path / fmt, ["trainval", "test"], strict=True)  # format detected
    assert loaded["coco"].category_ids == SYNTHETIC_CATEGORY_IDS
    for fmt, dataset in loaded.items():
        assert dataset.class_names == SYNTHETIC_CLASSES and len(dataset) == 25
    voc = loaded["voc"].samples
    assert sum(s.difficult.sum() for s in voc) > 0  # the comparison covers difficult objects
    for fmt in ("coco", "yolo"):
        for a, b in zip(voc, loaded[fmt].samples, strict=True):
            assert Path(a.image_path).read_bytes() == Path(b.image_path).read_bytes()
            assert (Path(a.image_path).stem, a.width, a.height) == (Path(b.image_path).stem, b.width, b.height)
            np.testing.assert_array_equal(a.boxes, b.boxes)
            np.testing.assert_array_equal(a.labels, b.labels)
            # COCO carries difficult as iscrowd; YOLO has no such flag.
            expected = a.difficult if fmt == "coco" else np.zeros_like(a.difficult)
            np.testing.assert_array_equal(b.difficult, expected)
    assert [s.image_id for s in loaded["coco"].samples[:2]] == ["1", "2"]  # COCO's integer ids


def test_unknown_format_refused():
    with pytest.raises(ValueError, match=r"format must be one of \('voc', 'coco', 'yolo'\), got 'kitti'"):
        generate_synthetic("unused", "kitti")


def test_layout_recognition_names_what_it_looked_for(tmp_path):
    from ssd_datasets.exports import recognise

    with pytest.raises(FileNotFoundError, match="does not exist"):
        recognise(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a dataset export this library knows"):
        recognise(tmp_path)
    (tmp_path / "VOC2007" / "Annotations").mkdir(parents=True)
    (tmp_path / "VOC2007" / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "VOC2007" / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    assert (recognise(tmp_path).tool, recognise(tmp_path).format) == ("VOCdevkit", "voc")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text("{}")
    assert recognise(tmp_path).format == "coco"
