"""Driver that keys DatasetSchemaGen's cache on the schema's content, not its path.

It adds `schema_digest`, the sha256 of the schema file's text, or, before the first run wrote
the file, of the text that run will write (the same function makes both). So a second run
after the file was created is a cache hit, and an edited file re-runs validation even when
the data did not change. (ImportSchemaGen keys on the path only: an edit is ignored.)
Custom drivers do not run on Kubeflow/Vertex; there the ingest task is never cached, so
every later task, this one included, runs anyway.
"""
from __future__ import annotations

import hashlib

from tfx.dsl.components.base import base_driver
from tfx.orchestration import data_types_utils
from tfx.orchestration.portable import base_driver as ir_base_driver
from tfx.orchestration.portable import data_types
from tfx.proto.orchestration import driver_output_pb2
from tfx.types import artifact_utils

from components.data_validation import executor

SCHEMA_DIGEST_KEY = "schema_digest"


class SchemaDigestDriver(base_driver.BaseDriver, ir_base_driver.BaseDriver):
    """IR driver: exec_properties + {schema_digest: sha256 of the schema text}."""

    def __init__(self, metadata_handle):
        base_driver.BaseDriver.__init__(self, metadata_handle)
        ir_base_driver.BaseDriver.__init__(self, metadata_handle)

    def run(self, execution_info: data_types.ExecutionInfo) -> driver_output_pb2.DriverOutput:
        result = driver_output_pb2.DriverOutput()
        props = dict(execution_info.exec_properties)
        examples = artifact_utils.get_single_uri(execution_info.input_dict["examples"])
        text = executor.schema_text(props["schema_path"], props.get("template_path"), examples,
                                    bool(props["create"]))
        props[SCHEMA_DIGEST_KEY] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        for key, value in props.items():
            if value is not None:
                data_types_utils.set_metadata_value(result.exec_properties[key], value)
        for key, artifacts in execution_info.output_dict.items():
            for artifact in artifacts:
                result.output_artifacts[key].artifacts.append(artifact.mlmd_artifact)
        return result
