"""The data and run reports of a Kubeflow or Vertex run, made by the pipeline itself.

A local run writes its reports into the workdir from the CLI. On a cluster nothing outside a
task's declared output artifacts outlives the task, and no CLI is there after the run; so
`report_tasks` adds two tasks whose output is the report, one self-contained HTML file
(pictures inlined) typed `system.HTML`:

  DataReport  after ExampleValidator and before the DataGate: the gate fails its task on
              anomalies, and the launcher uploads nothing but the logs of a failed task
              (launcher_v2.go `uploadOutputArtifacts`,
              https://github.com/kubeflow/pipelines/blob/2.16.0/backend/src/v2/component/launcher_v2.go#L680-L686),
              so the report of a blocked run must come from a task that succeeded first.
  RunReport   after the Pusher: the Evaluator's verdict, confusion matrix, per-class
              metrics, training curves, the most confident mistakes, where the model was
              pushed, then the data sections from the DataGate's recorded verdict
              (components/reports renders both pages, for local runs too).

The KFP UI renders an artifact whose MLMD type is `system.HTML` and that has a
`display_name` (frontend MetricsVisualizations.tsx `getVertifiedHtmlArtifacts` and
`getHtmlViewerConfig`, which reads the one object at the artifact's URI,
https://github.com/kubeflow/pipelines/blob/2.5.0/frontend/src/components/viewers/MetricsVisualizations.tsx);
the launcher names the MLMD type after the schema's title (metadata/client.go
`SchemaToArtifactType`), which TFX's compiler sets to a custom type's TYPE_NAME.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Dict, List

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.data_validation import executor as data_executor
from components.data_validation.component import DataValidation
from components.reports import page as report_page, run_page
from components.image_example_gen import sources
from pipeline import blessing, run_report
from pipeline.config import PipelineConfig
from pipeline.wiring import accept_hint

DATA_REPORT, RUN_REPORT = "DataReport", "RunReport"
REPORT_KEY = "report"
_GATE_PROPERTIES = ("label_skew_threshold", "imbalance_ratio", "max_quarantine_fraction")


class HTML(types.Artifact):
    """One self-contained HTML page at the artifact's URI (a file, not a folder)."""
    TYPE_NAME = "system.HTML"


def write_html(artifact: types.Artifact, page: str, display_name: str) -> None:
    """Writes `page` as the file at the artifact's URI and names it for the KFP UI."""
    gfile = sources.gfile()
    gfile.makedirs(os.path.dirname(artifact.uri.rstrip("/")))
    with gfile.GFile(artifact.uri, "w") as f:
        f.write(page)
    artifact.set_string_custom_property("display_name", display_name)


_DATA_INPUTS = {
    "examples": ChannelParameter(type=standard_artifacts.Examples),
    "statistics": ChannelParameter(type=standard_artifacts.ExampleStatistics),
    "schema": ChannelParameter(type=standard_artifacts.Schema),
    "anomalies": ChannelParameter(type=standard_artifacts.ExampleAnomalies),
}
_PARAMETERS = {"accept_hint": ExecutionParameter(type=str),
               **{k: ExecutionParameter(type=float) for k in _GATE_PROPERTIES}}


