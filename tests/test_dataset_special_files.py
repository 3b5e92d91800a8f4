"""Every file a dataset load reads whole (VOC image sets, annotations and classes.txt, a COCO instances
JSON, YOLO list files, data.yaml and classes.txt), replaced by a FIFO, a link to /dev/zero or a
sparse file over the size limit: refused at once by name; ssd-train and ssd-evaluate exit 2 with one line.

Before, a FIFO annotation XML blocked the load forever; the other special files were passed over as
missing ("does not exist", "has neither data.yaml nor classes.txt") or, as a data.yaml or a VOC
classes.txt, silently ignored (the load went on without it); a sparse 4 GiB file was
read whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import hostile_files as hf
import pytest

from ssd.image_header import MAX_TEXT_BYTES
from ssd_datasets.synthetic import generate_synthetic
from ssd_datasets.voc import MAX_XML_BYTES

# name: (format, the file replaced under the dataset root, files removed first so that it is the one read)
WHOLE_FILES = {
    "voc-image-set": ("voc", "ImageSets/Main/train.txt", ()),
    "voc-classes": ("voc", "classes.txt", ()),
    "voc-annotation": ("voc", "Annotations/000001.xml", ()),
    "coco-instances": ("coco", "annotations/instances_train.json", ()),
    "yolo-list": ("yolo", "train.txt", ()),
    "yolo-data-yaml": ("yolo", "data.yaml", ()),
    "yolo-classes": ("yolo", "classes.txt", ("data.yaml",)),
}


def make_hostile(path: Path, kind: str) -> str:
    """`path` replaced by a special file ("zero", "fifo") or a sparse file one byte over its reader's
    limit ("huge"); what the refusal must say."""
    if kind in hf.SPECIAL:
        return hf.make_special(path, kind)
    limit = MAX_XML_BYTES if path.suffix == ".xml" else MAX_TEXT_BYTES
    with open(path, "wb") as file:
        file.truncate(limit + 1)  # no block written: the file declares its size at no cost
    return f"is {limit + 1:,} bytes, more than the limit of {limit:,} bytes"


def hostile_roots(tmp_path: Path, kind: str) -> dict[str, tuple[Path, Path, str]]:
    """{case: (dataset root, the hostile file, what its refusal must say)}, one tiny synthetic dataset each."""
    roots = {}
    for case, (fmt, relative, removed) in WHOLE_FILES.items():
        root = tmp_path / case
        generate_synthetic(root, fmt, num_train=3, num_test=1, image_size_range=(64, 64))
        for name in removed:
            (root / name).unlink()
        roots[case] = (root, root / relative, make_hostile(root / relative, kind))
    return roots


@pytest.mark.parametrize("kind", ["fifo", "zero", "huge"])
def test_files_read_whole_refuse_special_and_oversized_files_by_name(tmp_path, kind):
    roots = hostile_roots(tmp_path, kind)
    body = """
result = []
for root in sys.argv[1:]:
    try:
        load_dataset(root, ["train"], strict=True)
        result.append(None)
    except (ValueError, FileNotFoundError) as err:
        result.append(str(err))
"""
    roots_args = (root for root, _, _ in roots.values())
    run = hf.measure("from ssd_datasets import load_dataset", body, *roots_args, timeout=60)
    for (case, (_, path, words)), message in zip(roots.items(), run["result"]):
        assert message is not None and str(path) in message and words in message, (case, message)
    assert run["peak_mb"] - run["baseline_mb"] < hf.LOAD_BOUND_MB and run["seconds"] < hf.LOAD_BOUND_S, run


def test_train_and_evaluate_commands_exit_2_with_one_line_naming_the_file(tmp_path, capsys):
    from ssd.cli import evaluate as evaluate_cli
    from ssd.cli import train as train_cli

    commands = {"train_detector.py": (train_cli.main, ["--train-split", "train", "--run-dir", str(tmp_path / "run"),
                                                        "--from-scratch"]),
                "evaluate.py": (evaluate_cli.main, ["--split", "train", "--results-dir", str(tmp_path / "results"),
                                                    "--metric", "voc07"])}  # the data is loaded before any result
    for kind in ("fifo", "huge"):
        for case, (root, path, words) in hostile_roots(tmp_path / kind, kind).items():
            for command, (main, args) in commands.items():
                code = main(["--data-root", str(root), "--strict", *args])
                err = capsys.readouterr().err
                lines = [line for line in err.splitlines() if line.strip()]
                assert code == 2 and "Traceback" not in err and len(lines) == 1, (command, case, err)
                assert lines[0].startswith(f"{command}: error: ") and str(path) in lines[0], (command, case, err)
                assert words in lines[0], (command, case, err)
    assert not os.path.exists(tmp_path / "run" / "config.json")
