"""The accuracy checks an export records in export.json, and reading them back.

    out_dir/export.json   "accuracy_checks": [AccuracyCheck as JSON, ...]

A check measures a reduced-precision model against the fp32 IR on the run's validation split and
records whether the drop is within the bound the export was given (`ssd.deploy.quantization` makes
them; `ssd.deploy.runtimes.choose_precision` reads them). JSON only: no runtime is imported.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ssd.detections import EXPORT_INFO_FILE

CHECKS_KEY = "accuracy_checks"  # in export.json
METRIC_NAMES = {"voc07": "VOC07 mAP", "voc10": "VOC10 mAP", "coco": "COCO AP"}


@dataclass(frozen=True)
class AccuracyCheck:
    """A reduced-precision model measured against the fp32 IR on the validation split (points of `metric`).

    `model` is the file in the export ("model_int8.xml", or "model.xml" for bf16), `precision` what it
    ran as ("int8" or "bf16"). `met`: the drop is within `max_drop` (and, for INT8, some operation
    is still INT8). `details`: for INT8 the plain INT8 model's value, the operations kept float and
    images/s of fp32, plain INT8 and this model.
    """

    model: str
    precision: str
    metric: str
    splits: tuple[str, ...]
    images: int
    fp32: float
    value: float
    max_drop: float
    met: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def drop(self) -> float:
        return self.fp32 - self.value

    def summary(self) -> str:
        """One line: the value, the fp32 value, the drop against its bound, and where it was measured."""
        within = "<=" if self.drop <= self.max_drop else ">"
        return (f"{METRIC_NAMES[self.metric]} {self.value:.2f}% against fp32 {self.fp32:.2f}%, drop {self.drop:.2f} "
                f"{within} {self.max_drop:g} points on {self.images} images of {','.join(self.splits)}")


def read_accuracy_checks(export_dir: str | Path) -> list[AccuracyCheck]:
    """The checks export.json in `export_dir` records (none when it or the key is missing)."""
    path = Path(export_dir) / EXPORT_INFO_FILE
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text()).get(CHECKS_KEY, [])
        return [AccuracyCheck(**{**record, "splits": tuple(record["splits"])}) for record in records]
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ValueError(f"{path}: {CHECKS_KEY} is not a list of accuracy checks ({err})") from None


def record_accuracy_checks(export_dir: str | Path, checks: Sequence[AccuracyCheck]) -> None:
    """Put `checks` into export.json in `export_dir`, replacing earlier checks of the same model and precision."""
    path = Path(export_dir) / EXPORT_INFO_FILE
    info = json.loads(path.read_text()) if path.is_file() else {}
    replaced = {(c.model, c.precision) for c in checks}
    kept = [c for c in read_accuracy_checks(export_dir) if (c.model, c.precision) not in replaced]
    info[CHECKS_KEY] = [asdict(c) for c in (*kept, *checks)]
    path.write_text(json.dumps(info, indent=2) + "\n")
