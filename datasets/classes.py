"""Choosing and ordering a dataset's classes by name.

Every source reads a dataset with its own classes (data.yaml's names, the COCO categories, the
VOC names). `select_classes` then makes the classes a given list, by name and in its order:
`--classes circle,square` on any format, or a trained run's classes when it is evaluated or
fine-tuned on data that lists them in another order or has more. Objects of classes left out
are dropped and counted per class; COCO category ids follow their class, so results keep the
dataset's own ids.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ssd.records import DetectionDataset


@dataclasses.dataclass(frozen=True)
class ClassSelection:
    """A dataset relabelled to chosen classes, with what the relabelling left out."""

    dataset: DetectionDataset
    dropped: dict[str, int]  # objects left out, by their class name
    missing: tuple[str, ...]  # chosen classes the dataset does not have


def select_classes(dataset: DetectionDataset, class_names: Sequence[str], what: str = "--classes",
                   allow_missing: bool = False) -> ClassSelection:
    """`dataset` with classes 1..C = `class_names` (matched by name).

    Args:
        class_names: the classes wanted, in the wanted order.
        what: how the error names the list ("--classes", "the run's classes").
        allow_missing: a wanted class the dataset lacks is reported in `missing` (it gets no
            objects; a new category id above the dataset's if it has ids) instead of refused.
    """
    wanted = tuple(class_names)
    repeated = sorted({n for n in wanted if wanted.count(n) > 1})
    if not wanted or repeated:
        raise ValueError(f"{what}: expected distinct class names, got {list(wanted)}")
    missing = tuple(n for n in wanted if n not in dataset.class_names)
    if missing and not allow_missing:
        raise ValueError(f"{what}: {', '.join(missing)} not among the dataset's classes "
                         f"{', '.join(dataset.class_names)}: name classes of the dataset")
    if wanted == dataset.class_names:
        return ClassSelection(dataset, {}, ())
    new_label = {name: k + 1 for k, name in enumerate(wanted)}
    lookup = np.array([0] + [new_label.get(n, 0) for n in dataset.class_names], np.int32)
    dropped: Counter[str] = Counter()
    samples = []
    for sample in dataset.samples:
        labels = lookup[sample.labels]
        keep = labels > 0
        if not keep.all():
            dropped.update(dataset.class_names[k - 1] for k in sample.labels[~keep].tolist())
            sample = dataclasses.replace(sample, boxes=sample.boxes[keep], labels=labels[keep],
                                         difficult=sample.difficult[keep])
        else:
            sample = dataclasses.replace(sample, labels=labels)
        samples.append(sample)
    relabelled = DetectionDataset(wanted, tuple(samples), _category_ids(dataset, wanted))
    return ClassSelection(relabelled, dict(dropped), missing)


def _category_ids(dataset: DetectionDataset, wanted: tuple[str, ...]) -> tuple[int, ...] | None:
    """The dataset's own id of each wanted class; a missing class gets an id above every used one."""
    if dataset.category_ids is None:
        return None
    own = dict(zip(dataset.class_names, dataset.category_ids))
    spare = iter(range(max(dataset.category_ids) + 1, max(dataset.category_ids) + 1 + len(wanted)))
    return tuple(own[n] if n in own else next(spare) for n in wanted)


def sorted_by_name(dataset: DetectionDataset) -> DetectionDataset:
    """The dataset with its classes in alphabetical order (classes read from the annotations)."""
    return select_classes(dataset, sorted(dataset.class_names)).dataset
