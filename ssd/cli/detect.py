#!/usr/bin/env python3
"""Run an exported model (frozen graph, SavedModel, ONNX, OpenVINO IR, TFLite; INT8 too) on images, directories, globs, video files or a webcam.

Writes annotated images / videos (same size and frame rate, mp4) and JSON lines of detections
(boxes in pixels "box_xyxy" and normalised "box_rel_xyxy", class id and name, score) into --out.
With --track, each video's objects are tracked (ByteTrack, per class): detections carry a
"track_id", the annotated video shows the ids and a short trail, and --mot DIR also writes
MOTChallenge results (DIR/<video name>.txt).

Examples:
  python detect.py --model export/ photos/*.jpg --out detections/
  python detect.py --model export/model_int8.xml clip.mp4 --out detections/ --batch-size 8
  python detect.py --model export/model.onnx --webcam 0 --out detections/ --max-frames 300
  python detect.py --model export/ clip.mp4 --out detections/ --track --mot detections/mot/
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import shutil
import sys
from pathlib import Path

from ssd.cli import add_model_arguments, configure_logging, writable_dir_problem
from ssd.cli.precision import load_chosen_model
from ssd.deploy.tracking import TrackerOptions
from ssd.detections import LABELS_FILE
from ssd.image_header import DEFAULT_MAX_PIXELS

# A write failing for want of space: the disk or a quota is full, or the file size limit is reached.
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="image files, directories, globs (quoted) or video files")
    add_model_arguments(p)
    p.add_argument("--webcam", type=int, help="also read this webcam index (e.g. 0)")
    p.add_argument("--out", type=Path, default=Path("detections"), help="output directory (default: detections)")
    p.add_argument("--threshold", type=float,
                   help="score threshold for drawing and JSON (default: 0.5), or for what the tracker sees with "
                        f"--track (default: its low-score threshold, {TrackerOptions().low_score:g}); the graph's "
                        "own export threshold still applies below it")
    p.add_argument("--batch-size", type=int, default=8, help="frames or same-size images per graph call (default: 8)")
    p.add_argument("--labels", type=Path, help="class names, one per line (default: labels.txt beside the model)")
    p.add_argument("--max-frames", type=int, help="stop each video after this many frames")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse (and skip) an image whose header declares more pixels, before decoding it "
                        f"(default: {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("--no-draw", action="store_true", help="write JSON lines only, no annotated images/videos")
    p.add_argument("--track", action="store_true",
                   help="track objects in videos and the webcam (ByteTrack with the paper's thresholds): "
                        "detections get a track_id, and only those in a track are kept; images are not tracked")
    p.add_argument("--mot", type=Path, metavar="DIR",
                   help="with --track (implied), also write MOTChallenge results DIR/<video name>.txt "
                        "(frame,id,x,y,w,h,score,-1,-1,-1; 1-based)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    if not args.inputs and args.webcam is None:
        print("error: give image/video inputs or --webcam INDEX", file=sys.stderr)
        return 2
    track = TrackerOptions() if args.track or args.mot else None
    if args.threshold is None:
        args.threshold = 0.5 if track is None else track.low_score
    if args.batch_size < 1 or not 0.0 <= args.threshold <= 1.0 or args.max_pixels < 1:
        print(f"error: --batch-size and --max-pixels must be >= 1 and --threshold in [0, 1], got "
              f"{args.batch_size}, {args.max_pixels}, {args.threshold}", file=sys.stderr)
        return 2
    for flag, folder in (("--out", args.out), ("--mot", args.mot)):
        problem = folder and writable_dir_problem(folder)
        if problem:
            print(f"error: {flag} {folder}: {problem}", file=sys.stderr)
            return 2
    for folder in (args.out, args.mot):
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
    # Imported late so that --help and argument errors answer without loading TensorFlow.
    from ssd.deploy.images import expand_inputs

    try:
        detector, class_names, model_path = load_chosen_model(args.model, args.precision, args.labels)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    labels = args.labels or model_path.parent / LABELS_FILE
    if not class_names:
        print(f"warning: no labels file ({labels} does not exist): classes are shown by their id", file=sys.stderr)
    images, videos, errors = expand_inputs(args.inputs)
    unnamed: set[int] = set()
    writing: list[Path] = []  # the outputs of the input being processed, removed if a write fails for space
    try:
        _detect_all(args, images, videos, detector, class_names, track, errors, unnamed, writing)
    except OSError as err:
        if err.errno not in _FULL_ERRNOS:
            raise
        for path in writing:
            path.unlink(missing_ok=True)
        free = shutil.disk_usage(args.out).free
        print(f"error: --out {args.out}: {err.strerror} while writing {', '.join(map(str, writing)) or 'there'} "
              f"({free / 2**20:.0f} MB free on that disk): free some space or choose another --out; the partial "
              f"files were removed", file=sys.stderr)
        return 1
    if unnamed and class_names:
        print(f"warning: labels file {labels} names {len(class_names)} classes, but the graph detected class ids "
              f"{sorted(unnamed)}: they are shown by their id", file=sys.stderr)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return 1 if errors else 0


def _detect_all(args: argparse.Namespace, images: list[Path], videos: list[Path], detector,
                class_names: tuple[str, ...], track: TrackerOptions | None, errors: list[str], unnamed: set[int],
                writing: list[Path]) -> None:
    """Images then videos into --out (and --mot); `writing` names the outputs being written at any moment."""
    from ssd.deploy.images import detect_images
    from ssd.deploy.video import detect_video

    draw_dir = None if args.no_draw else args.out
    progress = not args.quiet
    if images:
        writing[:] = [args.out / "detections.jsonl"]
        with open(writing[0], "w") as jsonl:
            report = detect_images(images, detector, draw_dir, jsonl, class_names, args.threshold,
                                   args.batch_size, progress, args.max_pixels)
        errors += report.errors
        unnamed |= report.unnamed_classes
        print(f"{report.done} of {len(images)} images: {report.detections} detections "
              f"-> {args.out / 'detections.jsonl'}")
    sources: list[str | int] = [str(v) for v in videos] + ([args.webcam] if args.webcam is not None else [])
    for source in sources:
        stem = f"webcam{source}" if isinstance(source, int) else Path(source).stem
        out_video = None if args.no_draw else args.out / f"{stem}.mp4"
        if out_video is not None and not isinstance(source, int) and out_video.resolve() == Path(source).resolve():
            errors.append(f"not overwriting input video {source} with its annotated copy: choose another --out")
            continue
        writing[:] = [args.out / f"{stem}.jsonl", *([out_video] if out_video else []),
                      *([args.mot / f"{stem}.txt"] if args.mot else [])]
        with open(writing[0], "w") as jsonl, \
                (open(args.mot / f"{stem}.txt", "w") if args.mot else contextlib.nullcontext()) as mot:
            report = detect_video(source, detector, out_video, jsonl, class_names, args.threshold,
                                  args.batch_size, args.max_frames, progress, track=track, mot=mot)
        if report.frames:
            print(report.summary())
        if report.error:
            errors.append(report.error)
        unnamed |= report.unnamed_classes
    writing.clear()


if __name__ == "__main__":
    sys.exit(main())
