"""pipeline/workdir_lock.py: one run per workdir, with real processes.

The first test holds the lock in a second Python process; the slow one starts a real
`imgpipe run`, refuses a second one on the same workdir, kills the first with SIGKILL and
checks that the workdir still works and that `imgpipe runs` tells the killed run apart.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from helpers import encode, noise, write_file
from pipeline import workdir_lock

VENV_BIN = os.path.dirname(sys.executable)
HOLDER = ("import sys, time\nfrom pipeline import workdir_lock\n"
          "with workdir_lock.hold(sys.argv[1]):\n    print('held', flush=True)\n"
          "    time.sleep(120)\n")


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_second_holder_is_refused_and_a_killed_holder_frees_the_workdir(tmp_path):
    workdir = str(tmp_path / "work")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, workdir], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert f"pid {holder.pid}" in workdir_lock.running(workdir)
        with pytest.raises(RuntimeError) as err:
            with workdir_lock.hold(workdir):
                pass
        message = str(err.value)
        assert message.startswith(f"another run is using workdir {workdir} (pid {holder.pid}")
        assert "\n" not in message and "wait for it to finish" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert workdir_lock.running(workdir) is None  # the kernel released it with the process
    with workdir_lock.hold(workdir):
        assert workdir_lock.running(workdir) is not None
    assert workdir_lock.running(str(tmp_path / "never_used")) is None


def _images(root, count: int = 16) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        write_file(root, f"{'ab'[i % 2]}/{i}.jpg", encode(noise(rng, 24, 24), "JPEG"))


def _unfinished(workdir: str):
    """True once an execution of the run is registered and not finished."""
    from pipeline import history  # pylint: disable=g-import-not-at-top
    path = os.path.join(workdir, "metadata.sqlite")
    if not os.path.exists(path):
        return False
    try:
        runs = history.runs(history.open_store(path))
    except Exception:  # pylint: disable=broad-except  # the store is being created
        return False
    return any(history.state_word(e) == "running" for r in runs for _, e in r["nodes"])


@pytest.mark.slow
def test_two_real_runs_on_one_workdir_and_a_run_killed_with_sigkill(tmp_path):
    data, workdir = tmp_path / "data", str(tmp_path / "work")
    _images(data)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "image_size": 32, "batch_size": 4, "epochs": 1, "train_steps": 1, "eval_steps": 1,
        "ingest_beam_args": ["--direct_running_mode=in_memory"], "eval_fraction": 0.5}))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1")
    imgpipe = os.path.join(VENV_BIN, "imgpipe")
    run = [imgpipe, "run", "--data-root", str(data), "--workdir", workdir,
           "--config", str(config)]
    first = subprocess.Popen(run, env=env, cwd=str(tmp_path), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: workdir_lock.running(workdir), 300, "the first run to take the workdir")
        second = subprocess.run(run, env=env, cwd=str(tmp_path), capture_output=True,
                                text=True, timeout=600)
        assert first.poll() is None, "the first run ended before the second was refused"
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert lines == [f"imgpipe: another run is using workdir {workdir} (pid {first.pid}, "
                         f"{lines[0].split(f'pid {first.pid}, ', 1)[1]}"], second.stderr
        assert "imgpipe run --data-root" in lines[0]
        _wait(lambda: _unfinished(workdir), 300, "the first run's first execution")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    history = subprocess.run([imgpipe, "runs", "--workdir", workdir], env=env,
                             cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert history.returncode == 0, history.stderr
    assert "not finished" in history.stdout and "running" not in history.stdout
    # The workdir still works: the next run takes it and finishes.
    validate = subprocess.run([imgpipe, "validate", "--data-root", str(data), "--workdir",
                               workdir, "--config", str(config)], env=env, cwd=str(tmp_path),
                              capture_output=True, text=True, timeout=900)
    assert validate.returncode == 0, validate.stdout[-2000:] + validate.stderr[-3000:]
    assert "imgpipe: data validation passed." in validate.stdout
