"""pipeline/console.py: what reaches the console and what only the log gets, in a real child
process (file descriptors 1 and 2 are redirected, so it cannot run inside pytest's own); the
Pusher's line, from a real MLMD store."""
import os
import subprocess
import sys

import pytest

from helpers import mlmd_store
from pipeline import console, history
from helpers import output, record_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = r"""
import os, sys, warnings
sys.path.insert(0, sys.argv[1])
from pipeline import console
with console.Capture(sys.argv[2], verbose=sys.argv[3] == "1") as capture:
    os.write(2, b"2026-11-30 E external/local_xla/cuda_dnn.cc] Unable to register cuDNN factory\n")
    print("library chatter on stdout")
    warnings.warn("old python", FutureWarning)
    os.system("echo from a child process")
    print("Epoch 1/3")
    print("3/3 - 1s - loss: 0.5000 - accuracy: 0.9 - val_loss: 0.4 - val_accuracy: 0.8")
    capture.say("imgpipe: pushed model: /w/serving/1")
    capture.say("imgpipe: error: something to fix", error=True)
print("after the capture")
"""


def _run(tmp_path, verbose: bool):
    log = tmp_path / "logs" / "run.log"
    proc = subprocess.run([sys.executable, "-c", CHILD, REPO, str(log), "1" if verbose else "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc, log.read_text()


@pytest.mark.slow
def test_console_shows_our_lines_and_keras_epochs_only(tmp_path):
    proc, log = _run(tmp_path, verbose=False)
    lines = proc.stdout.splitlines()
    # Our lines are written at once, library lines through a pipe: only their sets compare.
    assert sorted(lines[:-1]) == sorted([
        "Epoch 1/3",
        "3/3 - 1s - loss: 0.5000 - accuracy: 0.9 - val_loss: 0.4 - val_accuracy: 0.8",
        "imgpipe: pushed model: /w/serving/1"])
    assert lines[-1] == "after the capture"  # the console is back, nothing left redirected
    assert proc.stderr.splitlines() == ["imgpipe: error: something to fix"]
    for text in ("cuDNN factory", "library chatter", "FutureWarning: old python",
                 "from a child process", "Epoch 1/3", "imgpipe: pushed model",
                 "imgpipe: error: something to fix"):
        assert text in log, text
    assert "after the capture" not in log


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [True])
def test_verbose_streams_the_whole_log_too(tmp_path, verbose):
    proc, log = _run(tmp_path, verbose)
    for text in ("cuDNN factory", "library chatter", "FutureWarning: old python",
                 "from a child process"):
        assert text in proc.stdout and text in log, text


@pytest.mark.parametrize("state, properties, fact", [
    ("ran", {"pushed": 1, "pushed_destination": "/w/serving/17", "pushed_version": "17"},
     "pushed version 17"),
    ("ran", {"pushed": 0, "still_serving": "/w/serving/17"},
     "already serving, not pushed again"),
    ("cached", {"pushed": 0}, "nothing pushed"),
    ("failed", None, ""),
])
def test_the_pusher_line_says_what_it_recorded(tmp_path, state, properties, fact):
    store = mlmd_store(tmp_path)
    outputs = {"pushed_model": output(store, "/w/Pusher/pushed_model/3", **properties)} \
        if properties is not None else {}
    (_, execution), = record_run(store, "run", [("Pusher", state, outputs)])["nodes"]
    line = console.describe(store, str(tmp_path), "Pusher", execution, active=False)
    word = {"ran": "ran", "cached": "cached", "failed": "FAILED"}[state]
    assert line.split() == ["Pusher", word, f"{history.seconds(execution):.1f}", "s",
                            *fact.split()]
