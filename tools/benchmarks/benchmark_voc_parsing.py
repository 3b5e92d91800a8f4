"""Benchmark: the dataset sources against the obvious loaders, side by side, one case per format.

voc:  a VOC-format tree of N annotation files (VOC07+12 trainval has 16,551) with VOC-like content
      (1-6 objects, source/owner blocks), pixel-less JPEGs of the annotation's size (header and end
      marker: what the loader's check at load reads);
      `ssd_datasets.voc.load_voc` against a naive xml.etree.ElementTree loader.
coco: one generated instances JSON the size of COCO train2017 (118,287 images, 860,001 boxes, no
      segmentations); `ssd_datasets.coco.load_coco` (image files not checked: none are written)
      against pycocotools' `COCO(path)`, which reads and indexes the same file.
yolo: N tiny real JPEGs and label files; `ssd_datasets.yolo.load_yolo` (sizes from the headers)
      against a loader that decodes every image with OpenCV to learn its size.
Reports the median of --repeats runs, items/s and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any


import cv2
import numpy as np

from ssd_datasets.coco import load_coco
from ssd_datasets.voc import VOC_CLASSES, load_voc
from ssd_datasets.yolo import label_path, load_yolo, write_yolo_labels

_OBJECT = """\t<object>
\t\t<name>{name}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>{truncated}</truncated>
\t\t<difficult>{difficult}</difficult>
\t\t<bndbox>
\t\t\t<xmin>{xmin}</xmin>
\t\t\t<ymin>{ymin}</ymin>
\t\t\t<xmax>{xmax}</xmax>
\t\t\t<ymax>{ymax}</ymax>
\t\t</bndbox>
\t</object>
"""
_HEADER = """<annotation>
\t<folder>VOC2007</folder>
\t<filename>{stem}.jpg</filename>
\t<source>
\t\t<database>The VOC2007 Database</database>
\t\t<annotation>PASCAL VOC2007</annotation>
\t\t<image>flickr</image>
\t\t<flickrid>{flickrid}</flickrid>
\t</source>
\t<owner>
\t\t<flickrid>someone</flickrid>
\t\t<name>Someone</name>
\t</owner>
\t<size>
\t\t<width>{width}</width>
\t\t<height>{height}</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
"""


def jpeg_header(width: int, height: int) -> bytes:
    """A JPEG's start, frame header (baseline, 3 components) and end marker, without pixels: all the
    loader's check at load reads (nothing is decoded)."""
    frame = struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1])
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", 2 + len(frame)) + frame + b"\xff\xd9"


def make_tree(root: Path, num_files: int, seed: int = 0) -> None:
    """A VOC-format folder with `num_files` random annotations and pixel-less JPEGs of their size."""
    rng = np.random.default_rng(seed)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    stems = [f"{i:06d}" for i in range(num_files)]
    for stem in stems:
        width, height = int(rng.integers(300, 501)), int(rng.integers(300, 501))
        parts = [_HEADER.format(stem=stem, flickrid=rng.integers(1e9), width=width, height=height)]
        for _ in range(rng.integers(1, 7)):
            xmin, ymin = int(rng.integers(1, width - 10)), int(rng.integers(1, height - 10))
            parts.append(_OBJECT.format(
                name=VOC_CLASSES[rng.integers(20)], truncated=int(rng.random() < 0.3),
                difficult=int(rng.random() < 0.1), xmin=xmin, ymin=ymin,
                xmax=int(rng.integers(xmin + 1, width + 1)), ymax=int(rng.integers(ymin + 1, height + 1)),
            ))  # fmt: skip
        parts.append("</annotation>\n")
        (root / "Annotations" / f"{stem}.xml").write_text("".join(parts))
        (root / "JPEGImages" / f"{stem}.jpg").write_bytes(jpeg_header(width, height))
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("".join(s + "\n" for s in stems))


