"""Imports only point downward: the layering README.md's "Layout" section describes.

Every project import (at module level or inside a function, since a lazy import is still a
dependency) must reach a lower layer, or, within a layer, a module of its own package or
of a parent package (components/cache_key_driver.py serves every component's driver). Package
`__init__` files only re-export lazily and are not layers of their own.
"""
import ast
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "components", "trainer_module", "kubeflow")

# Top to bottom; a module is in the first layer with a pattern matching its path.
LAYERS = [
    ("application", ["pipeline/cli.py", "pipeline/cli_common.py", "pipeline/cli_run.py",
                     "pipeline/cli_inspect.py", "pipeline/cli_cluster.py",
                     "pipeline/console.py", "pipeline/predict.py", "pipeline/demo_data.py"]),
    ("runners", ["pipeline/local_runner.py", "pipeline/workdir_lock.py", "kubeflow/*.py"]),
    ("run records and reports", ["pipeline/history.py", "pipeline/blessing.py",
                                 "pipeline/run_report.py"]),
    ("wiring and config", ["pipeline/wiring.py", "pipeline/config.py",
                           "pipeline/evaluation.py"]),
    ("TFX adapters", ["components/*/component.py", "components/*/executor.py",
                      "components/*/driver.py", "components/*/vertex_executor.py",
                      "components/artifact_pusher.py", "components/cache_key_driver.py"]),
    ("pure cores", ["components/image_example_gen/*.py", "components/data_validation/*.py",
                    "components/reports/*.py",
                    "trainer_module/model.py", "trainer_module/export.py",
                    "trainer_module/preprocessing.py", "trainer_module/strategy.py",
                    "trainer_module/train.py", "pipeline/eval_metrics.py"]),
    ("settings and shared decoding", ["*/options.py", "*/*/options.py",
                                      "trainer_module/image_ops.py",
                                      "trainer_module/dataset.py"]),
    ("contract", ["trainer_module/features.py"]),
]
# The options modules are placed first: each sits in its layer's folder but is a leaf.
_ORDER = sorted(range(len(LAYERS)), key=lambda i: i != len(LAYERS) - 2)


def layer_of(relpath: str) -> int:
    """Rank (0 = contract, higher = further up) of a module file, by LAYERS."""
    path = pathlib.PurePosixPath(relpath)
    for i in _ORDER:
        if any(path.match(p) and len(path.parts) == len(pathlib.PurePosixPath(p).parts)
               for p in LAYERS[i][1]):
            return len(LAYERS) - 1 - i
    raise AssertionError(f"{relpath} is in no layer: add it to tests/test_layers.py LAYERS")


def _modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name != "__init__.py":
                yield path.relative_to(ROOT).as_posix()


def _file(module: str):
    """Dotted name -> the project module file it names (relative to ROOT), or None."""
    if module.split(".")[0] not in PACKAGES:
        return None
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    return path.relative_to(ROOT).as_posix() if path.is_file() else None


def imports_of(relpath: str):
    """(line, imported file) for every project module `relpath` imports."""
    tree = ast.parse((ROOT / relpath).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found = [_file(a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module` names modules; `from module import name` not.
            found = [_file(node.module)] if _file(node.module) else [
                _file(f"{node.module}.{a.name}") for a in node.names]
        else:
            continue
        for target in found:
            if target:
                yield node.lineno, target


def test_every_module_is_in_a_layer():
    for relpath in _modules():
        layer_of(relpath)


def test_imports_point_downward():
    wrong = []
    for relpath in _modules():
        rank = layer_of(relpath)
        for line, target in imports_of(relpath):
            target_rank = layer_of(target)
            # Within a layer a module may use its own package's or a parent package's.
            shared = (os.path.dirname(relpath) + "/").startswith(
                os.path.dirname(target) + "/")
            if target_rank > rank or (target_rank == rank and not shared):
                wrong.append(f"{relpath}:{line} ({LAYERS[len(LAYERS) - 1 - rank][0]}) imports "
                             f"{target} ({LAYERS[len(LAYERS) - 1 - target_rank][0]})")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_the_contract_and_settings_import_no_library_of_weight():
    heavy = ("tensorflow", "apache_beam", "tfx", "tensorflow_data_validation",
             "tensorflow_model_analysis", "tensorflow_transform", "kfp", "tf_keras")
    for relpath in [*_modules()]:
        if layer_of(relpath) > 1 or relpath.endswith(("image_ops.py", "dataset.py")):
            continue
        tree = ast.parse((ROOT / relpath).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] in heavy], (relpath, names)


@pytest.mark.parametrize("source, expected", [
    ("from pipeline import cli\n", ["pipeline/cli.py"]),
    ("import trainer_module.features\n", ["trainer_module/features.py"]),
    ("from components.image_example_gen.ingest import IngestImages\n",
     ["components/image_example_gen/ingest.py"]),
])
def test_the_import_reader_sees_project_imports(tmp_path, monkeypatch, source, expected):
    """The checker itself: it must find what a module imports, or it proves nothing."""
    probe = ROOT / "pipeline" / "_layer_probe_tmp.py"
    probe.write_text(source, encoding="utf-8")
    try:
        assert [t for _, t in imports_of("pipeline/_layer_probe_tmp.py")] == expected
    finally:
        probe.unlink()
