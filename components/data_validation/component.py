"""DatasetSchemaGen and DataGate: the per-dataset schema and the gate that stops a bad run.

DatasetSchemaGen (examples -> schema)
  Reads `schema_path`. When the file is missing and `create` is set (the first run of a
  workdir), writes it first: the curated template tightened to this dataset's vocabulary
  (schema.py). The file is the user's to read and edit; SchemaDigestDriver puts a hash of
  its text in the cache key, so an edited file takes effect on the next run even when
  nothing else changed (driver.py).

DataGate (examples, statistics, schema, anomalies -> result)
  Turns ExampleValidator's anomalies and the gate's own checks into plain words
  (checks.py), renders the data report into `report_dir/data-<execution id>/`, and then:
  passes (a DataValidation artifact with int property `passed` = 1), or fails its
  execution with the anomalies as the result message. A failed execution is recorded in
  MLMD (state FAILED plus the message) and stops the run: Transform, Trainer, Evaluator and
  Pusher do not run. This works the same on Kubeflow, where a failed task fails the run;
  no `Cond` on a string-keyed property is needed.
"""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.data_validation import driver, executor


class DataValidation(types.Artifact):
    """The gate's verdict: validation.json and the data report's location."""
    TYPE_NAME = "imgpipe.DataValidation"


class DatasetSchemaGenSpec(types.ComponentSpec):
    PARAMETERS = {
        "schema_path": ExecutionParameter(type=str),
        "template_path": ExecutionParameter(type=str, optional=True),
        "create": ExecutionParameter(type=int),
        # Filled in by SchemaDigestDriver at run time; part of the cache key.
        driver.SCHEMA_DIGEST_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {"schema": ChannelParameter(type=standard_artifacts.Schema)}


class DatasetSchemaGen(base_component.BaseComponent):
    """The dataset's schema, written on first use (see the module docstring).

    Args:
      examples: ImageExampleGen's output (labels.txt is read from it).
      schema_path: the schema file; created from the template when missing and `create`.
      template_path: the template; None is the curated one shipped with the code that runs.
      create: write `schema_path` when it does not exist (False for a user's own schema).
    """
    SPEC_CLASS = DatasetSchemaGenSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.SchemaExecutor)
    DRIVER_CLASS = driver.SchemaDigestDriver

    def __init__(self, examples: types.BaseChannel, schema_path: str,
                 template_path: Optional[str] = None, create: bool = True):
        super().__init__(spec=DatasetSchemaGenSpec(
            examples=examples, schema_path=schema_path, template_path=template_path,
            create=int(create), schema=types.Channel(type=standard_artifacts.Schema)))


class DataGateSpec(types.ComponentSpec):
    PARAMETERS = {
        "report_dir": ExecutionParameter(type=str),
        "accept_hint": ExecutionParameter(type=str),
        "label_skew_threshold": ExecutionParameter(type=float),
        "imbalance_ratio": ExecutionParameter(type=float),
        "max_quarantine_fraction": ExecutionParameter(type=float),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "statistics": ChannelParameter(type=standard_artifacts.ExampleStatistics),
        "schema": ChannelParameter(type=standard_artifacts.Schema),
        "anomalies": ChannelParameter(type=standard_artifacts.ExampleAnomalies),
    }
    OUTPUTS = {"result": ChannelParameter(type=DataValidation)}


class DataGate(base_component.BaseComponent):
    """Stops the run on anomalies; warns on skew, imbalance and quarantine rate.

    Args:
      examples, statistics, schema, anomalies: the channels of the validation steps.
      report_dir: the data report goes to report_dir/data-<execution id>/.
      accept_hint: the command that accepts an intended change, printed with the anomalies.
      label_skew_threshold, imbalance_ratio, max_quarantine_fraction: warning thresholds.
    """
    SPEC_CLASS = DataGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.GateExecutor)

    def __init__(self, *, examples, statistics, schema, anomalies, report_dir: str,
                 accept_hint: str, label_skew_threshold: float, imbalance_ratio: float,
                 max_quarantine_fraction: float):
        super().__init__(spec=DataGateSpec(
            examples=examples, statistics=statistics, schema=schema, anomalies=anomalies,
            report_dir=report_dir, accept_hint=accept_hint,
            label_skew_threshold=float(label_skew_threshold),
            imbalance_ratio=float(imbalance_ratio),
            max_quarantine_fraction=float(max_quarantine_fraction),
            result=types.Channel(type=DataValidation)))
