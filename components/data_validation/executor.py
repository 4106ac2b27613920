"""Executors of DatasetSchemaGen and DataGate (see component.py)."""
from __future__ import annotations

import hashlib
import json
import os

from absl import logging
from typing import Any, Dict, List, Optional

import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.proto.orchestration import execution_result_pb2
from tfx.types import artifact_utils

from components.data_validation import checks
from components.reports import data_page
from components.data_validation import schema as schema_lib
from trainer_module import features

SCHEMA_FILE = "schema.pbtxt"  # inside a Schema artifact, as SchemaGen writes it
ANOMALIES_FILE = "SchemaDiff.pb"  # per split, as ExampleValidator writes it


def read_json(path: str) -> dict:
    with tf.io.gfile.GFile(path, "r") as f:
        return json.load(f)


def load_schema(path: str):
    import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
    try:
        return tfdv.load_schema_text(path)
    except Exception as err:  # a parse error names line and column
        raise RuntimeError(f"schema file {path} is not a valid schema: "
                           f"{' '.join(str(err).split())[:300]}") from err


def generated_schema_text(template_path: Optional[str], examples_uri: str) -> str:
    """The dataset schema for the vocabulary of `examples_uri`, as deterministic text.

    `template_path` None means schema.CURATED_TEMPLATE.
    """
    from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
    from trainer_module import dataset  # pylint: disable=g-import-not-at-top
    vocabulary = dataset.read_labels(os.path.join(examples_uri, f"Split-{features.TRAIN_SPLIT}"))
    schema = schema_lib.dataset_schema(
        load_schema(template_path or schema_lib.CURATED_TEMPLATE), vocabulary)
    return text_format.MessageToString(schema)


def schema_text(schema_path: str, template_path: Optional[str], examples_uri: str,
                create: bool) -> str:
    """The schema file's text, or, when it does not exist yet, the text a run will write."""
    if tf.io.gfile.exists(schema_path):
        with tf.io.gfile.GFile(schema_path, "r") as f:
            return f.read()
    if not create:
        raise RuntimeError(f"schema file {schema_path} does not exist.")
    return generated_schema_text(template_path, examples_uri)


def write_dataset_schema(schema_path: str, template_path: Optional[str], examples_uri: str):
    """Writes the dataset schema for the vocabulary of `examples_uri`; returns it."""
    tf.io.gfile.makedirs(os.path.dirname(schema_path) or ".")
    with tf.io.gfile.GFile(schema_path, "w") as f:
        f.write(generated_schema_text(template_path, examples_uri))
    return load_schema(schema_path)


class SchemaExecutor(base_executor.BaseExecutor):
    """Copies (creating it first when missing) the dataset schema into the Schema artifact.

    An empty `schema_path` (Kubeflow, Vertex: no file outside an artifact outlives the task)
    writes this run's generated schema into the artifact only.
    """

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
        path = exec_properties["schema_path"]
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        output = artifact_utils.get_single_instance(output_dict["schema"])
        created = not path or not tf.io.gfile.exists(path)
        if created and not exec_properties["create"]:
            raise RuntimeError(f"schema file {path} does not exist.")
        tf.io.gfile.makedirs(output.uri)  # the KFP launcher creates only its parent
        target = os.path.join(output.uri, SCHEMA_FILE)
        if created:
            schema = write_dataset_schema(path or target, exec_properties.get("template_path"),
                                          examples.uri)
            logging.info("Wrote the dataset schema %s.", path or target)
        else:
            schema = load_schema(path)
        tfdv.write_schema_text(schema, target)
        output.set_int_custom_property("created", int(created))
        output.set_string_custom_property("schema_path", path)


def load_anomalies(anomalies_uri: str) -> dict:
    """{split: Anomalies} from ExampleValidator's output."""
    from tensorflow_data_validation.utils import anomalies_util  # pylint: disable=g-import-not-at-top
    out = {}
    for split in features.SPLITS:
        path = os.path.join(anomalies_uri, f"Split-{split}", ANOMALIES_FILE)
        if tf.io.gfile.exists(path):
            out[split] = anomalies_util.load_anomalies_binary(path)
    return out


