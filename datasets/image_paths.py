"""Finding an annotation's image file under several folders, in a fixed order, cheaply.

Exports write an image's name relative to different places: Label Studio's `result.json` says
"images/0001.jpg" (relative to the JSON's folder), CVAT's `instances_default.json` says
"0001.jpg" (relative to `images/` or `images/<subset>/`), Roboflow's "0001.jpg" (beside the
JSON). A name is looked up under each candidate folder in turn and the first folder that holds
it wins; each folder is listed once, so a COCO-sized file costs a few directory listings, not a
stat() per image and folder. Windows separators ("images\\\\0001.jpg") are read as "/".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def normalise_name(name: str) -> str:
    """A file name as written by any tool, with "/" separators and no leading "./"."""
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


class ImageFinder:
    """The first of `folders` under which a relative image name exists."""

    def __init__(self, folders: Sequence[str | os.PathLike]) -> None:
        self.folders = [Path(f) for f in dict.fromkeys(str(f) for f in folders)]
        self._listings: dict[str, frozenset[str]] = {}

    def find(self, name: str) -> str | None:
        """The path of `name` under the first folder holding it, or None."""
        name = normalise_name(name)
        if os.path.isabs(name):
            return name if os.path.isfile(name) else None
        head, _, tail = name.rpartition("/")
        for folder in self.folders:
            directory = os.path.join(folder, head) if head else str(folder)
            if tail in self._listing(directory):
                return os.path.join(directory, tail)
        return None

    def first_guess(self, name: str) -> str:
        """Where `name` would be under the first folder (for a report of a missing file)."""
        name = normalise_name(name)
        return name if os.path.isabs(name) or not self.folders else os.path.join(self.folders[0], name)

    def _listing(self, directory: str) -> frozenset[str]:
        if directory not in self._listings:
            try:
                self._listings[directory] = frozenset(os.listdir(directory))
            except OSError:  # missing or not a folder
                self._listings[directory] = frozenset()
        return self._listings[directory]
