"""components/image_trainer: `epochs` is its own execution parameter and reaches run_fn's
custom_config (the end-to-end pipeline tests train through this executor)."""
import json

import pytest
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components.image_trainer import executor
from components.image_trainer.component import ImageTrainer


def test_epochs_override_custom_config_and_none_keeps_it():
    props = {"custom_config": json.dumps({"epochs": 5, "image_size": 64}), "epochs": 2}
    merged = executor.merge_epochs(props)
    assert json.loads(merged["custom_config"]) == {"epochs": 2, "image_size": 64}
    assert json.loads(props["custom_config"])["epochs"] == 5  # input left alone
    unchanged = executor.merge_epochs({"custom_config": '{"epochs": 5}', "epochs": None})
    assert json.loads(unchanged["custom_config"]) == {"epochs": 5}
    assert json.loads(executor.merge_epochs({"epochs": 3})["custom_config"]) == {"epochs": 3}


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_epochs_are_refused(bad):
    with pytest.raises(ValueError, match="epochs="):
        executor.merge_epochs({"custom_config": "{}", "epochs": bad})


def test_component_keeps_the_trainer_contract_and_takes_a_runtime_parameter():
    channel = lambda t: tfx.dsl.Channel(type=t)  # noqa: E731
    trainer = ImageTrainer(
        examples=channel(standard_artifacts.Examples),
        transform_graph=channel(standard_artifacts.TransformGraph),
        schema=channel(standard_artifacts.Schema), run_fn="trainer_module.train.run_fn",
        train_args=tfx.proto.TrainArgs(num_steps=0), eval_args=tfx.proto.EvalArgs(),
        custom_config={"epochs": 5},
        epochs=tfx.dsl.experimental.RuntimeParameter(name="epochs", ptype=int, default=3))
    assert set(trainer.outputs) == {"model", "model_run"}
    assert trainer.exec_properties["epochs"].name == "epochs"
    assert trainer.executor_spec.executor_class is executor.Executor
    vertex = ImageTrainer(
        examples=channel(standard_artifacts.Examples),
        transform_graph=channel(standard_artifacts.TransformGraph),
        schema=channel(standard_artifacts.Schema), run_fn="trainer_module.train.run_fn",
        train_args=tfx.proto.TrainArgs(), eval_args=tfx.proto.EvalArgs(), custom_config={},
        vertex=True)
    from components.image_trainer import vertex_executor  # pylint: disable=g-import-not-at-top
    assert vertex.executor_spec.executor_class is vertex_executor.VertexExecutor
