"""components/data_validation: the per-dataset schema, the gate, and the data report.

The module fixture runs the real LocalDagRunner (SQLite MLMD, Beam, TFDV) over one workdir
through a sequence a user would: a first run (writes the schema), a cached re-run, a
fourth class (stopped), `imgpipe schema update` and a re-run, an edited schema that drops
JPEG (stopped), the schema restored, and a removed class (stopped). Most runs are
`validate_only` (nothing trains); the fourth-class run goes through `imgpipe run`, the whole
pipeline, to show that nothing after the gate runs and nothing is pushed.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2

from components.data_validation import checks, schema as schema_lib
from components.reports import data_page, plots
from components.data_validation import executor
from helpers import encode, latest_states, noise, write_file
from pipeline import cli, local_runner
from pipeline.config import load_config

CLASSES = ("circle", "square", "triangle")


def _write_class(root, name: str, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        write_file(root, f"{name}/{i}.jpg", encode(noise(rng, 20 + i, 28), "JPEG"))


def _validate(config) -> str:
    """One validate-only run; returns "" when it passed, else the gate's message."""
    try:
        local_runner.run(config, validate_only=True)
    except Exception as err:  # pylint: disable=broad-except
        message = cli._failed_result(err)  # pylint: disable=protected-access
        if message is None:
            raise
        return message
    return ""


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("validation")
    data, workdir = tmp / "data", tmp / "work"
    for i, name in enumerate(CLASSES):
        _write_class(data, name, 10, seed=i)
    config = load_config(None, {"data_root": str(data), "workdir": str(workdir),
                                "ingest_beam_args": "--direct_running_mode=in_memory",
                                "eval_fraction": 0.4, "label_skew_threshold": 1.0})
    out = {"config": config, "workdir": workdir}
    out["first"] = (_validate(config), latest_states(workdir))
    out["schema_text"] = (workdir / "schema" / "schema.pbtxt").read_text()
    out["cached"] = (_validate(config), latest_states(workdir))

    _write_class(data, "hexagon", 10, seed=9)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        out["fourth_rc"] = cli.main(["run", "--data-root", str(data), "--workdir", str(workdir),
                                 "--set", "ingest_beam_args=--direct_running_mode=in_memory",
                                     "--set", "eval_fraction=0.4",
                                     "--set", "label_skew_threshold=1.0"])
    out["fourth_stderr"] = err.getvalue()
    out["fourth_states"] = latest_states(workdir)
    out["update_rc"] = cli.main(["schema", "update", "--workdir", str(workdir)])
    out["accepted"] = (_validate(config), latest_states(workdir))

    schema_file = workdir / "schema" / "schema.pbtxt"
    accepted_text = schema_file.read_text()
    schema_file.write_text(accepted_text.replace('value: "jpeg"', ""))
    out["no_jpeg"] = (_validate(config), latest_states(workdir))
    schema_file.write_text(accepted_text)
    out["restored"] = (_validate(config), latest_states(workdir))

    shutil.rmtree(data / "square")
    out["removed"] = (_validate(config), latest_states(workdir))
    return out


@pytest.mark.slow
def test_first_run_writes_a_schema_with_exactly_this_datasets_domains(story):
    message, states = story["first"]
    assert message == "" and states["DataGate"][0] == "COMPLETE"
    schema = text_format.Parse(story["schema_text"], schema_pb2.Schema())  # as first written
    by_name = {f.name: f for f in schema.feature}
    assert (by_name["label"].int_domain.min, by_name["label"].int_domain.max) == (0, 2)
    assert list(by_name["label_name"].string_domain.value) == list(CLASSES)
    assert list(by_name["format"].string_domain.value) == ["jpeg", "png", "gif", "bmp"]
    assert by_name["image"].HasField("image_domain") and by_name["image"].type == 1  # BYTES
    required = ("image", "label", "label_name", "filename", "height", "width", "channels",
                "format")
    assert all(by_name[n].presence.min_fraction == 1.0 for n in required)


@pytest.mark.slow
def test_cached_rerun_passes_and_reuses_every_step(story):
    message, states = story["cached"]
    assert message == ""
    assert {k: v[0] for k, v in states.items()} == {
        "ImageExampleGen": "CACHED", "DatasetSchemaGen": "CACHED", "StatisticsGen": "CACHED",
        "ExampleValidator": "CACHED", "DataGate": "CACHED"}


@pytest.mark.slow
def test_a_fourth_class_stops_before_transform_named_in_the_cli_and_mlmd(story, capsys):
    assert story["fourth_rc"] == 1
    states = story["fourth_states"]
    state, gate = states["DataGate"]
    assert state == "FAILED"
    assert not {"Transform", "ImageTrainer", "Evaluator", "ServingPusher"} & set(states)
    recorded = gate.custom_properties["__execution_result__"].string_value
    assert "label_name" in recorded and "hexagon" in recorded  # why, kept in MLMD
    assert not (story["workdir"] / "serving").exists()


