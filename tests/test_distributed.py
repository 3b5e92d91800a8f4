"""tf.distribute on CPU: MirroredStrategy over two logical CPUs, MultiWorkerMirroredStrategy over two
local processes on loopback. Each scenario runs in fresh processes (devices and TF_CONFIG must be
set before TensorFlow initialises), driven by the script below; the test compares what they report
with a single-device run of the same global batch in the same process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300

SCRIPT = textwrap.dedent('''
    """One distributed scenario: step-level comparison with a single-device run, then a short fit()."""
    import dataclasses, json, os, sys
    from pathlib import Path
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    mode, out_dir, data_root = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    if mode == "mirrored":  # two logical CPU devices, before anything initialises TensorFlow
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    from ssd_datasets.synthetic import SYNTHETIC_CLASSES, load_synthetic
    from ssd.config import ModelConfig
    from ssd.engine.recipe import TrainConfig
    from ssd.core.losses import multibox_loss
    from ssd.core.matching import training_targets
    from ssd.data.pipeline import Batch
    from ssd.engine.distribute import make_strategy
    from ssd.engine.trainer import Trainer

    strategy = make_strategy("multi_worker" if mode == "multi_worker" else "mirrored")
    model_config = ModelConfig("vgg300", SYNTHETIC_CLASSES, width=0.125)
    config = TrainConfig(data_root=data_root, train_splits=("trainval",), val_splits=(), batch_size=4,
                         iterations=3, optimizer="sgd", learning_rate=1e-3, schedule="constant",
                         from_scratch=True, workers=1, checkpoint_every=2, eval_every=0,
                         expand_probability=0.0)
    train_set = load_synthetic(data_root, "trainval")
    keras.utils.set_random_seed(0)
    trainer = Trainer(model_config, config, out_dir / "steps", train_set, strategy=strategy)
    index, workers = trainer.shard.index, trainer.shard.count
    reference = Trainer(model_config, config, out_dir / f"reference-{index}", train_set,
                        strategy=tf.distribute.get_strategy())
    reference.model.set_weights(trainer.model.get_weights())

    def global_batch(step):
        """4 images; the halves hold 1 + 2 and 4 + 6 boxes, so their positive counts differ."""
        rng = np.random.default_rng(step)
        counts = np.array([1, 2, 4, 6], np.int32)
        boxes = np.zeros((4, 8, 4), np.float32)
        labels = np.zeros((4, 8), np.int32)
        for i, n in enumerate(counts):
            xy = rng.uniform(0.0, 0.6, (n, 2))
            boxes[i, :n] = np.concatenate([xy, xy + rng.uniform(0.1, 0.4, (n, 2))], 1)
            labels[i, :n] = rng.integers(1, len(SYNTHETIC_CLASSES) + 1, n)
        images = rng.integers(0, 256, (4, 300, 300, 3), dtype=np.uint8)
        return Batch(images=images, boxes=boxes, labels=labels, counts=counts,
                     indices=np.arange(4, dtype=np.int32), epoch=0, index=step)

    def part(batch, k, parts):
        per = len(batch.images) // parts
        cut = slice(k * per, (k + 1) * per)
        return dataclasses.replace(batch, **{name: a[cut] for name, a in batch.arrays().items()})

    def loss_alone(model, batch):
        """This batch's loss normalised by its own positives (what a per-replica mean would give)."""
        deltas, labels = training_targets(tf.constant(batch.boxes), tf.constant(batch.labels),
                                          tf.constant(batch.counts), trainer.train_step.anchors)
        out = model(tf.constant(batch.images), training=True)
        return float(multibox_loss(out["box_deltas"], out["class_logits"], deltas, labels)["loss"])

    first = global_batch(0)
    report = {"index": index, "workers": workers, "replicas": strategy.num_replicas_in_sync,
              "local_mean_loss": float(np.mean([loss_alone(reference.model, part(first, k, 2)) for k in range(2)])),
              "global_loss": loss_alone(reference.model, first), "steps": []}
    for step in range(3):
        batch = global_batch(step)
        mine = trainer.train_step(part(batch, index, workers))
        alone = reference.train_step(batch)
        report["steps"].append({"distributed": mine, "single": alone})

    replica_gap, reference_gap = 0.0, 0.0
    for var, ref in zip(trainer.model.trainable_variables, reference.model.trainable_variables):
        copies = [np.asarray(c) for c in strategy.experimental_local_results(var.value)]  # the tf variable
        replica_gap = max(replica_gap, *(float(np.max(np.abs(c - copies[0]))) for c in copies))
        # Biases start at 0 and are ~1e-4 after three steps: relative to that, float summation order
        # alone reaches 1e-3; the floor still shows a bias moved at the wrong rate (a 1e-4 gap).
        scale = float(np.max(np.abs(ref.numpy()))) + 1e-2
        reference_gap = max(reference_gap, float(np.max(np.abs(copies[0] - ref.numpy()))) / scale)
    report.update(local_copies=len(copies), replica_gap=replica_gap, reference_gap=reference_gap)

    # The real loop: each worker reads its shard through its own pipeline.
    fitter = Trainer(model_config, config, out_dir / "fit", train_set, strategy=strategy)
    result = fitter.fit(progress=False)
    weights = np.concatenate([np.asarray(v).ravel() for v in fitter.model.trainable_variables])
    np.save(out_dir / f"weights-{index}.npy", weights)
    report.update(fit_step=result.step, is_chief=fitter.shard.is_chief,
                  scratch=fitter.checkpointer.scratch, step_after_fit=fitter.step)
    (out_dir / f"report-{index}.json").write_text(json.dumps(report))
