"""Test-wide set-up: Keras 2 (tf_keras) as TFT/TFMA need, quiet TensorFlow logs, and the
guard that keeps the `slow` marker true.

`slow` (pytest.ini) marks every end-to-end test: one that runs a pipeline (LocalDagRunner,
a compiled task, a trained and exported model), or launches a process. `make test-fast`
deselects them. In every run, a test without the marker that starts a process (subprocess,
os.system, fork, a multiprocessing worker) or a LocalDagRunner/BeamDagRunner run fails at
that call, module- and session-scoped fixtures included (they are set up inside the first
test that asks for them). Unmarked tests that use more than UNIT_CPU_S of CPU are listed at
the end of the run, as candidates for the marker.
"""
import contextlib
import functools
import importlib.abc
import os
import sys
import time

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MARK = "slow"
UNIT_CPU_S = 10.0
_PROCESS_EVENTS = {"subprocess.Popen", "os.system", "os.fork", "os.forkpty",
                   "os.posix_spawn", "os.spawn", "os.exec"}
_RUNNERS = {"tfx.orchestration.local.local_dag_runner": "LocalDagRunner",
            "tfx.orchestration.beam.beam_dag_runner": "BeamDagRunner"}

_current = {"item": None, "allowed": True, "cpu": 0.0}
_launches = {}  # nodeid: what it started
_reported = set()  # nodeids whose report already failed
_heavy_units = []  # (cpu seconds, nodeid)


def _check(what: str) -> None:
    if _current["allowed"]:
        return
    item = _current["item"]
    _launches.setdefault(item.nodeid, what)
    _current["allowed"] = True  # one failure; the teardown of what it set up may go on
    pytest.fail(f"{item.nodeid} starts {what} but is not marked @pytest.mark.{MARK} "
                "(see tests/conftest.py)", pytrace=False)


@contextlib.contextmanager
def refusals_expected():
    """For tests of the guard itself: what is refused inside does not fail the test."""
    item = _current["item"]
    try:
        yield
    finally:
        _launches.pop(item.nodeid, None)
        _current["allowed"] = item.get_closest_marker(MARK) is not None


def _audit(event: str, args) -> None:
    if event in _PROCESS_EVENTS and not _current["allowed"]:
        _check(f"a process ({event} {str(args[:2])[:200]})")


def _guard_runner(cls) -> None:
    run = cls.run

    @functools.wraps(run)
    def guarded(*args, **kwargs):
        _check(f"a {cls.__name__} run")
        return run(*args, **kwargs)
    cls.run = guarded


class _RunnerImports(importlib.abc.MetaPathFinder):
    """Guards a runner class right after its module is imported, however late."""

    def find_spec(self, name, path, target=None):
        if name not in _RUNNERS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_guard(module):
            exec_module(module)
            _guard_runner(getattr(module, _RUNNERS[name]))
        spec.loader.exec_module = exec_and_guard
        return spec


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """One really trained and exported 3-class B3 (tiny_shards.train_tiny_model), shared by
    test_export.py and test_predict.py: each checks other things of the same model, and
    neither writes into it. Built once per test run: under pytest-xdist the first worker to
    ask builds it in the run's shared temp folder, holding a file lock; the others wait for
    it and reuse it."""
    import fcntl  # pylint: disable=g-import-not-at-top
    import shutil  # pylint: disable=g-import-not-at-top

    from tiny_shards import tiny_model_at, train_tiny_model  # pylint: disable=g-import-not-at-top
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # this run's, shared by its workers
    root, built = base / "tiny_model", base / "tiny_model.built"
    with open(base / "tiny_model.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if built.exists():
            return tiny_model_at(root)
        shutil.rmtree(root, ignore_errors=True)  # what a failed build left
        root.mkdir()
        model = train_tiny_model(root)
        built.touch()
        return model


def pytest_configure(config):
    del config
    sys.addaudithook(_audit)
    import _posixsubprocess  # pylint: disable=g-import-not-at-top
    fork_exec = _posixsubprocess.fork_exec  # multiprocessing's spawn goes here unaudited

    def guarded_fork_exec(*args, **kwargs):
        _check("a process (fork_exec)")
        return fork_exec(*args, **kwargs)
    _posixsubprocess.fork_exec = guarded_fork_exec
    for name, cls in _RUNNERS.items():
        if name in sys.modules:
            _guard_runner(getattr(sys.modules[name], cls))
    sys.meta_path.insert(0, _RunnerImports())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    del nextitem
    marked = item.get_closest_marker(MARK) is not None
    _current.update(item=item, allowed=marked, cpu=time.process_time())
    try:
        yield
    finally:
        _current.update(item=None, allowed=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.when == "teardown" and item.get_closest_marker(MARK) is None:
        # On the report, so that it reaches the process that prints the summary (with
        # pytest-xdist, tests run in worker processes).
        report.user_properties.append(("unit_cpu_s", time.process_time() - _current["cpu"]))
    if item.nodeid not in _launches or item.nodeid in _reported:
        return
    if report.failed:
        _reported.add(item.nodeid)
    elif call.when == "teardown":  # the code under test swallowed the failure
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} started {_launches[item.nodeid]} but is not "
                           f"marked @pytest.mark.{MARK} (see tests/conftest.py)")


def pytest_runtest_logreport(report):
    cpu = dict(report.user_properties).get("unit_cpu_s")
    if cpu is not None and cpu > UNIT_CPU_S:
        _heavy_units.append((cpu, report.nodeid))


def pytest_terminal_summary(terminalreporter):
    if _heavy_units:
        terminalreporter.section(f"unmarked tests over {UNIT_CPU_S:.0f} s of CPU "
                                 f"(candidates for @pytest.mark.{MARK})")
        for cpu, nodeid in sorted(_heavy_units, reverse=True):
            terminalreporter.line(f"{cpu:7.1f} s  {nodeid}")
