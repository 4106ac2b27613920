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

from tfx.orchestration.portable import data_types
from tfx.types import artifact_utils

from components.cache_key_driver import CacheKeyDriver
from components.data_validation import executor

SCHEMA_DIGEST_KEY = "schema_digest"


class SchemaDigestDriver(CacheKeyDriver):
    """Adds {schema_digest: sha256 of the schema text}."""

    def extra_properties(self, execution_info: data_types.ExecutionInfo) -> dict:
        props = execution_info.exec_properties
        examples = artifact_utils.get_single_uri(execution_info.input_dict["examples"])
        text = executor.schema_text(props["schema_path"], props.get("template_path"), examples,
                                    bool(props["create"]))
        return {SCHEMA_DIGEST_KEY: hashlib.sha256(text.encode("utf-8")).hexdigest()}
