"""kubeflow/Dockerfile agrees with the project: its Beam is the pinned one (the image is also
the Dataflow SDK container), it installs with the project's own constraints, and it puts the
project where the compiled tasks look for it. No Docker engine runs here, so the image itself
is not built by the tests (README: what was not exercised)."""
import os
import re

from kubeflow import targets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def test_beam_version_equals_the_pinned_launcher_beam():
    dockerfile = _read("kubeflow", "Dockerfile")
    pinned = re.search(r"^apache-beam==(\S+)$", _read("requirements", "constraints-py310.txt"),
                       re.M).group(1)
    assert re.search(r"^ARG BEAM_VERSION=(\S+)$", dockerfile, re.M).group(1) == pinned
    assert "FROM apache/beam_python3.10_sdk:${BEAM_VERSION}" in dockerfile
    assert '"apache-beam[gcp]==${BEAM_VERSION}"' in dockerfile


def test_installs_with_the_project_constraints_at_the_compiled_project_dir():
    dockerfile = _read("kubeflow", "Dockerfile")
    assert f"WORKDIR {targets.IMAGE_PROJECT_DIR}" in dockerfile
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and all("-c requirements/constraints-py310.txt" in l for l in installs)
    assert "FROM python:3.10-slim" in dockerfile and _read(".python-version").strip() == "3.10"
    assert not re.search(r"(?i)(secret|password|token|credentials)", dockerfile)
