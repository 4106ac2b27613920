"""kubeflow/Dockerfile agrees with the project: its Beam is the pinned one (the image is also
the Dataflow SDK container), it installs with the project's own constraints, and it puts the
project where the compiled tasks look for it. No Docker engine runs here, so the image itself
is not built by the tests (README: what was not exercised)."""
import os
import re
import subprocess

import pytest

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


# The GPU variant (--build-arg VARIANT=gpu): TensorFlow's and-cuda extra, all pinned.
CPU_INSTALL = ('uv pip install --system -c requirements/constraints-py310.txt '
               '"tfx[kfp]==1.16.0" "apache-beam[gcp]==${BEAM_VERSION}" pillow PyYAML psutil')


def _instructions(dockerfile):
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in dockerfile.splitlines():
        if line.lstrip().startswith("#") or not (line.strip() or current):
            continue
        current += " " + line.strip()
        if current.endswith("\\"):
            current = current[:-1]
        else:
            out.append(" ".join(current.split()))
            current = ""
    return out


def _pins():
    from packaging.utils import canonicalize_name
    pins = {}
    for line in _read("requirements", "constraints-py310.txt").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _and_cuda_requirements():
    """tensorflow[and-cuda]'s requirements, from the installed tensorflow's METADATA."""
    from importlib import metadata
    from packaging.requirements import Requirement
    reqs = [Requirement(r) for r in metadata.requires("tensorflow")]
    return [r for r in reqs if r.marker and r.marker.evaluate({"extra": "and-cuda"})
            and not r.marker.evaluate({"extra": ""})]


def _variant_step(dockerfile):
    steps = [i for i in _instructions(dockerfile) if "${VARIANT}" in i]
    assert len(steps) == 1, steps
    return steps[0]


def test_variant_arg_defaults_to_cpu_and_only_the_gpu_branch_adds_tensorflow_and_cuda():
    dockerfile = _read("kubeflow", "Dockerfile")
    instructions = _instructions(dockerfile)
    assert instructions.count("ARG VARIANT=cpu") == 1
    tensorflow = _pins()["tensorflow"]
    step = _variant_step(dockerfile)
    assert (f'gpu) uv pip install --system -c requirements/constraints-py310.txt '
            f'"tensorflow[and-cuda]=={tensorflow}" ;;') in step
    assert "cpu) ;;" in step
    # Nothing else in the build names the CUDA wheels or another TensorFlow.
    others = [i for i in instructions if i != step]
    assert not any(re.search(r"(?i)and-cuda|nvidia|tensorflow", i) for i in others), others


def test_cpu_variant_installs_exactly_what_it_did_before():
    dockerfile = _read("kubeflow", "Dockerfile")
    runs = [i for i in _instructions(dockerfile) if i.startswith("RUN ")]
    installs = [part.strip() for run in runs for part in run[4:].split("&&")
                if "pip install" in part and "${VARIANT}" not in run]
    assert installs == ["pip install -c requirements/constraints-py310.txt uv", CPU_INSTALL,
                        "uv pip install --system -c requirements/constraints-py310.txt -e ."]


@pytest.mark.slow
def test_the_variant_step_runs_the_gpu_install_only_for_gpu_and_refuses_others(tmp_path):
    """Runs the Dockerfile's own VARIANT step under /bin/sh (Debian's dash), uv replaced by a
    stub that records its arguments."""
    step = _variant_step(_read("kubeflow", "Dockerfile"))
    assert step.startswith("RUN ")
    log = tmp_path / "uv.log"
    stub = tmp_path / "uv"
    stub.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> {log}\necho >> {log}\n')
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    ran = {}
    for variant in ("cpu", "gpu", "cuda"):
        log.write_text("")
        proc = subprocess.run(["/bin/sh", "-c", step[4:]], env={**env, "VARIANT": variant},
                              capture_output=True, text=True, check=False)
        ran[variant] = (proc.returncode, log.read_text().splitlines(), proc.stderr.strip())
    assert ran["cpu"] == (0, [], "")
    tensorflow = _pins()["tensorflow"]
    assert ran["gpu"] == (0, [f"pip|install|--system|-c|requirements/constraints-py310.txt|"
                              f"tensorflow[and-cuda]=={tensorflow}|"], "")
    code, calls, stderr = ran["cuda"]
    assert code != 0 and calls == []
    assert stderr.startswith("VARIANT=cuda: build with --build-arg VARIANT=cpu") \
        and "\n" not in stderr


def test_gpu_variant_packages_are_pinned_exactly_as_tensorflow_and_cuda_requires():
    from importlib import metadata
    from packaging.utils import canonicalize_name
    pins = _pins()
    # The METADATA read below is that of the TensorFlow the image installs.
    assert metadata.version("tensorflow") == pins["tensorflow"]
    required = {}
    for req in _and_cuda_requirements():
        (spec,) = req.specifier  # one exact pin each, so the constraints cannot drift from it
        assert spec.operator == "==", req
        required[canonicalize_name(req.name)] = spec.version
    assert required and all(name.startswith("nvidia-") for name in required), required
    assert {n: pins.get(n) for n in required} == required
    # No stale CUDA pins beyond what this TensorFlow asks for.
    assert {n: v for n, v in pins.items() if n.startswith("nvidia-")} == required