def naive_load(root: Path, split: str) -> list[tuple[str, int, int, np.ndarray, np.ndarray, np.ndarray]]:
    """The obvious loader: ElementTree per file, os.path.exists per image, no validation."""
    class_ids = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}
    ids = (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    samples = []
    for stem in ids:
        if not os.path.exists(root / "JPEGImages" / f"{stem}.jpg"):
            continue
        tree = ElementTree.parse(root / "Annotations" / f"{stem}.xml")
        size = tree.find("size")
        boxes, labels, difficult = [], [], []
        for obj in tree.findall("object"):
            box = obj.find("bndbox")
            boxes.append([float(box.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax")])
            labels.append(class_ids[obj.find("name").text.strip()])
            difficult.append(obj.find("difficult").text == "1")
        boxes = np.array(boxes, np.float32).reshape(-1, 4) - np.array([1, 1, 0, 0], np.float32)
        samples.append((stem, int(size.find("width").text), int(size.find("height").text),
                        boxes, np.array(labels, np.int32), np.array(difficult, bool)))  # fmt: skip
    return samples


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_voc(root: Path, repeats: int) -> dict:
    ours = load_voc(root, ["trainval"])
    naive = naive_load(root, "trainval")
    same = len(ours) == len(naive) and all(
        s.image_id == stem and np.array_equal(s.boxes, boxes) and np.array_equal(s.labels, labels)
        for s, (stem, _, _, boxes, labels, _) in zip(ours.samples, naive)
    )
    if not same:
        raise RuntimeError(f"the two loaders disagree on {root}: the comparison would be meaningless")
    result = _timed(len(ours), "files", lambda: load_voc(root, ["trainval"]),
                    lambda: naive_load(root, "trainval"), repeats)
    # the cost of the image check at load, side by side
    result["unchecked_s"] = median_seconds(lambda: load_voc(root, ["trainval"], check_images=False), repeats)
    return result


def make_coco_json(path: Path, num_images: int, num_boxes: int, seed: int = 0) -> None:
    """A COCO instances file with COCO's 80 category ids (1..90 with gaps) and random boxes."""
    rng = np.random.default_rng(seed)
    category_ids = [k for k in range(1, 91) if k not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
    sizes = rng.integers(300, 641, (num_images, 2))
    owners = np.sort(rng.integers(0, num_images, num_boxes))
    x, y = rng.uniform(0, 0.8, num_boxes), rng.uniform(0, 0.8, num_boxes)
    w, h = rng.uniform(0.01, 0.2, num_boxes), rng.uniform(0.01, 0.2, num_boxes)
    scale_w, scale_h = sizes[owners, 0], sizes[owners, 1]
    boxes = np.round(np.stack([x * scale_w, y * scale_h, w * scale_w, h * scale_h], 1), 2).tolist()
    cats = rng.choice(category_ids, num_boxes).tolist()
    crowd = (rng.random(num_boxes) < 0.01).tolist()
    images = [{"id": int(k), "file_name": f"{k:012d}.jpg", "width": int(wh[0]), "height": int(wh[1]),
               "license": 1} for k, wh in enumerate(sizes.tolist())]
    annotations = [{"id": k + 1, "image_id": int(owners[k]), "category_id": cats[k], "bbox": boxes[k],
                    "area": boxes[k][2] * boxes[k][3], "iscrowd": int(crowd[k])} for k in range(num_boxes)]
    categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in category_ids]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def run_coco(path: Path, repeats: int) -> dict:
    from pycocotools.coco import COCO
    import contextlib
    import io

    def pycocotools_index() -> Any:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))

    ours = load_coco(path, path.parent, check_images=False)
    reference = pycocotools_index()
    if len(ours) != len(reference.imgs) or sum(len(s.labels) for s in ours.samples) != len(reference.anns):
        raise RuntimeError(f"load_coco and pycocotools disagree on {path}: the comparison would be meaningless")
    result = _timed(len(ours), "images", lambda: load_coco(path, path.parent, check_images=False),
                    pycocotools_index, repeats)
    result["num_boxes"] = len(reference.anns)
    return result


def make_yolo_tree(root: Path, num_files: int, seed: int = 0) -> None:
    """YOLO images/ (small real JPEGs, 300-500 px) and labels/ with 1-6 objects each."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(name + "\n" for name in VOC_CLASSES))
    for k in range(num_files):
        width, height = (int(v) for v in rng.integers(300, 501, 2))
        image = np.full((height, width, 3), rng.integers(0, 256, 3), np.uint8)
        cv2.imwrite(str(root / "images" / f"{k:06d}.jpg"), image)
        n = int(rng.integers(1, 7))
        x0, y0 = rng.uniform(0, 0.7, n) * width, rng.uniform(0, 0.7, n) * height
        boxes = np.stack([x0, y0, x0 + rng.uniform(5, 0.3 * width, n), y0 + rng.uniform(5, 0.3 * height, n)], 1)
        write_yolo_labels(label_path(root / "images" / f"{k:06d}.jpg"), boxes, rng.integers(1, 21, n), width, height)


def naive_yolo(root: Path) -> list[tuple[str, int, int, np.ndarray]]:
    """The obvious loader: decode each image for its size, np.loadtxt its labels."""
    samples = []
    for image in sorted((root / "images").glob("*.jpg")):
        height, width = cv2.imread(str(image)).shape[:2]
        rows = np.loadtxt(label_path(image), ndmin=2)
        samples.append((image.stem, width, height, rows))
    return samples


def run_yolo(root: Path, repeats: int) -> dict:
    ours, naive = load_yolo(root, [""]), naive_yolo(root)
    if [(s.image_id, s.width, s.height, len(s.labels)) for s in ours.samples] != [
            (stem, w, h, len(rows)) for stem, w, h, rows in naive]:
        raise RuntimeError(f"the two YOLO loaders disagree on {root}: the comparison would be meaningless")
    return _timed(len(ours), "files", lambda: load_yolo(root, [""]), lambda: naive_yolo(root), repeats)


def _timed(count: int, unit: str, ours, baseline, repeats: int) -> dict:
    t_ours, t_base = median_seconds(ours, repeats), median_seconds(baseline, repeats)
    return {"count": count, "unit": unit, "repeats": repeats, "ours_s": t_ours, "baseline_s": t_base,
            "ours_per_s": count / t_ours, "baseline_per_s": count / t_base, "speedup": t_base / t_ours}


CASES = {  # case -> (our loader, the baseline it is timed against)
    "voc": ("ssd_datasets.voc.load_voc (lxml)", "naive ElementTree"),
    "coco": ("ssd_datasets.coco.load_coco", "pycocotools COCO()"),
    "yolo": ("ssd_datasets.yolo.load_yolo", "decode every image"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", nargs="+", choices=tuple(CASES), default=list(CASES), help="formats to time")
    parser.add_argument("--num-files", type=int, default=16551, help="VOC annotation files to generate")
    parser.add_argument("--coco-images", type=int, default=118_287, help="images in the COCO JSON (train2017's)")
    parser.add_argument("--coco-boxes", type=int, default=860_001, help="boxes in the COCO JSON (train2017's)")
    parser.add_argument("--yolo-files", type=int, default=2000, help="YOLO images and label files to generate")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per loader (median reported)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the data (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        if "voc" in args.case:
            if not (work / "voc" / "ImageSets" / "Main" / "trainval.txt").is_file():
                print(f"writing {args.num_files} VOC annotation files ...")
                make_tree(work / "voc", args.num_files)
            results["voc"] = run_voc(work / "voc", args.repeats)
        if "coco" in args.case:
            path = work / "coco" / "annotations" / "instances_train.json"
            if not path.is_file():
                print(f"writing a COCO JSON of {args.coco_images} images and {args.coco_boxes} boxes ...")
                make_coco_json(path, args.coco_images, args.coco_boxes)
            results["coco"] = run_coco(path, args.repeats)
        if "yolo" in args.case:
            if not (work / "yolo" / "images").is_dir():
                print(f"writing {args.yolo_files} YOLO images and label files ...")
                make_yolo_tree(work / "yolo", args.yolo_files)
            results["yolo"] = run_yolo(work / "yolo", args.repeats)
    print(f"\nDataset loading, median of {args.repeats} runs")
    print(f"{'case':<6}{'loader':<32}{'count':>10}{'seconds':>10}{'items/s':>12}{'ratio':>8}")
    for case, r in results.items():
        ours, baseline = CASES[case]
        print(f"{case:<6}{ours:<32}{r['count']:>10,}{r['ours_s']:>10.3f}{r['ours_per_s']:>12,.0f}{r['speedup']:>8.2f}")
        if "unchecked_s" in r:
            t = r["unchecked_s"]
            print(f"{'':<6}{'  the same, check_images=False':<32}{r['count']:>10,}{t:>10.3f}{r['count'] / t:>12,.0f}"
                  f"{r['baseline_s'] / t:>8.2f}")
        print(f"{'':<6}{baseline:<32}{r['count']:>10,}{r['baseline_s']:>10.3f}{r['baseline_per_s']:>12,.0f}{1.0:>8.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
