"""tests/conftest.py's guard: a test without @pytest.mark.slow cannot start a process or a
pipeline run (what `make test-fast` promises to skip), and a marked one can."""
import multiprocessing
import os
import subprocess

import pytest

import conftest


def _local_dag_run():
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
    LocalDagRunner().run(None)


@pytest.mark.parametrize("start", [
    lambda: subprocess.run(["true"], check=True),
    lambda: os.system("true"),
    lambda: multiprocessing.get_context("spawn").Process(target=int).start(),
    _local_dag_run,
], ids=["subprocess", "os.system", "multiprocessing", "LocalDagRunner"])
def test_an_unmarked_test_is_stopped_at_the_launch(start):
    with conftest.refusals_expected():
        with pytest.raises(pytest.fail.Exception, match="is not marked @pytest.mark.slow"):
            start()


@pytest.mark.slow
def test_a_marked_test_may_launch():
    assert subprocess.run(["true"], check=False).returncode == 0