def evaluate(*, examples_uri: str, statistics_uri: str, schema_uri: str,
             anomalies_uri: str, out_dir: Optional[str], exec_properties: Dict[str, Any]) -> dict:
    """Runs the checks and renders the data report into `out_dir`; returns validation.json's
    dict. `out_dir` None: the checks only (`report` is then None)."""
    report = read_json(os.path.join(examples_uri, features.REPORT_FILE))
    blocking, warnings = checks.verdict(
        load_anomalies(anomalies_uri), load_schema(os.path.join(schema_uri, SCHEMA_FILE)),
        report, **{k: exec_properties[k] for k in (
            "label_skew_threshold", "imbalance_ratio", "max_quarantine_fraction")})
    page = data_page.render(out_dir, examples_uri=examples_uri,
                            statistics_uri=statistics_uri, report=report,
                            blocking=blocking, warnings=warnings,
                            accept_hint=exec_properties["accept_hint"]) \
        if out_dir else None
    return {"passed": not blocking, "blocking": blocking, "warnings": warnings,
            "report": page}


def failure_message(verdict: dict, accept_hint: str) -> str:
    """The lines `imgpipe run` ends with when the gate stops a run."""
    lines = [f"data validation stopped the run: {len(verdict['blocking'])} anomal"
             f"{'y' if len(verdict['blocking']) == 1 else 'ies'} (nothing was trained or "
             "pushed):"]
    lines += [f"  - {line}" for line in verdict["blocking"]]
    lines += [f"  warning: {line}" for line in verdict["warnings"]]
    lines.append(f"data report: {verdict['report'] or 'the DataReport task of this run'}")
    lines.append(f"If the change is intended, accept it with: {accept_hint}")
    return "\n".join(lines)


def report_id(result_uri: str) -> str:
    """The execution id locally (URIs end in it); on Kubeflow/Vertex, whose URIs end in the
    output key, a hash of the URI, which holds the run id."""
    name = os.path.basename(result_uri.rstrip("/"))
    return name if name.isdigit() else hashlib.sha256(result_uri.encode()).hexdigest()[:12]


class GateExecutor(base_executor.BaseExecutor):
    """Passes, or fails its execution with the anomalies in plain words."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> Optional[execution_result_pb2.ExecutorOutput]:
        uri = {k: artifact_utils.get_single_uri(v) for k, v in input_dict.items()}
        result = artifact_utils.get_single_instance(output_dict["result"])
        # Outside the output artifact: TFX deletes a failed execution's output folders,
        # and a blocked run's report is the one a user most needs. No report_dir (Kubeflow,
        # Vertex): the DataReport task before the gate rendered it into an artifact.
        out_dir = os.path.join(exec_properties["report_dir"],
                               f"data-{report_id(result.uri)}") \
            if exec_properties["report_dir"] else None
        verdict = evaluate(examples_uri=uri["examples"], statistics_uri=uri["statistics"],
                           schema_uri=uri["schema"], anomalies_uri=uri["anomalies"],
                           out_dir=out_dir, exec_properties=exec_properties)
        if verdict["blocking"]:
            return execution_result_pb2.ExecutorOutput(
                execution_result=execution_result_pb2.ExecutionResult(
                    code=1, result_message=failure_message(
                        verdict, exec_properties["accept_hint"])))
        tf.io.gfile.makedirs(result.uri)
        with tf.io.gfile.GFile(os.path.join(result.uri, data_page.VERDICT_JSON), "w") as f:
            json.dump(verdict, f, indent=1, ensure_ascii=False)
        result.set_int_custom_property("passed", 1)
        result.set_int_custom_property("warnings", len(verdict["warnings"]))
        result.set_string_custom_property("report", verdict["report"] or "")
        return None
