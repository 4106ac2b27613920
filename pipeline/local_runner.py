"""Local runner: LocalDagRunner with SQLite MLMD in the workdir.

Works three ways, all ending in exactly one `LocalDagRunner().run(...)` call:
  python pipeline/local_runner.py                       (settings from IMGPIPE_* below)
  tfx pipeline create --engine local --pipeline_path pipeline/local_runner.py
  tfx run create --engine local --pipeline_name imgpipe
and `imgpipe run`, which calls `run(config)` directly.

Environment (read here and in the CLI only):
  IMGPIPE_DATA_ROOT  image folder / CSV manifest (required)
  IMGPIPE_WORKDIR    work directory (required)
  IMGPIPE_CONFIG     optional YAML file of PipelineConfig fields
"""
import atexit
import gc
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFT/TFMA need Keras 2 (tf_keras)

# Importing TFX, TFMA, TFT, TFDV, Beam and TensorFlow creates ~600k objects that live as long
# as the process: the garbage collector's full passes over them cost seconds of every start
# (BENCHMARKS.md, "Fixed cost on the demo"). So no collection while importing them, and
# afterwards they are frozen (gc.freeze: later passes skip them; they are never garbage).
_GC_WAS_ENABLED = gc.isenabled()
gc.disable()
# At exit, Python's last collections walk every object still alive (TensorFlow, TFX, Beam,
# the run's graphs). Frozen objects are skipped; the process is ending, and objects are
# still freed by reference counting.
atexit.register(gc.freeze)

from pipeline.config import PipelineConfig, load_config  # noqa: E402
from pipeline.wiring import create_pipeline  # noqa: E402
from pipeline import workdir_lock  # noqa: E402
from trainer_module import features  # noqa: E402

from tfx.orchestration import metadata  # noqa: E402  (not tfx.v1: see wiring.py)
from tfx.orchestration import pipeline as tfx_pipeline  # noqa: E402
from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # noqa: E402

gc.freeze()
if _GC_WAS_ENABLED:
    gc.enable()


def config_from_env(environ=None) -> PipelineConfig:
    """PipelineConfig from IMGPIPE_CONFIG (YAML) overridden by IMGPIPE_DATA_ROOT/WORKDIR."""
    environ = os.environ if environ is None else environ
    if not environ.get("IMGPIPE_CONFIG") and not (
            environ.get("IMGPIPE_DATA_ROOT") and environ.get("IMGPIPE_WORKDIR")):
        raise ValueError("set IMGPIPE_DATA_ROOT and IMGPIPE_WORKDIR (or IMGPIPE_CONFIG) "
                         "for the local runner.")
    overrides = {"data_root": environ.get("IMGPIPE_DATA_ROOT"),
                 "workdir": environ.get("IMGPIPE_WORKDIR")}
    return load_config(environ.get("IMGPIPE_CONFIG") or None, overrides)


def build(config: PipelineConfig, validate_only: bool = False) -> tfx_pipeline.Pipeline:
    """create_pipeline(config) plus the local MLMD store. Every local run is a new Trainer
    execution, so Trainer backups are off unless `backup_interval_s` is set."""
    return create_pipeline(
        config,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(
            features.metadata_path(config.workdir)),
        validate_only=validate_only, trainer_restarts=False)


def run(config: PipelineConfig, validate_only: bool = False) -> None:
    """One LocalDagRunner run, holding the workdir's lock (workdir_lock.py).

    Raises:
      RuntimeError: another run is using the workdir (one line naming it).
    """
    with workdir_lock.hold(config.workdir):
        LocalDagRunner().run(build(config, validate_only))


if __name__ == "__main__":
    run(config_from_env())
