"""CacheKeyDriver: the base of the drivers that add a run-time value to a component's cache key.

TFX keys a cached execution on its inputs and execution properties. Some facts that decide
whether a step must run again live outside both (the files under a data root, the text of a
user-edited schema). A subclass computes them in `extra_properties`; this driver adds them
to the execution properties before TFX looks up the cache. Drivers run only under the local
and portable launchers; the Kubeflow V2 compiler ignores them (kubeflow/targets.py).
"""
from __future__ import annotations

from typing import Any, Dict

from tfx.dsl.components.base import base_driver
from tfx.orchestration import data_types_utils
from tfx.orchestration.portable import base_driver as ir_base_driver
from tfx.orchestration.portable import data_types
from tfx.proto.orchestration import driver_output_pb2


class CacheKeyDriver(base_driver.BaseDriver, ir_base_driver.BaseDriver):
    """IR driver: exec_properties + extra_properties(execution_info)."""

    def __init__(self, metadata_handle):
        base_driver.BaseDriver.__init__(self, metadata_handle)
        ir_base_driver.BaseDriver.__init__(self, metadata_handle)

    def extra_properties(self, execution_info: data_types.ExecutionInfo) -> Dict[str, Any]:
        raise NotImplementedError

    def run(self, execution_info: data_types.ExecutionInfo) -> driver_output_pb2.DriverOutput:
        result = driver_output_pb2.DriverOutput()
        props = {**execution_info.exec_properties, **self.extra_properties(execution_info)}
        for key, value in props.items():
            if value is not None:
                data_types_utils.set_metadata_value(result.exec_properties[key], value)
        for key, artifacts in execution_info.output_dict.items():
            for artifact in artifacts:
                result.output_artifacts[key].artifacts.append(artifact.mlmd_artifact)
        return result
