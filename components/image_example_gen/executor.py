"""ImageExampleGen executor: runs `IngestImages` into the Examples artifact and checks the result."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from components.image_example_gen import driver, ingest
from components.image_example_gen import report as report_lib
from trainer_module import features


class Executor(base_beam_executor.BaseBeamExecutor):
    """Writes the Examples artifact: Split-*/ shards, labels.txt, ingest_report.json."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        options = dataclasses.replace(
            ingest.IngestOptions.from_json(exec_properties[driver.INGEST_OPTIONS_KEY]),
            data_root=driver.data_root(exec_properties))
        examples = artifact_utils.get_single_instance(output_dict["examples"])
        with self._make_beam_pipeline() as p:
            _ = p | "IngestImages" >> ingest.IngestImages(options, examples.uri)
        report = report_lib.finish_output(examples.uri)
        examples.split_names = artifact_utils.encode_split_names(
            [s for s in features.SPLITS if report["per_split"].get(s)])
        examples_utils.set_payload_format(
            examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
        examples.set_int_custom_property("num_classes", len(report["classes"]))
        examples.set_int_custom_property("ingested", report["counts"]["ingested"])
        examples.set_int_custom_property("quarantined", report["counts"]["quarantined"])
        examples.set_int_custom_property("skipped", report["counts"]["skipped"])
