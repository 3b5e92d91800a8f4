"""Reports of an evaluation: the VOC per-class table and PR-curve figures (`VOCEvaluator.evaluate()`),
the COCO table (`COCOEvaluator.evaluate()`).

Where a person reads an AP, mAP or AR it is a percentage with its unit (`percent`: "65.12%");
JSON (metrics.json, best.json, the evaluators' dicts) keeps fractions (0.6512).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a person reads it: 0.6512 -> "65.12%"; None (no number) -> "—"."""
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def format_table(results: dict[str, Any]) -> str:
    """A per-class text table: ground truth count, then AP07 / AP10 (percent) per confidence level."""
    levels = results["confidence_levels"]
    head = f"{'class':<14}{'#gt':>6}" + "".join(f"  {'AP07@' + format(c, 'g'):>10}{'AP10@' + format(c, 'g'):>10}" for c in levels)
    lines = [head, "-" * len(head)]

    for name, c in results["classes"].items():
        lines.append(f"{name:<14}{c['num_ground_truth']:>6}"
                     + "".join(f"  {_cell(a)}{_cell(b)}" for a, b in zip(c["ap_voc07"], c["ap_voc10"])))
    lines.append("-" * len(head))
    lines.append(f"{'mAP':<14}{'':>6}" + "".join(f"  {_cell(a)}{_cell(b)}"
                                                 for a, b in zip(results["map_voc07"], results["map_voc10"])))
    if results["excluded_classes"]:
        lines.append(f"not in mAP (no non-difficult ground truth): {', '.join(results['excluded_classes'])}")
    return "\n".join(lines)


def _cell(value: float | None, width: int = 10) -> str:
    return f"{percent(value):>{width}}"


def format_coco_table(results: dict[str, Any]) -> str:
    """COCO AP@[.5:.95] and AP50 per class, then pycocotools' 12 numbers, per confidence level (percent)."""
    levels = results["confidence_levels"]
    head = f"{'class':<14}{'id':>5}{'#gt':>6}" + "".join(
        f"  {'AP@' + format(c, 'g'):>10}{'AP50@' + format(c, 'g'):>10}" for c in levels)
    lines = [head, "-" * len(head)]
    for name, c in results["classes"].items():
        lines.append(f"{name:<14}{c['category_id']:>5}{c['num_ground_truth']:>6}"
                     + "".join(f"  {_cell(a)}{_cell(b)}" for a, b in zip(c["ap"], c["ap50"])))
    lines.append("-" * len(head))
    lines.append(f"{'metric':<25}" + "".join(f"{'@' + format(c, 'g'):>12}" for c in levels))
    for name in results["stats"][0]:
        if name != "AP_at_iou":
            lines.append(f"{name:<25}" + "".join(_cell(stats[name], 12) for stats in results["stats"]))
    return "\n".join(lines)


def save_pr_curves(results: dict[str, Any], curves: dict[str, dict[str, np.ndarray]], path: str | Path) -> None:
    """Precision/recall curve of every class, one panel each, to an image file (PNG by suffix).

    Each curve runs over all detections; dots mark where each confidence level cuts it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg only: no display needed
    from matplotlib.figure import Figure

    names = results["class_names"]
    cols = min(5, len(names))
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.8 * rows))
    FigureCanvasAgg(fig)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        curve, cls = curves[name], results["classes"][name]
        ax.plot(curve["recall"], curve["precision"], lw=1.2)
        for level in results["confidence_levels"]:
            n = int(np.sum(curve["scores"] >= level))
            if n:
                ax.plot(curve["recall"][n - 1], curve["precision"][n - 1], "o", ms=3, label=f">={level:g}")
        ap = cls["ap_voc10"][0]
        ax.set_title(f"{name}  AP10 {percent(ap, 1)}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=6, loc="lower left")
    fig.supxlabel("recall")
    fig.supylabel("precision")
    fig.tight_layout()
    fig.savefig(str(path), dpi=80)
