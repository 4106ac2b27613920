"""Driver that makes TFX caching notice changed images.

The component's exec properties name only the data root, so without this a second run on
an edited folder would hit the cache. The driver streams the listing (path, size, mtime)
into a hash and adds it as the `input_fingerprint` exec property, which is part of the
cache key. It holds no file list in memory.
"""
from __future__ import annotations

import json

from tfx.dsl.components.base import base_driver
from tfx.orchestration import data_types_utils
from tfx.orchestration.portable import base_driver as ir_base_driver
from tfx.orchestration.portable import data_types
from tfx.proto.orchestration import driver_output_pb2

from components.image_example_gen import sources

INGEST_OPTIONS_KEY = "ingest_options"
INPUT_FINGERPRINT_KEY = "input_fingerprint"
DATA_ROOT_KEY = "data_root"


def data_root(exec_properties) -> str:
    """The data root a run ingests: the `data_root` property if set, else the options'."""
    return exec_properties.get(DATA_ROOT_KEY) or \
        json.loads(exec_properties[INGEST_OPTIONS_KEY])["data_root"]


class FingerprintDriver(base_driver.BaseDriver, ir_base_driver.BaseDriver):
    """IR driver: exec_properties + {input_fingerprint: sha256 of the data root listing}."""

    def __init__(self, metadata_handle):
        base_driver.BaseDriver.__init__(self, metadata_handle)
        ir_base_driver.BaseDriver.__init__(self, metadata_handle)

    def run(self, execution_info: data_types.ExecutionInfo) -> driver_output_pb2.DriverOutput:
        result = driver_output_pb2.DriverOutput()
        props = dict(execution_info.exec_properties)
        props[INPUT_FINGERPRINT_KEY] = sources.fingerprint(data_root(props))
        for key, value in props.items():
            if value is not None:
                data_types_utils.set_metadata_value(result.exec_properties[key], value)
        for key, artifacts in execution_info.output_dict.items():
            for artifact in artifacts:
                result.output_artifacts[key].artifacts.append(artifact.mlmd_artifact)
        return result
