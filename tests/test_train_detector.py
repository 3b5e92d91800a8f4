"""train_detector.py as a user meets it: --help, clear errors, --config, --lr-finder, Ctrl-C, kill -9."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssd.cli import train as train_detector
from ssd.config import ModelConfig
from ssd.engine.recipe import TrainConfig
from ssd.data.pipeline import SEGMENT_PREFIX
from ssd.modeling.run_dir import save_run_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from ssd_datasets.synthetic import generate_synthetic_voc

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_voc(root, num_train=24, num_test=4, image_size_range=(64, 96))
    return root


def tiny_args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    """A slim, quick run on the synthetic set."""
    return ["--run-dir", str(run_dir), "--data-root", str(root), "--train-split", "trainval",
            "--val-split", "test", "--width", "0.125", "--from-scratch", "--batch-size", "4",
            "--workers", "1", "--optimizer", "adam", "--lr", "1e-3", "--expand-probability", "0",
            *extra]


def test_help_lists_the_options_a_user_needs(capsys):
    with pytest.raises(SystemExit) as info:
        train_detector.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--run-dir", "--config", "--data-root", "--base-weights", "--vgg16-weights", "--from-scratch", "--epochs",
                 "--schedule", "--warmup-steps", "--mixed-precision", "--lr-finder", "--strategy", "examples:"):
        assert flag in text
    words = " ".join(text.split())
    assert "(default: 80000,100000)" in words and "(default: the export's own: train, trainval;" in words
    assert "a VOCdevkit: the 20 VOC classes; other VOC folders: the names in the XML files, sorted" in words


def test_no_weights_and_no_from_scratch_names_the_flag(root, tmp_path, capsys):
    args = [a for a in tiny_args(root, tmp_path / "run") if a != "--from-scratch"]
    assert train_detector.main(args) == 2
    err = capsys.readouterr().err
    assert "--base-weights" in err and "--from-scratch" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["--base-weights", "--vgg16-weights"])
def test_missing_or_unknown_base_weights_file_is_named(root, tmp_path, capsys, flag):
    args = [a for a in tiny_args(root, tmp_path / "run") if a != "--from-scratch"]
    assert train_detector.main([*args, flag, str(tmp_path / "vgg.h5")]) == 2
    assert f"--base-weights {tmp_path / 'vgg.h5'}: no such file" in capsys.readouterr().err
    (tmp_path / "vgg.npz").write_bytes(b"x")
    assert train_detector.main([*args, flag, str(tmp_path / "vgg.npz")]) == 2
    assert "vgg.npz: expected a file ending in .h5, .hdf5, .caffemodel, .pth, .pt" in capsys.readouterr().err


def test_classes_the_annotations_do_not_have_are_refused(root, tmp_path, capsys):
    assert train_detector.main([*tiny_args(root, tmp_path / "run"), "--classes", "dog,cat"]) == 2
    err = capsys.readouterr().err
    assert "--classes: dog, cat not among the dataset's classes circle, square, triangle, star, cross, ring" in err


def test_bad_flag_values_are_refused_by_argparse(root, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        train_detector.main([*tiny_args(root, tmp_path / "run"), "--boundaries", "80k"])
    assert info.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err


@pytest.mark.slow
def test_config_repeats_a_run_and_flags_override(root, tmp_path, capsys):
    first = tmp_path / "first"
    assert train_detector.main([*tiny_args(root, first), "--iterations", "2", "--eval-every", "0",
                                "--seed", "7", "--schedule", "cosine"]) == 0
    second = tmp_path / "second"
    assert train_detector.main(["--config", str(first / "config.json"), "--run-dir", str(second),
                                "--iterations", "3", "--lr", "5e-4"]) == 0
    a, b = (json.loads((d / "config.json").read_text()) for d in (first, second))
    assert b["model"] == a["model"]
    assert (b["train"]["iterations"], b["train"]["learning_rate"]) == (3, 5e-4)
    changed = {k for k in a["train"] if a["train"][k] != b["train"][k]}
    assert changed == {"iterations", "learning_rate"}
    assert "finished at step 3" in capsys.readouterr().out
    # resuming a run with a different network is refused before touching its checkpoints
    assert train_detector.main([*tiny_args(root, second), "--width", "0.25"]) == 2
    assert "use a new --run-dir" in capsys.readouterr().err


@pytest.mark.slow
def test_lr_finder_writes_curve_and_suggests_a_rate(root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train_detector.main([*tiny_args(root, run_dir), "--lr-finder", "--lr-finder-steps", "12",
                                "--lr-finder-range", "1e-5", "1e-1"]) == 0
    rows = (run_dir / "lr_finder.csv").read_text().splitlines()
    assert rows[0] == "step,learning_rate,loss,smoothed_loss" and 3 <= len(rows) - 1 <= 12
    rates = [float(r.split(",")[1]) for r in rows[1:]]
    assert rates[0] == pytest.approx(1e-5) and all(b > a for a, b in zip(rates, rates[1:]))
    assert (run_dir / "lr_finder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    suggested = float(re.search(r"suggested learning rate: (\S+)", capsys.readouterr().out).group(1))
    assert 1e-5 <= suggested <= 1e-1
    assert not (run_dir / "checkpoints").exists()  # a range test is not a training run


def test_suggestion_is_where_the_loss_falls_fastest():
    import numpy as np

    from ssd.engine.lr_finder import suggest_learning_rate

    rates = np.logspace(-5, 0, 11)
    losses = np.array([5, 5, 4.9, 4.5, 3.0, 2.0, 1.8, 1.7, 2.5, 6, 20], float)
    # the steepest fall in log-rate is around index 4 (4.5 -> 3.0 -> 2.0)
    assert suggest_learning_rate(rates, losses) == rates[4]


# --------------------------------------------------------------- a real process, stopped by force


def start(root: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    """train_detector.py in its own session (so a signal to the group is a terminal's Ctrl-C)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, str(REPO / "train_detector.py"), *tiny_args(root, run_dir, *extra)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, at_least: int, timeout: float = 120) -> int:
    """Poll the run directory until a checkpoint of step >= at_least exists; its step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        steps = [int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("ckpt-*.index")]
        if steps and max(steps) >= at_least:
            return max(steps)
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no checkpoint >= {at_least} within {timeout} s")


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (the pipeline workers, the resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until_clean(pids: list[int], pid: int, timeout: float = 15) -> None:
    """The processes are gone and no shared-memory segment of `pid`'s pipeline is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leaked = list(Path("/dev/shm").glob(f"{SEGMENT_PREFIX}{pid}_*"))
        running = [p for p in pids if alive(p)]
        if not leaked and not running:
            return
        time.sleep(0.2)
    raise AssertionError(f"after {timeout} s: segments {leaked}, processes still running {running}")


def checkpoint_step(path: str) -> int:
    import tensorflow as tf

    return int(tf.train.load_checkpoint(path).get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_130(root, tmp_path):
    import tensorflow as tf

    run_dir = tmp_path / "run"
    proc = start(root, run_dir, "--iterations", "500", "--checkpoint-every", "2", "--eval-every", "0")
    wait_for_checkpoint(proc, run_dir, 2)
    workers = children(proc.pid)
    assert workers, "the pipeline's worker processes should be running"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    step = int(re.search(r"interrupted at step (\d+)", out).group(1))
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    assert latest.endswith(f"ckpt-{step}") and checkpoint_step(latest) == step
    assert "Traceback" not in err
    wait_until_clean(workers, proc.pid, timeout=5)


@pytest.mark.slow
def test_one_trainer_per_run_and_a_killed_ones_run_is_taken_over(root, tmp_path):
    """A second trainer on a live run is refused at once naming the holder; after kill -9 of the
    holder, the next trainer takes the run over, says so, and resumes (SIGKILL loses at most one
    checkpoint interval)."""
    import tensorflow as tf

    run_dir = tmp_path / "run"
    every = 3
    proc = start(root, run_dir, "--iterations", "500", "--checkpoint-every", str(every), "--eval-every", "0")
    wait_for_checkpoint(proc, run_dir, 2 * every)
    started = time.monotonic()
    second = start(root, run_dir, "--iterations", "500")
    _, refused = second.communicate(timeout=60)
    assert second.returncode == 2 and time.monotonic() - started < 5, refused[-3000:]
    assert f"--run-dir {run_dir} is being trained by pid {proc.pid} on host" in refused
    assert "Traceback" not in refused and "tensorflow" not in refused.lower()  # refused before TensorFlow started
    workers = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    reached = max(int(n) for n in re.findall(r"(\d+)/500", err))  # the progress bar's last count
    wait_until_clean(workers, proc.pid)  # workers notice their parent died; the tracker unlinks
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    saved = checkpoint_step(latest)  # readable, and consistent with its name
    assert latest.endswith(f"ckpt-{saved}")
    assert 0 <= reached - saved <= every
    resumed = start(root, run_dir, "--iterations", str(saved + 2), "--checkpoint-every", str(every),
                    "--eval-every", "0")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err[-3000:]
    assert f"took over {run_dir} from pid {proc.pid} on host" in err
    assert f"resumed from {latest} (step {saved}" in err
    assert f"finished at step {saved + 2}" in out


@pytest.mark.slow
def test_a_truncated_latest_checkpoint_is_named_and_resume_export_and_evaluate_use_the_one_before(
        root, tmp_path, capsys, caplog):
    from ssd.cli import evaluate, export

    run_dir = tmp_path / "run"
    assert train_detector.main(tiny_args(root, run_dir, "--iterations", "4", "--checkpoint-every", "2",
                                         "--eval-every", "0")) == 0
    data = run_dir / "checkpoints" / "ckpt-4.data-00000-of-00001"
    os.truncate(data, data.stat().st_size * 2 // 3)  # `truncate -s`, in proportion for a tiny model
    capsys.readouterr()
    caplog.clear()
    caplog.set_level(logging.INFO)

    out = tmp_path / "export"
    assert export.main(["--run-dir", str(run_dir), "--out", str(out), "--checkpoint", "latest",
                        "--format", "frozen"]) == 0
    assert f"damaged checkpoint {run_dir / 'checkpoints' / 'ckpt-4'}: {data} is missing, truncated" in caplog.text
    assert f"using {run_dir / 'checkpoints' / 'ckpt-2'}, the newest intact checkpoint" in caplog.text
    caplog.clear()
    assert evaluate.main(["--run-dir", str(run_dir), "--checkpoint", "latest", "--data-root", str(root),
                          "--split", "test", "--no-progress"]) == 0
    assert f"{data} is missing, truncated" in caplog.text and "ckpt-2, the newest intact" in caplog.text
    caplog.clear()
    assert data.exists()  # export and evaluation only read
    assert "Traceback" not in capsys.readouterr().err

    assert train_detector.main(tiny_args(root, run_dir, "--iterations", "6", "--checkpoint-every", "2",
                                         "--eval-every", "0")) == 0
    assert f"{data} is missing, truncated" in caplog.text
    assert f"resumed from {run_dir / 'checkpoints' / 'ckpt-2'}, the newest intact checkpoint (step 2" in caplog.text
    assert (run_dir / "checkpoints" / "damaged" / data.name).is_file()
    assert "finished at step 6" in capsys.readouterr().out
    # the longer run is an option changed on resume: said, and kept in train.log
    change = f"step 2: options changed from {run_dir / 'config.json'}: iterations 4 → 6"
    assert change in caplog.text and change in (run_dir / "train.log").read_text(encoding="utf-8")


@pytest.mark.slow
def test_coco_format_run_records_category_ids_boxes_and_keeps_best_by_coco_ap(tmp_path, capsys, caplog):
    """A COCO-format folder (detected), COCO default boxes, validation by COCO AP."""
    caplog.set_level(logging.INFO)
    from ssd_datasets.synthetic import SYNTHETIC_CATEGORY_IDS, generate_synthetic

    coco = tmp_path / "coco"
    generate_synthetic(coco, "coco", num_train=8, num_test=4, image_size_range=(64, 96))
    run_dir = tmp_path / "run"
    assert train_detector.main([*tiny_args(coco, run_dir), "--iterations", "2", "--boxes", "coco",
                                "--eval-metric", "coco", "--verbose"]) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["category_ids"] == list(SYNTHETIC_CATEGORY_IDS) and config["model"]["boxes"] == "coco"
    assert config["model"]["default_boxes"]["min_sizes"][0] == 21 and config["train"]["eval_metric"] == "coco"
    best = json.loads((run_dir / "best" / "best.json").read_text())
    assert best["coco_ap"] == (best["metrics"]["stats"][0]["AP"] or 0.0)
    assert best["metrics"]["category_ids"] == list(SYNTHETIC_CATEGORY_IDS)
    assert re.search(r"best val coco \d+\.\d\d%", capsys.readouterr().out)  # a percentage, with its unit
    assert "crowd objects left out" in caplog.text  # training never sees crowd boxes
    # tools/evaluate.py on this run: its COCO numbers equal pycocotools' on the results JSON it wrote.
    from ssd.evaluation.coco import STAT_NAMES
    from tests.test_evaluation_coco import pycocotools_stats
    from tools import evaluate as evaluate_cli

    results_json, metrics_json = tmp_path / "detections_test_results.json", tmp_path / "metrics.json"
    assert evaluate_cli.main(["--run-dir", str(run_dir), "--data-root", str(coco), "--split", "test",
                              "--metric", "voc07", "coco", "--coco-results", str(results_json),
                              "--json", str(metrics_json), "--no-progress", "--confidence-levels", "0.01", "0.5"]) == 0
    metrics = json.loads(metrics_json.read_text())
    assert metrics["map_voc07"] and metrics["coco"]["confidence_levels"] == [0.01, 0.5]
    written = json.loads(results_json.read_text())
    assert written and {r["category_id"] for r in written} <= set(SYNTHETIC_CATEGORY_IDS)
    assert all(isinstance(r["image_id"], int) for r in written)
    direct = pycocotools_stats(coco / "annotations" / "instances_test.json", results_json)
    assert [metrics["coco"]["stats"][0][name] for name in STAT_NAMES] == direct


def test_coco_recipe_sets_the_schedule_and_the_boxes_and_flags_still_win(tmp_path):
    from ssd.config import COCO_DEFAULT_BOXES
    from ssd.engine.run_config import resolve_model_config
    from ssd.records import DetectionDataset

    args = train_detector.build_parser().parse_args(["--run-dir", str(tmp_path / "run"), "--recipe", "coco",
                                                     "--iterations", "5"])
    model_config, config = train_detector.configs_from_args(args)
    assert model_config is None
    assert (config.iterations, config.boundaries) == (5, (280_000, 360_000))
    assert (config.eval_metric, config.data_format, config.train_splits) == ("coco", "coco", ("train2017",))
    data = DetectionDataset(("a", "b"), (), category_ids=(4, 9))
    model = resolve_model_config(args.run_dir, None, data, train_detector.model_options(args), args.recipe)
    assert model.default_boxes == COCO_DEFAULT_BOXES["vgg300"] and model.category_ids == (4, 9)
    args = train_detector.build_parser().parse_args(["--run-dir", str(tmp_path / "run"), "--preset", "vgg512"])
    assert resolve_model_config(args.run_dir, None, data, train_detector.model_options(args)).boxes == "voc"


def damaged_copy(root: Path, tmp_path: Path) -> Path:
    """The synthetic set with one training annotation's xmin made "nan" and a split of it alone."""
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    stem = (copy / "ImageSets" / "Main" / "trainval.txt").read_text().split()[0]
    xml = copy / "Annotations" / f"{stem}.xml"
    xml.write_text(re.sub(r"<xmin>\d+</xmin>", "<xmin>nan</xmin>", xml.read_text(), count=1))
    (copy / "ImageSets" / "Main" / "nanonly.txt").write_text(stem + "\n")
    return copy


def test_strict_refuses_a_nan_coordinate_naming_the_file(root, tmp_path, capsys):
    data = damaged_copy(root, tmp_path)
    args = tiny_args(data, tmp_path / "run", "--strict")
    assert train_detector.main(args) == 2
    err = capsys.readouterr().err
    assert re.search(r"Annotations/\S+\.xml: object 0 .*<xmin> is not a finite number: 'nan'", err), err
    assert not (tmp_path / "run" / "config.json").exists()


def test_empty_or_wholly_skipped_split_is_named_not_blamed_on_classes(root, tmp_path, capsys):
    data = damaged_copy(root, tmp_path)
    (data / "ImageSets" / "Main" / "empty.txt").write_text("\n")
    (data / "Annotations" / ((data / "ImageSets" / "Main" / "nanonly.txt").read_text().strip() + ".xml")
     ).write_text("<annotation><size><width>nan</width>")  # the only image of the split: broken XML
    for split, message in (("empty", r"empty\.txt lists no image ids: the split is empty"),
                           ("nanonly", r"splits \['nanonly'\] .* have no usable image")):
        args = tiny_args(data, tmp_path / "run")
        args[args.index("--train-split") + 1] = split
        assert train_detector.main(args) == 2
        err = capsys.readouterr().err
        assert re.search(message, err) and "classes" not in err, err


@pytest.mark.slow
def test_full_disk_is_one_message_keeps_the_last_checkpoint_and_the_next_start_cleans_up(root, tmp_path):
    import resource

    run_dir = tmp_path / "run"
    args = ("--checkpoint-every", "2", "--eval-every", "0")
    first = start(root, run_dir, "--iterations", "2", *args)
    _, err = first.communicate(timeout=180)
    assert first.returncode == 0, err[-3000:]
    good = run_dir / "checkpoints" / "ckpt-2"
    size = sum(p.stat().st_size for p in run_dir.glob("checkpoints/ckpt-2.*"))
    limit = 2 << 20  # above a pipeline slot (4 x 300 x 300 x 3 bytes) and config.json, below a checkpoint
    assert size > limit, size

    def full_disk():  # a file may not grow past `limit` (EFBIG, as ENOSPC would stop it); no root needed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    full = subprocess.run([sys.executable, str(REPO / "train_detector.py"),
                           *tiny_args(root, run_dir, "--iterations", "4", *args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180, preexec_fn=full_disk)
    assert full.returncode == 1, full.stderr[-3000:]
    assert "Traceback" not in full.stderr, full.stderr[-3000:]
    [message] = [line for line in full.stderr.splitlines() if line.startswith("train_detector.py: error:")]
    assert re.search(rf"cannot write {re.escape(str(run_dir / 'checkpoints'))}: file too large \(it needs about "
                     rf"[\d.]+ MB; [\d.]+ MB free on that disk\); the last good checkpoint {re.escape(str(good))} "
                     "is intact: free some space and run the same command to resume", message), message
    assert checkpoint_step(str(good)) == 2 and (run_dir / "checkpoints" / "ckpt-4_temp").is_dir()
    resumed = start(root, run_dir, "--iterations", "3", *args)
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err[-3000:]
    assert f"removed {run_dir / 'checkpoints' / 'ckpt-4_temp'}" in err and f"resumed from {good} (step 2" in err
    assert "finished at step 3" in out and not list(run_dir.rglob("*_temp"))


# ---------------------------------------------------------------- fine-tuning and the Caffe recipe


def finetune_args(root: Path, run_dir: Path) -> list[str]:
    """tiny_args for two of the synthetic classes, initialised by --init-from instead of --from-scratch."""
    return [a for a in tiny_args(root, run_dir) if a != "--from-scratch"] + ["--classes", "circle,square"]


@pytest.mark.parametrize("flags, message", [
    (["--width", "0.25"], "{'width': 0.25} would not fit its weights"),
    (["--preset", "vgg512"], "{'preset': 'vgg512'} would not fit its weights"),
])
def test_a_different_preset_or_width_than_the_source_is_refused(root, tmp_path, capsys, flags, message):
    save_run_config(tmp_path / "source", ModelConfig("vgg300", ("a", "b"), width=0.125), TrainConfig().to_dict())
    code = train_detector.main([*finetune_args(root, tmp_path / "run"), "--init-from", str(tmp_path / "source"), *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--init-from {tmp_path / 'source'} is a vgg300 run of width 0.125" in err and message in err
    assert not (tmp_path / "run").exists()


def test_init_from_must_be_a_run_directory(root, tmp_path, capsys):
    assert train_detector.main([*finetune_args(root, tmp_path / "run"), "--init-from", str(tmp_path)]) == 2
    assert f"--init-from {tmp_path}: not a run directory (no config.json)" in capsys.readouterr().err


def test_init_classes_without_init_from_is_refused(root, tmp_path, capsys):
    assert train_detector.main([*tiny_args(root, tmp_path / "run"), "--init-classes", "a"]) == 2
    assert "init_classes needs init_from" in capsys.readouterr().err


def test_recipe_flags_reach_the_config(root, tmp_path):
    args = train_detector.build_parser().parse_args([*tiny_args(root, tmp_path / "run"),
                                                     "--bias-lr-multiplier", "1", "--no-decay-l2-scales",
                                                     "--adam-epsilon", "0.1"])
    _, config = train_detector.configs_from_args(args)
    assert (config.bias_lr_multiplier, config.decay_l2_scales, config.adam_epsilon) == (1.0, False, 0.1)
    _, default = train_detector.configs_from_args(train_detector.build_parser().parse_args(tiny_args(root, tmp_path)))
    assert (default.bias_lr_multiplier, default.decay_l2_scales) == (2.0, True)
    assert json.loads(json.dumps(config.to_dict()))["adam_epsilon"] == 0.1


def test_fine_tuning_run_records_its_source_and_trains(root, tmp_path, capsys):
    import tensorflow as tf

    from ssd.modeling.model import build_model_from_config

    source = ModelConfig("vgg300", ("triangle", "square", "circle"), width=0.125)
    save_run_config(tmp_path / "source", source, TrainConfig().to_dict())
    model = build_model_from_config(source)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(tmp_path / "source" / "checkpoints"), 1).save()
    args = [*finetune_args(root, tmp_path / "run"), "--init-from", str(tmp_path / "source"),
            "--init-classes", "circle,square", "--iterations", "1", "--eval-every", "0", "--adam-epsilon", "0.1"]
    assert train_detector.main(args) == 0
    assert "finished at step 1" in capsys.readouterr().out
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["width"] == 0.125 and saved["model"]["class_names"] == ["circle", "square"]
    assert saved["train"]["init_from"] == str(tmp_path / "source")
    assert saved["train"]["init_classes"] == ["circle", "square"] and saved["train"]["adam_epsilon"] == 0.1


def test_a_run_directory_that_cannot_be_written_is_one_line_before_any_work(tmp_path, capsys):
    """Found at the start, not at the first checkpoint: under a file, or read-only (as a non-root user;
    root writes through permission bits, so that half runs only where the tests do not run as root)."""
    (tmp_path / "a_file").write_text("x")
    cases = {tmp_path / "a_file" / "run": "cannot create or write there (Not a directory)"}
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        cases[locked] = "cannot create or write there (Permission denied)"
    for run_dir, words in cases.items():
        assert train_detector.main(tiny_args(tmp_path / "no_data", run_dir)) == 2
        err = capsys.readouterr().err
        assert err == f"train_detector.py: error: --run-dir {run_dir} {words}: choose a directory you can write\n"
