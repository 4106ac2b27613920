"""components/artifact_pusher.py: the real TFX Pusher executors on real artifacts and folders.

The model folders are small stand-ins with the layout a Trainer writes
(`<model uri>/Format-Serving/...`); what is checked is what the Pusher does with files.
"""
from __future__ import annotations

import os
import time

from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components import artifact_pusher
from trainer_module import features


def _model(root, name: str, weights: bytes):
    folder = root / name / "Format-Serving"
    (folder / "variables").mkdir(parents=True)
    (folder / "assets.extra").mkdir()
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(weights)
    (folder / "assets.extra" / "labels.txt").write_text("a\nb\n")
    model = standard_artifacts.Model()
    model.uri = str(root / name)
    return model


def _blessing(root, blessed: bool):
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(root / f"blessing_{int(blessed)}")
    blessing.set_int_custom_property("blessed", int(blessed))
    return blessing


def _push(executor_cls, model, blessing, output_uri: str, serving=None):
    pushed = standard_artifacts.PushedModel()
    pushed.uri = output_uri
    properties = {"custom_config": "null"}
    if serving is not None:
        properties["push_destination"] = proto_utils.proto_to_json(
            pusher_pb2.PushDestination(filesystem=pusher_pb2.PushDestination.Filesystem(
                base_directory=serving)))
    executor_cls().Do({"model": [model], "model_blessing": [blessing]},
                      {"pushed_model": [pushed]}, properties)
    return pushed


def test_the_model_already_serving_is_not_pushed_again(tmp_path):
    serving = str(tmp_path / "serving")
    first = _model(tmp_path, "run1", b"weights-1")
    pushed = _push(artifact_pusher.ServingPushExecutor, first, _blessing(tmp_path, True),
                   str(tmp_path / "out1"), serving)
    (version,) = os.listdir(serving)
    assert pushed.get_int_custom_property("pushed") == 1
    # A re-run that only gained a baseline: the very same model, blessed again.
    again = _push(artifact_pusher.ServingPushExecutor, first, _blessing(tmp_path, True),
                  str(tmp_path / "out2"), serving)
    assert os.listdir(serving) == [version]
    assert again.get_int_custom_property("pushed") == 0
    assert again.get_string_custom_property(features.STILL_SERVING_KEY) == \
        os.path.join(serving, version)
    # Another run's identical files are the same model too; one changed byte is not.
    twin = _model(tmp_path, "run3", b"weights-1")
    assert _push(artifact_pusher.ServingPushExecutor, twin, _blessing(tmp_path, True),
                 str(tmp_path / "out3"), serving).get_int_custom_property("pushed") == 0
    time.sleep(1.1)  # versions are Unix seconds
    changed = _model(tmp_path, "run4", b"weights-2")
    newer = _push(artifact_pusher.ServingPushExecutor, changed, _blessing(tmp_path, True),
                  str(tmp_path / "out4"), serving)
    assert newer.get_int_custom_property("pushed") == 1 and len(os.listdir(serving)) == 2
    assert artifact_pusher.fingerprint(artifact_pusher.newest_version(serving)) == \
        artifact_pusher.fingerprint(os.path.join(changed.uri, "Format-Serving"))


def test_an_unblessed_model_is_never_pushed(tmp_path):
    serving = str(tmp_path / "serving")
    model = _model(tmp_path, "run1", b"w")
    for executor in (artifact_pusher.ServingPushExecutor, artifact_pusher.ArtifactPushExecutor):
        pushed = _push(executor, model, _blessing(tmp_path, False), str(tmp_path / "out"),
                       serving)
        assert pushed.get_int_custom_property("pushed") == 0
    assert not os.path.exists(serving) and not os.path.exists(tmp_path / "out")


def test_on_a_cluster_the_artifact_is_the_destination(tmp_path):
    model = _model(tmp_path, "run1", b"w")
    out = str(tmp_path / "pushed_model")
    pushed = _push(artifact_pusher.ArtifactPushExecutor, model, _blessing(tmp_path, True), out)
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("pushed_destination") == out
    assert pushed.get_string_custom_property("pushed_version").isdigit()
    assert artifact_pusher.fingerprint(out) == artifact_pusher.fingerprint(
        os.path.join(model.uri, "Format-Serving"))
