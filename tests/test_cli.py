"""pipeline/cli.py: flag parsing, config precedence and one-line errors (one short ingest-only
run through the real LocalDagRunner; nothing trains)."""
import argparse
import os

import pytest

from pipeline import cli, cli_common, cli_run


def _args(**kw):
    base = dict(config=None, image_size=None, epochs=None, batch_size=None, train_steps=None,
                set=[], workdir="w", data_root="d")
    base.update(kw)
    return argparse.Namespace(**base)


def test_flags_override_base_and_unset_flags_do_not(tmp_path):
    config = cli_common.build_config(
        _args(epochs=2, set=["learning_rate=0.5", "max-side=640"]), **cli_run.DEMO_SETTINGS)
    assert config.training.epochs == 2  # flag beats the demo setting
    # An unset flag keeps the demo setting.
    assert config.training.image_size == cli_run.DEMO_SETTINGS["image_size"]
    assert config.training.learning_rate == 0.5 and config.ingest.max_side == 640
    assert config.workdir == os.path.abspath("w") and config.data_root == os.path.abspath("d")


def test_set_requires_key_value(capsys):
    with pytest.raises(ValueError, match="key=value"):
        cli_common.parse_sets(["epochs"])
    assert cli.main(["run", "--data-root", "d", "--workdir", "w", "--set", "epochs"]) == 2
    assert capsys.readouterr().err.strip() == \
        "imgpipe: error: --set expects key=value, got 'epochs'"


