"""Training loop: the Trainer's `run_fn` and the TFX-free `train_and_export` under it.

Two stages: the head on a frozen backbone for `epochs`, then, when `fine_tune_epochs` > 0,
the top `fine_tune_blocks` blocks with BatchNorm frozen at `fine_tune_learning_rate`
(from scratch, weights="none", stage 2 just goes on training everything at that rate).
The strategy comes first (MultiWorkerMirroredStrategy must precede every TF op), then the
precision policy, then the model under the strategy's scope.

Layout of `model_run_dir`:
  backup_<stage>/                 BackupAndRestore state, taken at the end of an epoch once
                                  `backup_interval_s` (60 s; 0: every epoch; None: never)
                                  have passed: a killed run resumes after the last
                                  backed-up epoch; fit() deletes it when the stage ends
  checkpoints/<stage>.weights.*   weights after the stage's last epoch (TensorFlow format),
                                  unless backup_interval_s is None
  checkpoints/<stage>.done.json   the stage finished (its history): a rerun finding the
                                  weights too loads them instead of training it again, so
                                  stage 1 is not redone when stage 2 or the export was
                                  killed
  logs/                           TensorBoard (train/, validation/), plus a profiler trace
                                  of `profile_batches` ("10,20", or one batch) when set
  timings.json                    wall seconds of this call's phases: setup (strategy, input,
                                  model), fit_<stage> with its epochs_<stage>, the time before
                                  the first and after the last epoch, backups_<stage>
                                  and weights_<stage>, export (where a Trainer's time
                                  went)
A rerun resumes only in the same model_run_dir (an orchestrator restarting the same
execution); give a fresh one for a fresh run.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from typing import Optional, Sequence

from absl import logging
import tensorflow as tf
import tf_keras

from trainer_module import dataset, export, features, model, strategy as strategy_lib
from trainer_module.options import TrainOptions, profile_batch as _profile_batch

HEAD, FINE_TUNE = "head", "fine_tune"
TIMINGS_FILE = "timings.json"


def _split_size(file_pattern, split: str) -> Optional[int]:
    """Examples in `split`, from the ingest report next to the shards, or None."""
    path = dataset.artifact_file(file_pattern, features.REPORT_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return sum(json.load(f)["per_split"].get(split, {}).values()) or None


def _as_list(files) -> list:
    return [os.fspath(files)] if isinstance(files, (str, os.PathLike)) else list(files)


def _one_hot(num_classes: int):
    return lambda images, labels: (images, tf.one_hot(labels, num_classes))


def _learning_rate(rate: float, schedule: str, steps: int):
    """A constant rate, or a cosine decay from `rate` to 0 over `steps` (one stage)."""
    if schedule == "constant":
        return rate
    if schedule == "cosine":
        return tf_keras.optimizers.schedules.CosineDecay(rate, decay_steps=max(1, steps))
    raise ValueError(f"lr_schedule={schedule!r}: give constant or cosine.")


def _compile(training_model, learning_rate, label_smoothing: float, xla: bool):
    # The legacy Adam applies each variable's update with one fused ResourceApplyAdam op;
    # tf_keras' new Adam (without XLA, i.e. on CPU) builds ~15 ops per variable in Python,
    # so B3's first training step traced ~2x longer (BENCHMARKS.md, "Fixed cost on the
    # demo"). The update rule is the same (Kingma & Ba with epsilon-hat, epsilon 1e-7).
    training_model.compile(
        optimizer=tf_keras.optimizers.legacy.Adam(learning_rate),
        loss=tf_keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[tf_keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=xla)
    # The optimizer's slot variables now, not in fit's first step: a tf.function whose first
    # trace creates variables is traced twice, and B3's training step (forward, backward,
    # Adam) is the costliest trace of a run. `_create_all_weights` is how tf_keras itself
    # does this for a legacy optimizer (hdf5_format, LossScaleOptimizer delegates to it).
    if training_model.trainable_variables:
        training_model.optimizer._create_all_weights(  # pylint: disable=protected-access
            training_model.trainable_variables)


def _augment_on_host(layers):
    """A dataset map (uint8 images [B, S, S, 3], labels) -> the same, augmented by `layers`
    (model.augmentation) in float32 and rounded back to uint8, so that a TPU's infeed
    carries a quarter of the bytes of float32."""
    def augment(images, labels):
        augmented = layers(tf.cast(images, tf.float32), training=True)
        return tf.cast(tf.clip_by_value(tf.round(augmented), 0.0, 255.0), tf.uint8), labels

    return augment


def build_for_training(num_classes: int, cfg: dict, train_ds: tf.data.Dataset, *,
                       xla_step: bool) -> tuple:
    """(training_model, inference_model, backbone, train_ds) for `cfg` (TrainOptions as a
    dict), with the augmentation in the training model, or, when XLA compiles the training
    step (`xla`, and any TPU), in train_ds on the host: TF 2.16 has no XLA kernel for
    ImageProjectiveTransformV3, which RandomRotation and RandomZoom run
    (tensorflow/tensorflow#55194), and Keras compiles the whole step, so the first step
    would fail. The same layers draw from the same distributions either way. Build under the
    strategy's scope.
    """
    on_host = cfg["augment"] and xla_step
    training_model, inference_model, backbone = model.build_model(
        num_classes, image_size=cfg["image_size"], weights=cfg["weights"],
        dropout=cfg["dropout"], augment=cfg["augment"] and not on_host,
        random_crop=cfg["random_crop"])
    if not cfg["augment"]:
        return training_model, inference_model, backbone, train_ds
    if on_host:
        # float32 whatever the precision policy: mixed precision is for the accelerator.
        layers = model.augmentation(cfg["random_crop"], dtype="float32")
        train_ds = train_ds.map(_augment_on_host(layers),
                                num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    else:
        layers = training_model.get_layer("augmentation")
    logging.info("Augmentation in the %s: %s.",
                 "input pipeline (XLA compiles the training step)" if on_host else "model",
                 ", ".join([type(layer).__name__ for layer in layers.layers]
                           + ["RandomZoom while decoding (random_crop)"] * cfg["random_crop"]))
    return training_model, inference_model, backbone, train_ds


def _input_options(files, strategy) -> Optional[tf.data.Options]:
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = strategy_lib.shard_policy(
        len(dataset.list_shards(files)), strategy_lib.num_workers())
    return options


# cache="auto" keeps the decoded train + eval splits in memory up to this size: warm epochs
# skip reading and decoding (~8% faster epochs at 64 px on 2 cores, BENCHMARKS.md
# "Orchestration tax"), and memory stays bounded by it however many images there are.
AUTO_CACHE_BYTES = 1 << 30


def resolve_cache(cache, image_size: int, train_files, eval_files, random_crop=False):
    """"auto" -> "memory" when both splits' decoded uint8 pixels (counts from the ingest
    report) fit in AUTO_CACHE_BYTES, else "none" (also with random_crop, which a cache
    would freeze); any other value is returned as it is."""
    if cache != "auto":
        return cache
    if random_crop:
        return "none"
    counts = [_split_size(train_files, features.TRAIN_SPLIT),
              _split_size(eval_files, features.EVAL_SPLIT)]
    if None in counts:  # no ingest report: the size is unknown
        return "none"
    decoded = sum(counts) * image_size * image_size * 3
    choice = "memory" if decoded <= AUTO_CACHE_BYTES else "none"
    logging.info("cache=auto: %d images decode to %.0f MB at %d px: %s.", sum(counts),
                 decoded / 1e6, image_size, choice)
    return choice


def _cache_for(cache, strategy):
    """A file cache prefix per worker: workers sharing one would overwrite each other."""
    if cache in (None, "", "none", "memory") or not isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return cache
    return f"{cache}-worker{strategy.cluster_resolver.task_id}"


def _sample_examples(eval_files, count: int = 2) -> tf.Tensor:
    """A few serialized raw eval examples, to check the Transform graph against the model."""
    first = dataset.list_shards(eval_files)[:1]
    compression = dataset.shard_compression(first)
    return next(iter(tf.data.TFRecordDataset(first, compression_type=compression).batch(count)))


class _IntervalBackup(tf_keras.callbacks.BackupAndRestore):
    """BackupAndRestore that backs up at an epoch's end only when `interval_s` have passed
    since the last backup (or the start of the stage), and never after the stage's last
    epoch (the stage's weights and done.json are written next, and fit deletes the backup).

    A backup of B3 with its optimizer state took ~0.9 s an epoch on 2 cores (BENCHMARKS.md,
    "Orchestration tax"): 20 short demo epochs paid ~18 s for backups nobody used. A crash
    loses at most `interval_s` plus one epoch. Under MultiWorkerMirroredStrategy every worker
    must take part in every backup, and their clocks differ, so it backs up every epoch
    there, the last one included (see on_epoch_end).
    """

    def __init__(self, backup_dir: str, interval_s: float, end_epoch: int):
        super().__init__(backup_dir)
        self._interval_s = float(interval_s)
        self._end_epoch = end_epoch
        self._last = 0.0
        self.seconds = []  # wall time of each backup taken

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._last = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        multi_worker = isinstance(self.model.distribute_strategy,
                                  tf.distribute.MultiWorkerMirroredStrategy)
        # Under MultiWorkerMirroredStrategy a backup is also what removes each non-chief
        # worker's temporary folder, so it stays every epoch, the last one included.
        if multi_worker or (epoch + 1 < self._end_epoch
                            and time.monotonic() - self._last >= self._interval_s):
            started = time.monotonic()
            super().on_epoch_end(epoch, logs)
            self._last = time.monotonic()
            self.seconds.append(round(self._last - started, 2))


def stage_weights(model_run_dir: str, stage: str) -> str:
    """The TensorFlow-format checkpoint prefix of `stage`'s final weights (with the
    optimizer's state, B3 took ~1 s to write on 2 cores against ~2-3 s for HDF5)."""
    return os.path.join(model_run_dir, "checkpoints", f"{stage}.weights")


class _StageEndWeights(tf_keras.callbacks.ModelCheckpoint):
    """Writes the weights once, after the stage's last epoch (a rerun of a finished stage
    loads them); mid-stage resumption is the backup's job. Saving them every epoch cost
    ~2 s an epoch on 2 cores."""

    def __init__(self, filepath: str, end_epoch: int):
        super().__init__(filepath, save_weights_only=True)
        self._end_epoch = end_epoch
        self.seconds = []

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self._end_epoch:
            started = time.monotonic()
            super().on_epoch_end(epoch, logs)
            self.seconds.append(round(time.monotonic() - started, 2))


class _EpochClock(tf_keras.callbacks.Callback):
    """Keeps each epoch's wall seconds (training and validation together) in `seconds`, and
    the monotonic times the first epoch began and the last one ended, so the caller can
    tell fit's time outside every epoch."""

    def __init__(self):
        super().__init__()
        self.seconds, self._start = [], 0.0
        self.first_begin = self.last_end = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.monotonic()
        if self.first_begin is None:
            self.first_begin = self._start

    def on_epoch_end(self, epoch, logs=None):
        self.last_end = time.monotonic()
        self.seconds.append(round(self.last_end - self._start, 2))


def _callbacks(model_run_dir: str, stage: str, end_epoch: int, profile_batch,
               backup_interval_s: Optional[float]) -> list:
    """[epoch clock, backup, stage-end weights, TensorBoard], in this order: the first three
    carry the seconds that go into timings.json. With backup_interval_s None (nothing will
    restart this execution) the backup and the weights, which only a restart reads, are None.
    """
    restartable = backup_interval_s is not None
    return [
        _EpochClock(),
        _IntervalBackup(os.path.join(model_run_dir, f"backup_{stage}"), backup_interval_s,
                        end_epoch) if restartable else None,
        _StageEndWeights(stage_weights(model_run_dir, stage), end_epoch) if restartable
        else None,
        tf_keras.callbacks.TensorBoard(log_dir=os.path.join(model_run_dir, "logs"),
                                       profile_batch=profile_batch),
    ]


def train_and_export(train_files: Sequence[str], eval_files: Sequence[str], *,
                     model_run_dir: str, serving_model_dir: str,
                     transform_output_dir: Optional[str] = None,
                     max_pixels: int = features.MAX_PIXELS, **config) -> dict:
    """Trains (resuming an interrupted run in `model_run_dir`) and exports.

    Args:
      train_files, eval_files: patterns of Split-* shards with labels.txt two levels up.
      model_run_dir: backups, checkpoints and TensorBoard logs (see the module docstring).
      serving_model_dir: where the SavedModel goes (chief only).
      transform_output_dir: Transform graph for the from_examples signature, if any.
      max_pixels: the exported serving signature refuses larger images (the ingest's
        limit, IngestOptions.max_pixels).
      **config: TrainOptions fields (options.py). batch_size is per replica (strategy.py).

    Returns:
      {stage: {"epoch": [0-based epochs run by this call], metric: [values]}} for each
      stage this call trained; a stage finished by an earlier run is absent.

    Raises:
      ValueError: unknown or bad settings, local paths with strategy='tpu'.
      RuntimeError: no such accelerator, unusable weights, a Transform graph that
        normalizes to [0, 1].
    """
    started, timings = time.monotonic(), {}
    cfg = dataclasses.asdict(TrainOptions.from_dict(config))
    train_files, eval_files = _as_list(train_files), _as_list(eval_files)
    profile_batch = _profile_batch(cfg["profile_batches"])
    cfg["cache"] = resolve_cache(cfg["cache"], cfg["image_size"], train_files, eval_files,
                                 cfg["random_crop"])
    if cfg["strategy"] == "tpu":  # checked before connecting: it is cheap and certain
        cache = cfg["cache"] if cfg["cache"] not in (None, "", "none", "memory") else None
        strategy_lib.check_tpu_paths([*train_files, *eval_files, model_run_dir,
                                      serving_model_dir, cache])
    # MultiWorkerMirroredStrategy must exist before TensorFlow runs any op: keep it first.
    strategy = strategy_lib.choose_strategy(cfg["strategy"], cfg["tpu_address"])
    is_tpu = strategy_lib.accelerator(strategy) == "tpu"
    xla = cfg["xla"] and not is_tpu  # a TPU compiles everything with XLA anyway
    strategy_lib.set_precision(strategy_lib.precision_policy(cfg["precision"], strategy))

    class_names = dataset.read_labels(train_files)
    num_classes = len(class_names)
    size = cfg["image_size"]
    batch = strategy_lib.global_batch_size(cfg["batch_size"], strategy)
    train_ds = dataset.make_dataset(
        train_files, image_size=size, batch_size=batch, training=True,
        shuffle_buffer=cfg["shuffle_buffer"], cache=_cache_for(cfg["cache"], strategy),
        seed=cfg["seed"], random_crop=cfg["random_crop"],
        options=_input_options(train_files, strategy)).map(_one_hot(num_classes))
    eval_ds = dataset.make_dataset(
        eval_files, image_size=size, batch_size=batch, training=False,
        cache=_cache_for(cfg["cache"], strategy),
        drop_remainder=is_tpu, repeat=cfg["eval_steps"] is not None,
        options=_input_options(eval_files, strategy)).map(_one_hot(num_classes))
    steps = cfg["train_steps"] or max(
        1, math.ceil((_split_size(train_files, features.TRAIN_SPLIT) or batch) / batch))

    with strategy.scope():
        training_model, inference_model, backbone, train_ds = build_for_training(
            num_classes, cfg, train_ds, xla_step=xla or is_tpu)
    pretrained = not backbone.trainable

    stages = [(HEAD, 0, cfg["epochs"], cfg["learning_rate"])]
    if cfg["fine_tune_epochs"] > 0:
        stages.append((FINE_TUNE, cfg["epochs"], cfg["epochs"] + cfg["fine_tune_epochs"],
                       cfg["fine_tune_learning_rate"]))
    history = {}
    timings["setup"] = round(time.monotonic() - started, 2)
    for stage, first_epoch, end_epoch, learning_rate in stages:
        checkpoint = stage_weights(model_run_dir, stage)
        done = os.path.join(model_run_dir, "checkpoints", f"{stage}.done.json")
        with strategy.scope():
            if stage == FINE_TUNE and pretrained:
                model.unfreeze_top_blocks(backbone, cfg["fine_tune_blocks"])
            if tf.io.gfile.exists(done) and tf.io.gfile.exists(checkpoint + ".index"):
                logging.info("Stage %s already finished in %s: loading %s.", stage,
                             model_run_dir, checkpoint)
                # Not compiled yet: the optimizer state in the checkpoint is not wanted.
                training_model.load_weights(checkpoint).expect_partial()
                continue
            _compile(training_model, _learning_rate(
                learning_rate, cfg["lr_schedule"], steps * (end_epoch - first_epoch)),
                cfg["label_smoothing"], xla)
        fit_started = time.monotonic()
        callbacks = _callbacks(model_run_dir, stage, end_epoch, profile_batch,
                               cfg["backup_interval_s"])
        fit = training_model.fit(
            train_ds, validation_data=eval_ds, initial_epoch=first_epoch, epochs=end_epoch,
            steps_per_epoch=steps, validation_steps=cfg["eval_steps"],
            callbacks=[c for c in callbacks if c is not None], verbose=2)
        fit_ended = time.monotonic()
        clock, backup, weights = callbacks[:3]
        timings[f"fit_{stage}"] = round(fit_ended - fit_started, 2)
        timings[f"epochs_{stage}"] = clock.seconds
        if clock.first_begin is not None:
            timings[f"fit_outside_epochs_{stage}"] = [
                round(clock.first_begin - fit_started, 2), round(fit_ended - clock.last_end, 2)]
        timings[f"backups_{stage}"] = backup.seconds if backup else []
        timings[f"weights_{stage}"] = sum(weights.seconds) if weights else 0
        history[stage] = {"epoch": list(fit.epoch), **fit.history}
        if strategy.extended.should_checkpoint:
            tf.io.gfile.makedirs(os.path.dirname(done))
            with tf.io.gfile.GFile(done, "w") as f:
                json.dump(history[stage], f)

    # Every worker must save under MultiWorkerMirroredStrategy; only the chief's copy is kept.
    chief = strategy.extended.should_checkpoint
    target = serving_model_dir if chief else tempfile.mkdtemp(prefix="imgpipe_worker_")
    export_started = time.monotonic()
    try:
        export.export_model(
            inference_model, class_names, size, target, transform_output_dir,
            sample_examples=_sample_examples(eval_files) if transform_output_dir else None,
            max_pixels=max_pixels)
    finally:
        if not chief:
            shutil.rmtree(target, ignore_errors=True)
    timings["export"] = round(time.monotonic() - export_started, 2)
    if chief:
        timings["total"] = round(time.monotonic() - started, 2)
        with tf.io.gfile.GFile(os.path.join(model_run_dir, TIMINGS_FILE), "w") as f:
            json.dump(timings, f, indent=1)
    return history


def run_fn(fn_args) -> None:
    """TFX Trainer entry point. Settings arrive in `fn_args.custom_config`: TrainOptions
    fields and `max_pixels` (pipeline.trainer_config).

    custom_config may also carry `accelerator` and `accelerator_request`: checked first of all, so a Trainer that asked for a GPU
    or TPU it cannot use fails at once (RuntimeError, one line) instead of training on the CPU.
    """
    # Under vertex_training TFX's Google Cloud extension hands run_fn, inside the custom job,
    # the whole custom_config, its own job settings (ai_platform_*) included.
    config = {k: v for k, v in (fn_args.custom_config or {}).items()
              if not k.startswith("ai_platform_")}
    strategy_lib.check_accelerator(
        config.pop("accelerator", None), config.pop("accelerator_request", None),
        strategy=config.get("strategy", TrainOptions.strategy),
        tpu_address=config.get("tpu_address"))
    train_and_export(
        fn_args.train_files, fn_args.eval_files, model_run_dir=fn_args.model_run_dir,
        serving_model_dir=fn_args.serving_model_dir,
        transform_output_dir=fn_args.transform_output, **config)
