"""Datasets written in labelling tools' export layouts, as each tool's documentation describes them.

Images are drawn with OpenCV (each object a filled rectangle of its class colour) so every box is
known; annotations are written here in the tool's own conventions, independently of the
library's writers: Ultralytics (data.yaml with path: and a names map; label lines with trailing
spaces and blank lines; .jpeg and .png), Roboflow COCO (train/ valid/ test/ with
_annotations.coco.json and a supercategory entry), CVAT "COCO 1.0" (annotations/instances_default.json
+ images/ or images/default/), Label Studio COCO (result.json + images/, ids from 0) and LabelImg
(Pascal VOC XML beside the images or in a folder of its own, no ImageSets).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

# (file stem, (width, height), [(class name, x0, y0, x1, y1) in 0-based continuous pixels])
IMAGES = [
    ("a", (64, 48), [("circle", 4, 6, 20, 22), ("square", 30, 10, 50, 40)]),
    ("b", (80, 60), [("triangle", 10, 10, 40, 50)]),
    ("c", (56, 56), [("square", 0, 0, 28, 28), ("triangle", 30, 30, 56, 56), ("circle", 8, 34, 20, 46)]),
    ("d", (72, 40), []),
]
COLOURS = {"circle": (0, 0, 255), "square": (0, 255, 0), "triangle": (255, 0, 0)}


def draw(path: Path, size: tuple[int, int], objects: list) -> None:
    """An image with each object drawn as a filled rectangle of its class colour."""
    image = np.full((size[1], size[0], 3), 127, np.uint8)
    for name, x0, y0, x1, y1 in objects:
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), COLOURS[name], thickness=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def coco_json(images, categories: list[dict], file_name=lambda stem: f"{stem}.jpg", image_id=lambda k: k,
              start_annotation: int = 1) -> dict:
    """A COCO detection file for `images` (category ids by name from `categories`)."""
    ids = {c["name"]: c["id"] for c in categories}
    entries, annotations = [], []
    for k, (stem, (w, h), objects) in enumerate(images):
        entries.append({"id": image_id(k), "file_name": file_name(stem), "width": w, "height": h})
        for name, x0, y0, x1, y1 in objects:
            annotations.append({"id": start_annotation + len(annotations), "image_id": image_id(k),
                                "category_id": ids[name], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": (x1 - x0) * (y1 - y0), "iscrowd": 0, "segmentation": []})
    return {"info": {}, "licenses": [], "images": entries, "annotations": annotations, "categories": categories}


def write_cvat_coco(root: Path, image_folder: str = "images") -> Path:
    """CVAT "COCO 1.0", one subset ("default"), categories 1.. in the task's label order."""
    categories = [{"id": k + 1, "name": n, "supercategory": ""} for k, n in enumerate(CVAT_CLASSES)]
    for stem, size, objects in IMAGES:
        draw(root / image_folder / f"{stem}.jpg", size, objects)
    (root / "annotations").mkdir(parents=True)
    text = json.dumps(coco_json(IMAGES, categories, image_id=lambda k: k + 1))
    (root / "annotations" / "instances_default.json").write_text(text)
    return root


CVAT_CLASSES = ("triangle", "circle", "square")
LABEL_STUDIO_CLASSES = ("circle", "square", "triangle")


def write_label_studio(root: Path, file_name=lambda stem: f"images/{stem}.jpg") -> Path:
    """Label Studio "COCO": result.json + images/, image and category ids from 0."""
    for stem, size, objects in IMAGES:
        draw(root / "images" / f"{stem}.jpg", size, objects)
    categories = [{"id": k, "name": n} for k, n in enumerate(LABEL_STUDIO_CLASSES)]
    (root / "result.json").write_text(json.dumps(coco_json(IMAGES, categories, file_name, start_annotation=0)))
    return root


ULTRALYTICS_CLASSES = ("square", "circle", "triangle")


def write_ultralytics(tmp_path: Path) -> Path:
    """configs/data.yaml pointing (path: ../shapes) at images/{train,val} + labels/{train,val}."""
    root = tmp_path / "shapes"
    names = list(ULTRALYTICS_CLASSES)  # the tool's order, not alphabetical
    for split, members in (("train", IMAGES[:3]), ("val", IMAGES[3:])):
        for stem, (w, h), objects in members:
            suffix = ".png" if stem == "b" else ".jpeg"
            draw(root / "images" / split / f"{stem}{suffix}", (w, h), objects)
            lines = [f"{names.index(n)} {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}   "
                     for n, x0, y0, x1, y1 in objects]
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{stem}.txt").write_text("\n\n".join(lines) + "\n\n")
    (tmp_path / "configs").mkdir()
    yaml = tmp_path / "configs" / "data.yaml"
    yaml.write_text("# Ultralytics dataset\npath: ../shapes  # dataset root dir\ntrain: images/train\n"
                    "val: images/val  # val images\ntest:  # optional\n\nnames:\n  0: square\n  1: circle\n"
                    "  2: triangle\n")
    return yaml


ROBOFLOW_CATEGORIES = [{"id": 0, "name": "shapes", "supercategory": "none"},
                       {"id": 1, "name": "circle", "supercategory": "shapes"},
                       {"id": 2, "name": "square", "supercategory": "shapes"},
                       {"id": 3, "name": "triangle", "supercategory": "shapes"}]


def write_roboflow(tmp_path: Path) -> Path:
    root = tmp_path / "roboflow"
    for split, members in (("train", IMAGES[:2]), ("valid", IMAGES[2:3]), ("test", IMAGES[3:])):
        for stem, size, objects in members:
            draw(root / split / f"{stem}.jpg", size, objects)
        text = json.dumps(coco_json(members, ROBOFLOW_CATEGORIES))
        (root / split / "_annotations.coco.json").write_text(text)
    return root


LABELIMG_XML = """<annotation verified="yes">
\t<folder>{folder}</folder>
\t<filename>{stem}.jpg</filename>
\t<path>/home/someone/shapes/{stem}.jpg</path>
\t<source>
\t\t<database>Unknown</database>
\t</source>
\t<size>
\t\t<width>{w}</width>
\t\t<height>{h}</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
{objects}</annotation>
"""
LABELIMG_OBJECT = """\t<object>
\t\t<name>{name}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>{xmin}</xmin>
\t\t\t<ymin>{ymin}</ymin>
\t\t\t<xmax>{xmax}</xmax>
\t\t\t<ymax>{ymax}</ymax>
\t\t</bndbox>
\t</object>
"""


def write_labelimg(root: Path, xml_folder: str = "photos", image_folder: str = "photos") -> Path:
    for stem, (w, h), objects in IMAGES:
        draw(root / image_folder / f"{stem}.jpg", (w, h), objects)
        text = "".join(LABELIMG_OBJECT.format(name=n, xmin=x0 + 1, ymin=y0 + 1, xmax=x1, ymax=y1)  # 1-based
                       for n, x0, y0, x1, y1 in objects)
        (root / xml_folder).mkdir(parents=True, exist_ok=True)
        (root / xml_folder / f"{stem}.xml").write_text(LABELIMG_XML.format(folder=image_folder, stem=stem, w=w, h=h,
                                                                           objects=text))
    return root