''')


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from ssd_datasets.synthetic import generate_synthetic_voc

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_voc(root, num_train=16, num_test=0, image_size_range=(64, 96))
    return root


def run_workers(tmp_path: Path, data_root: Path, mode: str, envs: list[dict]) -> list[dict]:
    """Start one process per env, wait for all; their reports, ordered by worker index."""
    script = tmp_path / "scenario.py"
    script.write_text(SCRIPT)
    procs = []
    for extra in envs:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
        procs.append(subprocess.Popen([sys.executable, str(script), mode, str(tmp_path), str(data_root)],
                                      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-4000:]
    return [json.loads((tmp_path / f"report-{i}.json").read_text()) for i in range(len(envs))]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def check_matches_single_device(report: dict) -> None:
    """Losses equal the single-device run's on the same global batch; weights stay in step."""
    # The test is only meaningful if per-replica normalisation would give another number.
    assert abs(report["local_mean_loss"] - report["global_loss"]) > 1e-2 * report["global_loss"]
    for step in report["steps"]:
        mine, alone = step["distributed"], step["single"]
        assert mine["positives"] == alone["positives"]
        for key in ("total_loss", "confidence_loss", "localization_loss", "regularization_loss"):
            assert mine[key] == pytest.approx(alone[key], rel=1e-4), key
    assert report["reference_gap"] < 1e-3  # summation order differs; the losses above agree to 1e-4


@pytest.mark.slow
def test_mirrored_strategy_over_two_cpus_matches_one_device(tmp_path, data_root):
    (report,) = run_workers(tmp_path, data_root, "mirrored", [{}])
    assert report["replicas"] == 2 and report["local_copies"] == 2
    check_matches_single_device(report)
    assert report["replica_gap"] == 0.0  # both replicas applied the same all-reduced gradient
    assert report["fit_step"] == 3
    assert (tmp_path / "fit" / "checkpoints" / "ckpt-3.index").is_file()


@pytest.mark.slow
def test_multi_worker_strategy_on_loopback_matches_one_device(tmp_path, data_root):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    envs = [{"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
            for i in range(2)]
    reports = run_workers(tmp_path, data_root, "multi_worker", envs)
    for i, report in enumerate(reports):
        assert (report["index"], report["workers"], report["replicas"]) == (i, 2, 2)
        check_matches_single_device(report)
        assert report["fit_step"] == report["step_after_fit"] == 3
    # both workers end the real loop with the same weights
    first, second = (np.load(tmp_path / f"weights-{i}.npy") for i in range(2))
    np.testing.assert_array_equal(first, second)
    # only the chief wrote the run directory; the other's scratch checkpoints are gone
    assert [r["is_chief"] for r in reports] == [True, False]
    assert reports[0]["scratch"] is None and not Path(reports[1]["scratch"]).exists()
    fit_dir = tmp_path / "fit"
    assert sorted(p.name for p in fit_dir.iterdir()) == ["checkpoints", "config.json", "logs", "train.lock",
                                                         "train.log"]
    assert (fit_dir / "train.lock").read_text() == ""  # the chief's lock, released when it ended
    assert len(list((fit_dir / "logs").iterdir())) == 1
    assert len((fit_dir / "train.log").read_text().splitlines()) == 1
    assert {p.name for p in (fit_dir / "checkpoints").iterdir()} >= {"ckpt-2.index", "ckpt-3.index"}
