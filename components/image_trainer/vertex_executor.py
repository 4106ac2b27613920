"""The Trainer as a Vertex AI custom job: TFX's Google Cloud Trainer extension, with `epochs`
merged into `custom_config` first (executor.merge_epochs).

A module of its own because the extension imports google-cloud-aiplatform, ~9 s on 2 cores,
which local runs (the stock executor in executor.py) never need.
"""
from __future__ import annotations

from typing import Any, Dict, List

from tfx import types
from tfx.extensions.google_cloud_ai_platform.trainer import executor as vertex_executor

from components.image_trainer.executor import merge_epochs


class VertexExecutor(vertex_executor.GenericExecutor):
    """Runs `run_fn` in a Vertex AI custom job (worker pools from custom_config)."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        super().Do(input_dict, output_dict, merge_epochs(exec_properties))