def test_bad_setting_is_a_one_line_error(capsys):
    code = cli.main(["run", "--data-root", "d", "--workdir", "w", "--set", "strategy=gpux"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imgpipe: error: strategy='gpux'") and "\n" not in err


def test_bad_settings_leave_no_log_or_folders_behind(tmp_path, capsys):
    workdir = tmp_path / "typo"
    for command in (["run", "--data-root", str(tmp_path)], ["demo"]):
        assert cli.main([*command, "--workdir", str(workdir), "--set", "strategy=gpux"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("imgpipe: error: strategy='gpux'") and "\n" not in err, err
        assert not workdir.exists()


def test_a_missing_data_root_is_one_line_before_anything_starts(tmp_path, capsys):
    code = cli.main(["run", "--data-root", str(tmp_path / "nope"), "--workdir",
                     str(tmp_path / "w")])
    assert code == 2
    assert capsys.readouterr().err.strip() == \
        f"imgpipe: error: --data-root {tmp_path / 'nope'} does not exist."


def test_ingest_missing_data_root_is_a_one_line_error(tmp_path, capsys):
    code = cli.main(["ingest", "--data-root", str(tmp_path / "nope"),
                     "--output", str(tmp_path / "out")])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("imgpipe:") and "does not exist" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_run_reports_a_data_problem_in_one_line(tmp_path, capsys):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    os.makedirs(tmp_path / "data" / "only_class")
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "data" / "only_class" / f"{i}.png")
    code = cli.main(["run", "--data-root", str(tmp_path / "data"), "--workdir",
                     str(tmp_path / "work"), "--set",
                     "ingest_beam_args=--direct_running_mode=in_memory"])
    assert code == 1
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("imgpipe:")]
    assert len(lines) == 1 and "need at least 2 classes" in lines[0], lines


def test_ingest_rejects_unknown_beam_flags(tmp_path, capsys):
    os.makedirs(tmp_path / "data" / "a")
    code = cli.main(["ingest", "--data-root", str(tmp_path / "data"), "--output",
                     str(tmp_path / "out"), "--direct_running_mode=in_memory", "--bogus-flag=3"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("imgpipe: error: unknown Beam flag(s): --bogus_flag")


def test_unknown_run_flag_is_rejected():
    with pytest.raises(SystemExit):
        cli.main(["run", "--data-root", "d", "--workdir", "w", "--bogus"])


def test_latest_pushed_model(tmp_path):
    assert cli_run.latest_pushed_model(str(tmp_path / "none")) is None
    for version in ("9", "10", "tmp"):
        (tmp_path / version).mkdir()
    assert cli_run.latest_pushed_model(str(tmp_path)) == str(tmp_path / "10")


def _outcome(record, blessed=True, serving="/w/serving/17"):
    """(exit code, [(line, error)]) of cli_run.push_outcome for a Pusher record in the shape
    history.pushed returns it (None: the run has no finished Pusher)."""
    lines = []
    evaluation = {"blessed": blessed, "reasons": [] if blessed else ["accuracy 0.500 < "
                                                                    "min_accuracy 0.900"]}
    code = cli_run.push_outcome(lambda line, error=False: lines.append((line, error)),
                                record, evaluation, serving)
    return code, lines


def _record(pushed=False, cached=False, still_serving=None):
    return {"pushed": pushed, "destination": "/w/serving/17" if pushed else None,
            "version": "17" if pushed else None, "still_serving": still_serving,
            "cached": cached}


def test_a_run_whose_pusher_pushed_says_the_pushed_folder():
    assert _outcome(_record(pushed=True)) == (
        cli_common.OK, [("imgpipe: pushed model: /w/serving/17", False)])


def test_a_cached_pusher_is_nothing_new_even_if_its_record_says_pushed():
    assert _outcome(_record(pushed=True, cached=True)) == (cli_common.OK, [(
        "imgpipe: no new model pushed: nothing changed since the last run (cached); "
        "serving: /w/serving/17", False)])


def test_a_blessed_model_already_serving_is_not_pushed_again_and_is_not_an_error():
    assert _outcome(_record(still_serving="/w/serving/17")) == (cli_common.OK, [(
        "imgpipe: no new model pushed: the blessed model is the one already serving, so it "
        "was not pushed again; serving: /w/serving/17", False)])
    # From the cache, that record is an earlier run's decision.
    assert "(cached)" in _outcome(_record(still_serving="/w/serving/17", cached=True))[1][0][0]


def test_an_unblessed_model_fails_with_the_reasons_and_what_still_serves():
    expected = [("imgpipe: no model pushed: the Evaluator did not bless it:", True),
                ("imgpipe:   - accuracy 0.500 < min_accuracy 0.900", True)]
    assert _outcome(_record(), blessed=False) == (
        cli_common.FAILED, expected + [("imgpipe: still serving: /w/serving/17.", True)])
    assert _outcome(_record(), blessed=False, serving=None) == (
        cli_common.FAILED, expected + [("imgpipe: nothing is serving yet.", True)])


def test_compile_writes_the_package_and_refuses_missing_settings(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    base = ["compile", "--target", "kubeflow", "--output", str(out),
            "--data-root", "gs://bucket/data"]
    assert cli.main([*base, "--pipeline-root", "gs://bucket/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imgpipe: error: no container image") and "\n" not in err
    assert cli.main([*base, "--image", "reg/imgpipe:1"]) == 2
    assert "--pipeline-root is required" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main([*base, "--image", "reg/imgpipe:1", "--pipeline-root",
                     "gs://bucket/run", "--set", "epochs=3"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"imgpipe: compiled for kubeflow: {out} (image reg/imgpipe:1; run-time parameters "
        "data_root=gs://bucket/data, epochs=3)")
    assert "defaultPipelineRoot: gs://bucket/run/pipeline_root" in out.read_text()


@pytest.mark.slow
def test_a_cluster_command_prints_one_line_as_a_user_starts_it(tmp_path):
    """In a fresh process with no TF_CPP_MIN_LOG_LEVEL set, as from a terminal: no C++
    start-up lines from TensorFlow and no FutureWarnings from the Google Cloud libraries."""
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    out = tmp_path / "p.json"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "imgpipe"), "compile", "--target",
         "vertex", "--output", str(out), "--image", "reg/imgpipe:1", "--data-root",
         "gs://bucket/data", "--pipeline-root", "gs://bucket/run"],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""
    assert done.stdout.splitlines() == [
        f"imgpipe: compiled for vertex: {out} (image reg/imgpipe:1; run-time parameters "
        "data_root=gs://bucket/data, epochs=5)"]


def test_the_runs_table_takes_accuracy_from_the_run_reports_without_tfma(tmp_path, capsys,
                                                                          monkeypatch):
    """A run with a report: its run.json's accuracy (reading the metrics would import TFMA,
    ~10 s); a run without one (e.g. `tfx run create`): the Evaluator's metrics."""
    from components.reports import run_page  # pylint: disable=g-import-not-at-top
    from helpers import mlmd_store, output, record_run  # pylint: disable=g-import-not-at-top
    from pipeline import blessing  # pylint: disable=g-import-not-at-top
    store = mlmd_store(tmp_path)
    for run, uri in (("reported", "/w/Evaluator/evaluation/5"),
                     ("unreported", "/w/Evaluator/evaluation/9")):
        record_run(store, run, [("Evaluator", "ran",
                                 {"evaluation": output(store, uri, "ModelEvaluation")})])
    folder = tmp_path / "reports" / "run-5"
    folder.mkdir(parents=True)
    (folder / run_page.RUN_JSON).write_text(
        '{"evaluation": "/w/Evaluator/evaluation/5", "accuracy": {"candidate": 0.812}}')
    read = []
    monkeypatch.setattr(blessing, "accuracies",
                        lambda uri: read.append(uri) or {"candidate": 0.5})
    assert cli.main(["runs", "--workdir", str(tmp_path)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert " 0.812 " in rows["reported"] and " 0.500 " in rows["unreported"]
    assert read == ["/w/Evaluator/evaluation/9"]  # TFMA only where no report recorded it