class DataReportExecutor(base_executor.BaseExecutor):
    """Renders the data report (the gate's checks, without stopping anything)."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        uri = {k: artifact_utils.get_single_uri(v) for k, v in input_dict.items()}
        report = artifact_utils.get_single_instance(output_dict[REPORT_KEY])
        with tempfile.TemporaryDirectory() as folder:
            verdict = data_executor.evaluate(
                examples_uri=uri["examples"], statistics_uri=uri["statistics"],
                schema_uri=uri["schema"], anomalies_uri=uri["anomalies"], out_dir=folder,
                exec_properties=exec_properties)
            write_html(report, report_page.single_file(folder), "data report")
        report.set_int_custom_property("passed", int(verdict["passed"]))
        report.set_int_custom_property("anomalies", len(verdict["blocking"]))
        report.set_int_custom_property("warnings", len(verdict["warnings"]))


class RunReportExecutor(base_executor.BaseExecutor):
    """Renders the run report from the Trainer's, Evaluator's and Pusher's artifacts."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        uri = {k: artifact_utils.get_single_uri(v) for k, v in input_dict.items()}
        verdict = artifact_utils.get_single_instance(input_dict["blessing"])
        pushed = artifact_utils.get_single_instance(input_dict["pushed_model"])
        report = artifact_utils.get_single_instance(output_dict[REPORT_KEY])
        evaluation = blessing.evaluation_of(
            uri["evaluation"], uri["blessing"], uri["examples"], uri["model"],
            verdict.get_string_custom_property("baseline_model") or None)
        with tempfile.TemporaryDirectory() as folder:
            run_page.render(
                folder, evaluation,
                pushed={"pushed": bool(pushed.get_int_custom_property("pushed")),
                        "destination": pushed.get_string_custom_property("pushed_destination"),
                        "version": pushed.get_string_custom_property("pushed_version")},
                serving="the model an earlier run pushed, if any (its Pusher's pushed_model)",
                curves=run_report.training_history(uri["model_run"]),
                mistakes=blessing.mistakes(uri["evaluation"]),
                data=run_report.gate_record(uri["examples"], uri["statistics"],
                                            uri["validation"]))
            write_html(report, report_page.single_file(folder), "run report")
        report.set_int_custom_property("blessed", int(evaluation["blessed"]))
        accuracy = evaluation["accuracy"].get("candidate")
        if accuracy is not None:
            report.set_float_custom_property("accuracy", accuracy)


class DataReportSpec(types.ComponentSpec):
    PARAMETERS = _PARAMETERS
    INPUTS = _DATA_INPUTS
    OUTPUTS = {REPORT_KEY: ChannelParameter(type=HTML)}


class RunReportSpec(types.ComponentSpec):
    PARAMETERS = {}
    INPUTS = {"examples": _DATA_INPUTS["examples"], "statistics": _DATA_INPUTS["statistics"],
              "validation": ChannelParameter(type=DataValidation),
              "model": ChannelParameter(type=standard_artifacts.Model),
              "model_run": ChannelParameter(type=standard_artifacts.ModelRun),
              "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
              "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
              "pushed_model": ChannelParameter(type=standard_artifacts.PushedModel)}
    OUTPUTS = {REPORT_KEY: ChannelParameter(type=HTML)}


class DataReport(base_component.BaseComponent):
    """examples, statistics, schema, anomalies -> report (system.HTML); see the module doc."""
    SPEC_CLASS = DataReportSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(DataReportExecutor)

    def __init__(self, **kwargs):
        super().__init__(spec=DataReportSpec(report=types.Channel(type=HTML), **kwargs))


class RunReport(base_component.BaseComponent):
    """examples, statistics, the DataGate's validation, model, model_run, evaluation,
    blessing, pushed_model -> report."""
    SPEC_CLASS = RunReportSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(RunReportExecutor)

    def __init__(self, **kwargs):
        super().__init__(spec=RunReportSpec(report=types.Channel(type=HTML), **kwargs))


def report_tasks(config: PipelineConfig) -> Callable[[Dict[str, Any]], List[Any]]:
    """create_pipeline's `extra_components` for a pipeline built with `artifact_outputs`:
    DataReport before the DataGate and, when the pipeline trains, RunReport after the Pusher."""
    parameters = {"accept_hint": accept_hint(config, artifact_outputs=True),
                  **{k: float(getattr(config.validation, k)) for k in _GATE_PROPERTIES}}

    def add(by_id: Dict[str, Any]) -> List[Any]:
        data = {"examples": by_id["ImageExampleGen"].outputs["examples"],
                "statistics": by_id["StatisticsGen"].outputs["statistics"],
                "schema": by_id["DatasetSchemaGen"].outputs["schema"],
                "anomalies": by_id["ExampleValidator"].outputs["anomalies"]}
        added = [DataReport(**data, **parameters).with_id(DATA_REPORT)]
        by_id["DataGate"].add_upstream_node(added[0])
        if "Pusher" in by_id:
            trainer, evaluator = by_id["Trainer"], by_id["Evaluator"]
            added.append(RunReport(
                examples=data["examples"], statistics=data["statistics"],
                validation=by_id["DataGate"].outputs["result"], model=trainer.outputs["model"],
                model_run=trainer.outputs["model_run"],
                evaluation=evaluator.outputs["evaluation"],
                blessing=evaluator.outputs["blessing"],
                pushed_model=by_id["Pusher"].outputs["pushed_model"]).with_id(RUN_REPORT))
        return added
    return add
