"""The bad-data policy every source shares: a named report of what was skipped, or a refusal.

A source checks each file and object; a problem becomes a `LoadIssue` (file, what is wrong, what
the loader did) in the `LoadReport`, and the load goes on without that object or file. With
`strict=True` the first problem raises a ValueError naming the file instead. Box checks are
vectorised (`check_boxes`) so a COCO-sized annotation file is checked in one NumPy pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

# Outcome of `check_boxes` per box.
BOX_OK, BOX_CLIPPED, BOX_DEGENERATE, BOX_OUTSIDE = 0, 1, 2, 3
# Kinds of problem (`LoadIssue.kind`) the sources share, as the summary names them.
FILE_MISSING, BAD_IMAGE, BAD_ANNOTATION = "file missing", "image unreadable or wrong size", "bad annotation file"
UNKNOWN_CLASS, BAD_OBJECT = "unknown class", "malformed object"
DEGENERATE_BOX, BOX_OUTSIDE_IMAGE, BOX_CROSSES_BORDER = "degenerate box", "box outside the image", "crosses the border"


@dataclass(frozen=True)
class LoadIssue:
    """One problem found while loading: the file, what is wrong, and what the loader did."""

    file: str
    problem: str
    action: str  # "skipped object", "clipped box" or "skipped file"
    kind: str = ""  # the problem in a few words, how the summary groups it ("file missing")
    example: str = ""  # the path the summary shows for it (default: `file`)

    def __str__(self) -> str:
        return f"{self.file}: {self.problem} ({self.action})"


# How the summary counts each action: "24 images skipped", "3 boxes clipped".
_ACTION_WORDS = {"skipped file": "images skipped", "skipped object": "objects skipped", "clipped box": "boxes clipped"}


@dataclass
class LoadReport:
    """What a load read, dropped and repaired; `summary()` is the one line a CLI prints."""

    files: int = 0
    objects: int = 0
    dropped_difficult: int = 0
    dropped_crowd: int = 0
    empty_images: list[str] = field(default_factory=list)
    dropped_empty: int = 0
    dropped_classes: dict[str, int] = field(default_factory=dict)  # objects of classes not selected, by class
    # Entries of the class list that are not classes: an unused supercategory of all the others.
    not_classes: list[str] = field(default_factory=list)
    issues: list[LoadIssue] = field(default_factory=list)
    strict: bool = False

    def issue(self, file: str, problem: str, action: str, kind: str = "", example: str = "") -> None:
        """Record a problem, or refuse the data (ValueError naming the file) when strict."""
        if self.strict:
            raise ValueError(f"{file}: {problem}")
        self.issues.append(LoadIssue(file, problem, action, kind, example))

    def count(self, action: str) -> int:
        """Number of issues that ended with `action`."""
        return sum(issue.action == action for issue in self.issues)

    def summary(self) -> str:
        """One line: files and objects kept, then each kind of problem with its count and one example
        ("24 images skipped: file missing (e.g. images/images/0000.jpg)")."""
        text = f"{self.files} images, {self.objects} objects"
        if self.dropped_difficult:
            text += f" ({self.dropped_difficult} difficult objects left out)"
        if self.dropped_crowd:
            text += f" ({self.dropped_crowd} crowd objects left out)"
        if self.dropped_classes:
            named = ", ".join(f"{n} {name}" for name, n in sorted(self.dropped_classes.items()))
            text += f"; {sum(self.dropped_classes.values())} objects of other classes left out ({named})"
        if self.empty_images:
            text += f"; {len(self.empty_images)} images without objects"
        if self.dropped_empty:
            text += f"; {self.dropped_empty} images without objects left out"
        for (action, kind), issues in self.grouped().items():
            example = issues[0].example or issues[0].file
            text += f"; {len(issues)} {_ACTION_WORDS.get(action, action)}: {kind} (e.g. {example})"
        if self.issues:
            text += " (--verbose lists each)"
        return text

    def grouped(self) -> dict[tuple[str, str], list[LoadIssue]]:
        """The issues by (action, kind), in the order each group first occurs."""
        groups: dict[tuple[str, str], list[LoadIssue]] = {}
        for issue in self.issues:
            groups.setdefault((issue.action, issue.kind or "other problem"), []).append(issue)
        return groups

    def log(self, logger: logging.Logger, what: str, verbose: bool) -> None:
        """Every issue when verbose, then the summary line (a warning when anything was skipped)."""
        for entry in self.not_classes:
            logger.info("%s: %s is the other categories' supercategory and no annotation uses it: not a class",
                        what, entry)
        if verbose:
            for issue in self.issues:
                logger.warning("%s", issue)
        (logger.warning if self.issues else logger.info)("loaded %s: %s", what, self.summary())


def check_boxes(boxes: np.ndarray, widths: np.ndarray, heights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clipped to their image, and each box's outcome (BOX_OK, _CLIPPED, _DEGENERATE, _OUTSIDE).

    Args:
        boxes: float [N, 4] "xyxy" pixels, 0-based continuous.
        widths, heights: [N] size of each box's image.
    Returns:
        float32 [N, 4] boxes clipped to [0, width] x [0, height]; int8 [N] outcomes. A box with
        x1 <= x0 or y1 <= y0 is degenerate (it would make the loss's ln() NaN), one with nothing
        left after clipping is outside.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    limits = np.stack([widths, heights, widths, heights], axis=1).astype(np.float64)
    clipped = np.clip(boxes, 0.0, limits)
    status = np.where(np.any(clipped != boxes, axis=1), BOX_CLIPPED, BOX_OK).astype(np.int8)
    status[(clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])] = BOX_OUTSIDE
    status[~((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))] = BOX_DEGENERATE  # NaN too
    return clipped.astype(np.float32), status


def box_problem(status: int, box_text: str, width: int, height: int) -> tuple[str, str, str]:
    """(problem, action, kind) words for a box `check_boxes` did not pass as BOX_OK."""
    if status == BOX_DEGENERATE:
        return f"degenerate box {box_text}", "skipped object", DEGENERATE_BOX
    if status == BOX_OUTSIDE:
        return f"box {box_text} outside the {width}x{height} image", "skipped object", BOX_OUTSIDE_IMAGE
    return f"box {box_text} crosses the border of the {width}x{height} image", "clipped box", BOX_CROSSES_BORDER
