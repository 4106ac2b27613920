"""What a person sees while a pipeline runs, and the full log behind it.

`Capture` sends everything the process and its children write to file descriptors 1 and 2
(C++ start-up messages, absl/TFX/Beam logging, Python warnings, tracebacks) to the run's
log file, and lets through to the console only:
  - the lines this module `say`s (one per component as it finishes, the summary),
  - Keras's per-epoch lines ("Epoch 3/20", "24/24 - 9s - loss: ... - val_accuracy: ..."),
  - everything, with verbose=True.
It must start before TensorFlow is imported: TF and XLA print while being imported.

`ComponentWatcher` polls the workdir's MLMD store (read-only) and says one line per
component as it reaches a final state: node, ran/cached/FAILED, seconds, and one fact read
from its output artifacts. `describe` is shared with `imgpipe runs`.
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
from typing import Callable, Optional

from trainer_module import features

PROGRESS = re.compile(r"^(Epoch \d+/\d+\s*$|\d+/\d+ - .*loss: )")


class Capture:
    """Redirects fds 1 and 2 into `log_path` (see the module docstring); a context manager."""

    def __init__(self, log_path: str, verbose: bool = False):
        self.log_path, self.verbose = log_path, verbose
        self._lock = threading.Lock()
        self._thread = None

    @staticmethod
    def _console_stream(stream, fd: int):
        """Where console lines go: a copy of the real fd, or a replaced stream (pytest's)."""
        try:
            real = stream.fileno() == fd
        except (AttributeError, OSError, ValueError):
            real = False
        if real:
            stream.flush()
            return os.fdopen(os.dup(fd), "w", encoding="utf-8", errors="replace",
                             buffering=1), True
        return stream, False

    def __enter__(self) -> "Capture":
        os.makedirs(os.path.dirname(self.log_path) or ".", exist_ok=True)
        self._log = open(self.log_path, "ab", buffering=0)  # pylint: disable=consider-using-with
        self._saved = (sys.stdout, sys.stderr)
        (self._out, own_out), (self._err, own_err) = (
            self._console_stream(sys.stdout, 1), self._console_stream(sys.stderr, 2))
        self._owned = [s for s, own in ((self._out, own_out), (self._err, own_err)) if own]
        self._fds = (os.dup(1), os.dup(2))
        read, write = os.pipe()
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        # Python-level output (print, warnings, logging, Keras) goes the same way, line by line.
        sys.stdout = os.fdopen(os.dup(1), "w", encoding="utf-8", errors="replace", buffering=1)
        sys.stderr = os.fdopen(os.dup(2), "w", encoding="utf-8", errors="replace", buffering=1)
        self._thread = threading.Thread(target=self._pump, args=(read,), daemon=True)
        self._thread.start()
        return self

    def _pump(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            for line in pipe:
                with self._lock:
                    if self._log.closed:  # a child outlived the run; its lines are dropped
                        return
                    self._log.write(line)
                    if self.verbose or PROGRESS.match(line.decode("utf-8", "replace")):
                        self._out.write(line.decode("utf-8", "replace"))
                        self._out.flush()

    def say(self, line: str, error: bool = False) -> None:
        """A line for the console (stderr with error=True), also kept in the log."""
        text = line.rstrip("\n") + "\n"
        with self._lock:
            self._log.write(text.encode("utf-8", "replace"))
            stream = self._err if error else self._out
            try:
                stream.write(text)
                stream.flush()
            except BrokenPipeError:  # `imgpipe runs | head`: the reader left; the log has it
                pass

    def __exit__(self, *exc) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            stream.close()  # our dups of the pipe
        sys.stdout, sys.stderr = self._saved
        os.dup2(self._fds[0], 1)  # drops the pipe's write ends held by 1 and 2
        os.dup2(self._fds[1], 2)
        os.close(self._fds[0])
        os.close(self._fds[1])
        # A child (a Beam worker) may still hold the pipe open; don't wait for it forever.
        self._thread.join(timeout=5)
        with self._lock:
            for stream in self._owned:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass
            self._log.close()


def facts(workdir: str, node: str, outputs: dict) -> str:
    """One fact about a finished component, from its output artifacts ('' when none)."""
    try:
        if node == "ImageExampleGen" and "examples" in outputs:
            with open(os.path.join(outputs["examples"], "ingest_report.json"),
                      encoding="utf-8") as f:
                report = json.load(f)
            splits = {s: sum(c.values()) for s, c in report.get("per_split", {}).items()}
            counts = report.get("counts", {})
            return (f"{sum(splits.values())} images ("
                    + ", ".join(f"{s} {n}" for s, n in splits.items())
                    + f"), {len(report.get('classes', []))} classes, "
                    f"{counts.get('quarantined', 0)} quarantined")
        if node == "ExampleValidator" and "anomalies" in outputs:
            from components.data_validation import executor  # pylint: disable=g-import-not-at-top
            found = sum(len(a.anomaly_info)
                        for a in executor.load_anomalies(outputs["anomalies"]).values())
            return f"{found} anomal{'y' if found == 1 else 'ies'}"
        if node == "DataGate" and "result" in outputs:
            with open(os.path.join(outputs["result"], "validation.json"), encoding="utf-8") as f:
                verdict = json.load(f)
            return f"passed, {len(verdict.get('warnings', []))} warnings"
        if node == "Trainer" and "model_run" in outputs:
            from pipeline import run_report  # pylint: disable=g-import-not-at-top
            curves = run_report.training_history(outputs["model_run"])
            if curves.get("val_accuracy"):
                epochs = len(curves["val_accuracy"])
                return (f"val accuracy {curves['val_accuracy'][-1]:.3f} after {epochs} "
                        f"epoch{'' if epochs == 1 else 's'}")
        if node == "Evaluator" and "blessing" in outputs:
            from pipeline import blessing  # pylint: disable=g-import-not-at-top
            accuracy = blessing.accuracies(outputs["evaluation"]).get("candidate")
            blessed = os.path.exists(os.path.join(outputs["blessing"], "BLESSED"))
            return (f"accuracy {accuracy:.3f}, " if accuracy is not None else "") + \
                ("blessed" if blessed else "NOT blessed")
    except (OSError, ValueError, KeyError, IndexError):
        return ""
    return ""


def describe(store, workdir: str, node: str, execution, active: bool = True) -> str:
    """'  Trainer            ran      98.2 s  val accuracy 0.91 after 20 epochs'.

    `active`: a run is working in the workdir now (else an unfinished execution is one
    whose run was killed: "not finished")."""
    from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
    from pipeline import history  # pylint: disable=g-import-not-at-top
    outputs = history.artifact_uris(store, execution.id, metadata_store_pb2.Event.OUTPUT)
    fact = ""
    if history.state_word(execution) in ("ran", "cached"):
        fact = facts(workdir, node, outputs)
        record = history.push_record(store, execution) if node == "Pusher" else None
        if record is not None:
            fact = (f"pushed version {record['version']}" if record["pushed"]
                    else "already serving, not pushed again" if record["still_serving"]
                    else "nothing pushed")
    return (f"  {node:<17} {history.state_word(execution, active):<7} "
            f"{history.seconds(execution):6.1f} s  {fact}").rstrip()


class ComponentWatcher:
    """Says one line per component of the run in progress as it finishes (MLMD polling).

    `first_id`, set on entering: the store's next execution id then, so the run's own
    executions are those from it on (history.run_since finds the run)."""

    def __init__(self, workdir: str, say: Callable[[str], None], interval: float = 2.0):
        self.workdir, self.say, self.interval = workdir, say, interval
        self._stop = threading.Event()
        self._done = set()
        self.first_id = None
        self._thread = None

    def _store(self):
        from pipeline import history  # pylint: disable=g-import-not-at-top
        path = features.metadata_path(self.workdir)
        return history.open_store(path) if os.path.isfile(path) else None

    def __enter__(self) -> "ComponentWatcher":
        store = self._store()
        self.first_id = max((e.id for e in store.get_executions()), default=0) + 1 \
            if store is not None else 1
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def poll(self) -> None:
        """Says the newly finished components of this run, in execution order."""
        from pipeline import history  # pylint: disable=g-import-not-at-top
        store = self._store()
        if store is None:
            return
        new = [e for e in store.get_executions() if e.id >= self.first_id
               and e.id not in self._done and history.state_word(e) != "running"]
        names = history.node_ids(store, new)
        for execution in sorted(new, key=lambda e: e.id):
            self._done.add(execution.id)
            node = names.get(execution.id, "?")
            if node.endswith("resolver"):  # bookkeeping, not a step a user asked for
                continue
            self.say(describe(store, self.workdir, node, execution))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # pylint: disable=broad-except
                pass  # the store is busy being written; the next poll (or the last) gets it

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.poll()
        except Exception:  # pylint: disable=broad-except
            pass