@pytest.mark.slow
def test_cli_names_each_anomaly_and_how_to_accept(story):
    printed = [l for l in story["fourth_stderr"].splitlines() if l.startswith("imgpipe: ")]
    lines = "\n".join(printed)
    assert printed[0] == ("imgpipe: data validation stopped the run: 4 anomalies (nothing "
                          "was trained or pushed):")
    assert printed[-1] == ("imgpipe: If the change is intended, accept it with: imgpipe "
                           f"schema update --workdir {story['workdir']}")
    assert "feature 'label_name': expected one of [circle, square, triangle]" in lines
    assert "hexagon" in lines
    assert re.search(r"feature 'label': expected an integer in \[0, 2\]", lines)
    assert "imgpipe: data report: " in lines


@pytest.mark.slow
def test_schema_update_accepts_the_new_class(story):
    assert story["update_rc"] == 0
    message, states = story["accepted"]
    assert message == "" and states["DataGate"][0] == "COMPLETE"
    assert states["DatasetSchemaGen"][0] == "COMPLETE"  # the edited file was read again
    assert "hexagon" in (story["workdir"] / "schema" / "schema.pbtxt").read_text()


@pytest.mark.slow
def test_an_edited_schema_is_honoured_and_a_disallowed_format_is_caught(story):
    message, states = story["no_jpeg"]
    assert states["ImageExampleGen"][0] == "CACHED"  # same data: only the schema changed
    assert states["DataGate"][0] == "FAILED"
    assert "feature 'format': expected one of [png, gif, bmp]" in message
    assert "jpeg" in message
    restored, states = story["restored"]
    assert restored == "" and states["DataGate"][0] == "CACHED"  # the earlier verdict again


@pytest.mark.slow
def test_a_removed_class_is_caught(story):
    message, states = story["removed"]
    assert states["DataGate"][0] == "FAILED"
    assert "class 'square': expected images of every class in the schema; found none" in message


@pytest.mark.slow
def test_report_pngs_decode_with_one_row_per_class_and_html_is_offline(story):
    reports = sorted((story["workdir"] / "reports").iterdir(),
                     key=lambda p: int(p.name.split("-")[1]))
    assert len(reports) == 5  # one per executed gate (3 failed), none for the 2 cached
    for folder in reports:
        verdict = json.loads((folder / data_page.VERDICT_JSON).read_text())
        with Image.open(folder / data_page.SAMPLES_PNG) as grid:
            grid.load()
            assert grid.size == (4 * plots.SAMPLE_TILE,
                                 verdict["sample_rows"] * plots.SAMPLE_TILE)
        page = (folder / data_page.REPORT_PAGE).read_text()
        refs = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert refs == [data_page.SAMPLES_PNG]
        assert all((folder / ref).exists() for ref in refs)
        assert "http://" not in page and "https://" not in page and "<script" not in page
    first = json.loads((reports[0] / data_page.VERDICT_JSON).read_text())
    assert first["sample_rows"] == 3 and first["passed"]
    # The blocked run's report shows its anomalies.
    assert any("hexagon" in (f / data_page.REPORT_PAGE).read_text() for f in reports)


@pytest.mark.slow
def test_imgpipe_report_rebuilds_the_latest_page(story, capsys):
    assert cli.main(["report", "--workdir", str(story["workdir"])]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("imgpipe: data report: ") and "(blocked, 2 anomalies" in line
    assert os.path.isfile(line.split()[3])


def _anomalies(feature: str, description: str) -> anomalies_pb2.Anomalies:
    result = anomalies_pb2.Anomalies()
    info = result.anomaly_info[feature]
    info.reason.add(description=description)
    return result


def test_plain_words_for_anomalies_and_missing_classes():
    template = executor.load_schema(schema_lib.CURATED_TEMPLATE)
    schema = schema_lib.dataset_schema(template, ["cat", "dog"])
    lines = checks.anomaly_lines({"train": _anomalies("label_name", "Examples contain values "
                                                     "missing from the schema: cow (~3%).")},
                                 schema)
    assert lines == ["train split, feature 'label_name': expected one of [cat, dog]; found: "
                     "Examples contain values missing from the schema: cow (~3%)."]
    assert checks.missing_class_lines({"train": {"cat": 3, "dog": 2}, "eval": {"cat": 1},
                                       "test": {}}, schema) == [
        "eval split, class 'dog': expected images of every class in the schema; found none "
        "(the split has cat)."]


def test_warnings_for_skew_imbalance_and_quarantine_and_none_below_thresholds():
    report = {"per_split": {"train": {"a": 80, "b": 20}, "eval": {"a": 5, "b": 5}},
              "per_class": {"a": 85, "b": 25},
              "counts": {"ingested": 110, "quarantined": 10},
              "quarantine_reasons": {"truncated": 7, "not_an_image": 3}}
    lines = checks.warning_lines(report, label_skew_threshold=0.1, imbalance_ratio=3.0,
                                 max_quarantine_fraction=0.05)
    assert lines == [
        "label skew: class 'a' is 80% of train but 50% of eval (L-inf 0.30 > "
        "label_skew_threshold 0.1).",
        "class imbalance: 'a' has 85 images, 'b' 25 (3.4x > imbalance_ratio 3.0).",
        "quarantine rate: 10 of 120 image files (8% > max_quarantine_fraction 0.05): "
        "truncated 7, not_an_image 3."]
    assert checks.warning_lines(report, label_skew_threshold=0.5, imbalance_ratio=5.0,
                                max_quarantine_fraction=0.1) == []
