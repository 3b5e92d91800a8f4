"""Score tracking results against ground truth, both MOTChallenge text files, with TrackEval.

Prints HOTA, MOTA, IDF1 (with DetA, AssA) and the counts behind them (ID switches, misses, false
positives, ...); --json writes them all. One class, as MOTChallenge evaluates (results carry no
class); ground-truth boxes marked consider = 0 are ignored both ways.

  python tools/evaluate_tracking.py --gt shapes_gt.txt --results detections/mot/shapes.txt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", type=Path, required=True,
                   help="ground truth: frame,id,bb_left,bb_top,bb_width,bb_height,consider,class,visibility")
    p.add_argument("--results", type=Path, required=True, help="tracker results: frame,id,x,y,w,h,score,-1,-1,-1")
    p.add_argument("--frames", type=int, help="frames in the sequence (default: the last frame either file names)")
    p.add_argument("--json", type=Path, help="also write the figures here as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ssd.evaluation.tracking import evaluate_mot, format_summary

    try:
        summary = evaluate_mot(args.gt, args.results, args.frames)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.results} against {args.gt} ({summary['frames']} frames):")
    print(format_summary(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
