"""Trainer executors that fold the `epochs` execution parameter into `custom_config`.

`run_fn` reads its settings from `fn_args.custom_config`; TFX can only make top-level
execution properties run-time parameters, so `epochs` travels on its own and is merged here,
before the stock executor (local) or the Vertex custom-job launcher (vertex_executor.py, which
forwards the merged properties to the job) sees them.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List

from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.types import standard_component_specs

EPOCHS_KEY = "epochs"


def merge_epochs(exec_properties: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of `exec_properties` whose custom_config JSON carries `epochs` when it is set.

    Raises:
      ValueError: epochs is set and is not an integer >= 1.
    """
    epochs = exec_properties.get(EPOCHS_KEY)
    if epochs is None:
        return dict(exec_properties)
    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs={epochs!r}: must be an integer >= 1.")
    key = standard_component_specs.CUSTOM_CONFIG_KEY
    config = json.loads(exec_properties.get(key) or "null") or {}
    config[EPOCHS_KEY] = int(epochs)
    return {**exec_properties, key: json.dumps(config, sort_keys=True)}


class Executor(trainer_executor.GenericExecutor):
    """Runs `run_fn` in this process."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        super().Do(input_dict, output_dict, merge_epochs(exec_properties))
