"""kubeflow/preflight.py: KFP's run-parameter checks and the storage rules, tested with
upstream's own cases (kubeflow/pipelines 2.17.0, linked at each) and with real compiled
specs of both targets."""
from __future__ import annotations

import copy

import pytest
import yaml

from kubeflow import compiler, preflight, targets
from pipeline.config import load_config

KFP = "https://github.com/kubeflow/pipelines/blob/2.17.0/"
SETTINGS = {"data_root": "gs://bucket/flowers", "workdir": "gs://bucket/imgpipe",
            "image": "europe-docker.pkg.dev/p/r/imgpipe:0.1", "epochs": 7}
DEFAULTS = {"data_root": "gs://bucket/flowers", "epochs": 7.0}


@pytest.fixture(scope="module")
def jobs():
    config = load_config(None, SETTINGS)
    return {target: compiler.compile_pipeline(config, target) for target in targets.TARGETS}


def _spec(jobs, target):
    return copy.deepcopy(jobs[target]["pipelineSpec"])


def _refused(call, *fragments):
    with pytest.raises(ValueError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ---- compiled specs: defaults, overrides, wrong values ----------------------------------

@pytest.mark.parametrize("target", targets.TARGETS)
def test_defaults_resolve_as_the_root_driver_holds_them(jobs, target):
    spec = _spec(jobs, target)
    resolved = preflight.check_spec(spec)
    assert resolved == DEFAULTS
    assert type(resolved["epochs"]) is float  # structpb numbers are doubles
    assert preflight.check_job(jobs[target], target) == DEFAULTS
    assert spec == jobs[target]["pipelineSpec"]  # not modified


@pytest.mark.parametrize("target", targets.TARGETS)
def test_valid_overrides(jobs, target):
    values = {"epochs": 3, "data_root": "gs://b/x"}
    assert preflight.check_spec(_spec(jobs, target), values) == {"data_root": "gs://b/x",
                                                                  "epochs": 3.0}
    assert preflight.check_job(jobs[target], target, {"epochs": 3}) == \
        {"data_root": "gs://bucket/flowers", "epochs": 3.0}


WRONG = [
    ({"epochs": "three"}, ['epochs="three"', "NUMBER_INTEGER",
                           "input parameter epochs requires type double or integer"]),
    # KFP takes it (any number_value); TFX's int() would make it 2.
    ({"epochs": 2.5}, ["epochs=2.5", "NUMBER_INTEGER", "truncates", "run with 2"]),
    ({"epochs": True}, ["epochs=true", "requires type double or integer"]),
    ({"data_root": 5}, ["data_root=5", "STRING", "input parameter data_root requires type string"]),
    ({"data_root": None}, ["data_root=null", "requires type string"]),
    ({"epochs": float("nan")}, ["epochs=NaN", "cannot be sent as JSON"]),
    ({"epoch": 3}, ["epoch=3", "parameter(s) provided are not required by pipeline: epoch"]),
]


@pytest.mark.parametrize("values,fragments", WRONG, ids=[str(v) for v, _ in WRONG])
@pytest.mark.parametrize("target", targets.TARGETS)
def test_wrong_run_values_are_refused_like_the_api_server(jobs, target, values, fragments):
    _refused(lambda: preflight.check_spec(_spec(jobs, target), values), *fragments)


@pytest.mark.parametrize("target", targets.TARGETS)
def test_root_parameter_without_default_needs_a_value(jobs, target):
    spec = _spec(jobs, target)
    decl = spec["root"]["inputDefinitions"]["parameters"]["epochs"]
    del decl["defaultValue"], decl["isOptional"]
    _refused(lambda: preflight.check_spec(spec), "epochs", "NUMBER_INTEGER",
             "parameter epochs is not optional, yet has neither default value nor user "
             "provided value")
    assert preflight.check_spec(spec, {"epochs": 4})["epochs"] == 4.0


@pytest.mark.parametrize("target", targets.TARGETS)
def test_optional_root_parameter_without_default_fails_the_task_that_needs_it(jobs, target):
    spec = _spec(jobs, target)
    del spec["root"]["inputDefinitions"]["parameters"]["data_root"]["defaultValue"]
    _refused(lambda: preflight.check_spec(spec), "task ImageExampleGen input data_root",
             "the resolved input parameter is null: data_root")
    assert preflight.check_spec(spec, {"data_root": "gs://b/x"})["data_root"] == "gs://b/x"


def test_default_of_the_wrong_kind_is_refused(jobs):
    spec = _spec(jobs, targets.KUBEFLOW)
    spec["root"]["inputDefinitions"]["parameters"]["epochs"]["defaultValue"] = "7"
    _refused(lambda: preflight.check_spec(spec, {"epochs": 3}),
             'default of root parameter epochs="7"', "NUMBER_INTEGER")


def _component(spec, task):
    return spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]


def test_task_input_type_must_match_the_root_parameter(jobs):
    spec = _spec(jobs, targets.KUBEFLOW)
    _component(spec, "Trainer")["inputDefinitions"]["parameters"]["epochs"][
        "parameterType"] = "NUMBER_DOUBLE"
    _refused(lambda: preflight.check_spec(spec), "task Trainer input epochs",
             "is NUMBER_INTEGER but the component declares NUMBER_DOUBLE")


def test_task_input_must_name_a_root_parameter(jobs):
    spec = _spec(jobs, targets.KUBEFLOW)
    spec["root"]["dag"]["tasks"]["Trainer"]["inputs"]["parameters"]["epochs"] = \
        {"componentInputParameter": "num_epochs"}
    _refused(lambda: preflight.check_spec(spec),
             "parent DAG does not have input parameter num_epochs")


@pytest.mark.parametrize("constant,fragments", [
    (1.5, ["constant 1.5", "NUMBER_INTEGER", "truncates"]),
    ("yes", ['constant "yes"', "type mismatch: expect NUMBER_INTEGER, got string"]),
    (None, ["constant null", "got null for input parameter"]),
])
def test_constants_must_have_the_component_type(jobs, constant, fragments):
    spec = _spec(jobs, targets.VERTEX)
    inputs = spec["root"]["dag"]["tasks"]["Transform"]["inputs"]["parameters"]
    assert _component(spec, "Transform")["inputDefinitions"]["parameters"][
        "disable_statistics"]["parameterType"] == "NUMBER_INTEGER"
    inputs["disable_statistics"] = {"runtimeValue": {"constant": constant}}
    _refused(lambda: preflight.check_spec(spec), "task Transform input disable_statistics",
             *fragments)


def test_a_required_component_input_the_task_omits_is_refused(jobs):
    spec = _spec(jobs, targets.KUBEFLOW)
    del spec["root"]["dag"]["tasks"]["Evaluator"]["inputs"]["parameters"]["eval_config"]
    _refused(lambda: preflight.check_spec(spec), "task Evaluator input eval_config",
             'neither value nor default value provided for non-optional parameter '
             '"eval_config"')


def test_an_input_the_component_does_not_declare_is_refused(jobs):
    spec = _spec(jobs, targets.KUBEFLOW)
    spec["root"]["dag"]["tasks"]["Trainer"]["inputs"]["parameters"]["extra"] = \
        {"runtimeValue": {"constant": "x"}}
    _refused(lambda: preflight.check_spec(spec), "task Trainer input extra", "not declared")


def test_vertex_file_values_are_checked_then_merged_as_aiplatform_merges(jobs):
    job = copy.deepcopy(jobs[targets.VERTEX])
    assert job["runtimeConfig"]["parameterValues"] == {"data_root": "gs://bucket/flowers",
                                                       "epochs": 7}
    # aiplatform drops None values and lets submit-time values win.
    assert preflight.check_job(job, targets.VERTEX, {"epochs": None}) == DEFAULTS
    assert preflight.check_job(job, targets.VERTEX, {"data_root": "/data/x"})["data_root"] \
        == "/data/x"
    _refused(lambda: preflight.check_job(job, targets.VERTEX, {"epochs": 2.5}), "run with 2")
    job["runtimeConfig"]["parameterValues"]["epochs"] = "x"
    _refused(lambda: preflight.check_job(job, targets.VERTEX),
             'runtimeConfig.parameterValues epochs="x"', "requires type double or integer")


@pytest.mark.parametrize("target", targets.TARGETS)
def test_check_job_refuses_the_package_pipeline_root(jobs, target):
    job = copy.deepcopy(jobs[target])
    if target == targets.VERTEX:
        job["runtimeConfig"]["gcsOutputDirectory"] = "minio://mlpipeline/root"
        fragment = "minio:// is not allowed on vertex"
    else:
        job["pipelineSpec"]["defaultPipelineRoot"] = "/mnt/root"
        fragment = "unrecognized pipeline root format"
    _refused(lambda: preflight.check_job(job, target), fragment)


def test_tasks_inside_a_sub_dag_are_checked_against_the_dag_inputs():
    inner = {"inputDefinitions": {"parameters": {"n": {"parameterType": "NUMBER_INTEGER"}}},
             "executorLabel": "exec-inner"}
    outer = {"inputDefinitions": {"parameters": {"count": {"parameterType": "STRING"}}},
             "dag": {"tasks": {"inner": {"componentRef": {"name": "comp-inner"},
                                         "inputs": {"parameters": {"n": {
                                             "componentInputParameter": "count"}}}}}}}
    spec = {"components": {"comp-inner": inner, "comp-outer": outer},
            "root": {"inputDefinitions": {"parameters": {"x": {"parameterType": "STRING"}}},
                     "dag": {"tasks": {"outer": {"componentRef": {"name": "comp-outer"},
                                                 "inputs": {"parameters": {"count": {
                                                     "componentInputParameter": "x"}}}}}}}}
    _refused(lambda: preflight.check_spec(spec, {"x": "3"}), "task outer/inner input n",
             "componentInputParameter count is STRING but the component declares "
             "NUMBER_INTEGER")
    outer["inputDefinitions"]["parameters"]["count"]["parameterType"] = "NUMBER_INTEGER"
    _refused(lambda: preflight.check_spec(spec, {"x": "3"}), "task outer input count",
             "is STRING but the component declares NUMBER_INTEGER")


# ---- upstream's cases --------------------------------------------------------------------

# backend/src/apiserver/template/testdata/hello_world.yaml (the executor left out).
HELLO_WORLD = yaml.safe_load("""
components:
  comp-hello-world:
    executorLabel: exec-hello-world
    inputDefinitions:
      parameters:
        text:
          parameterType: STRING
pipelineInfo:
  name: namespace/n1/pipeline/hello-world
root:
  dag:
    tasks:
      hello-world:
        cachingOptions:
          enableCache: true
        componentRef:
          name: comp-hello-world
        inputs:
          parameters:
            text:
              componentInputParameter: y
        taskInfo:
          name: hello-world
  inputDefinitions:
    parameters:
      y:
        parameterType: STRING
schemaVersion: 2.1.0
""")
TEMPLATE_TEST = KFP + "backend/src/apiserver/template/template_test.go"
ALL_TYPES = {"root": {"inputDefinitions": {"parameters": {
    "num": {"parameterType": "NUMBER_DOUBLE"}, "flag": {"parameterType": "BOOLEAN"},
    "items": {"parameterType": "LIST"}, "config": {"parameterType": "STRUCT"}}}}}
ALL_OK = {"num": 3.14, "flag": True, "items": [], "config": {}}


def _one(name, ptype, **extra):
    return {"root": {"inputDefinitions": {"parameters": {
        name: {"parameterType": ptype, **extra}}}}}


# (link, spec, run values, None for accepted or the upstream error fragment)
API_SERVER_CASES = [
    (f"{TEMPLATE_TEST}#L757", HELLO_WORLD, None, "not optional"),
    (f"{TEMPLATE_TEST}#L767", HELLO_WORLD, {"y": "hello"}, None),
    (f"{TEMPLATE_TEST}#L781", HELLO_WORLD, {"y": 42}, "requires type string"),
    (f"{TEMPLATE_TEST}#L796", HELLO_WORLD, {"y": "hello", "extra": "not expected"},
     "not required by pipeline"),
    (f"{TEMPLATE_TEST}#L830", ALL_TYPES, ALL_OK, None),
    (f"{TEMPLATE_TEST}#L844", ALL_TYPES, {**ALL_OK, "num": "not a number"},
     "requires type double or integer"),
    (f"{TEMPLATE_TEST}#L860", ALL_TYPES, {**ALL_OK, "flag": 1}, "requires type bool"),
    (f"{TEMPLATE_TEST}#L876", ALL_TYPES, {**ALL_OK, "items": "not a list"},
     "requires type list"),
    (f"{TEMPLATE_TEST}#L892", ALL_TYPES, {**ALL_OK, "config": "not a struct"},
     "requires type struct"),
    (f"{TEMPLATE_TEST}#L909", _one("bad", "PARAMETER_TYPE_ENUM_UNSPECIFIED"),
     {"bad": "anything"}, "has unspecified type"),
    (f"{TEMPLATE_TEST}#L934", _one("status", "TASK_FINAL_STATUS"), {"status": "anything"},
     "TASK_FINAL_STATUS"),
    (f"{TEMPLATE_TEST}#L959", _one("opt", "STRING", isOptional=True), {}, None),
    (f"{TEMPLATE_TEST}#L981", {"root": {}}, None, None),
]


@pytest.mark.parametrize("link,spec,values,error", API_SERVER_CASES,
                         ids=[c[0].rsplit("#", 1)[1] for c in API_SERVER_CASES])
def test_upstream_validate_pipeline_job_inputs_cases(link, spec, values, error):
    if error is None:
        resolved = preflight.check_spec(spec, values)
        assert set(resolved) == set(spec["root"].get("inputDefinitions", {})
                                    .get("parameters", {}))
    else:
        _refused(lambda: preflight.check_spec(spec, values), error)


def test_hello_world_task_resolves_its_component_input():
    assert preflight.check_spec(HELLO_WORLD, {"y": "world"}) == {"y": "world"}
    spec = copy.deepcopy(HELLO_WORLD)
    spec["components"]["comp-hello-world"]["inputDefinitions"]["parameters"]["text"][
        "parameterType"] = "NUMBER_INTEGER"
    _refused(lambda: preflight.check_spec(spec, {"y": "world"}),
             "task hello-world input text", "is STRING but the component declares "
             "NUMBER_INTEGER")


# The cases of backend/src/common/util/validate_literal_test.go, by line:
# (line, parameterType, value, literals, accepted)
LITERAL_CASES = [
    (35, "STRING", "dev", ["dev", "staging", "prod"], True),
    (46, "STRING", "test", ["dev", "staging", "prod"], False),
    (58, "STRING", "Dev", ["dev"], False),
    (68, "NUMBER_INTEGER", 3, [1, 3, 5], True),
    (79, "NUMBER_INTEGER", 2, [1, 3, 5], False),
    (91, "NUMBER_DOUBLE", 0.5, [0.1, 0.5, 0.9], True),
    (102, "NUMBER_DOUBLE", 0.3, [0.1, 0.5, 0.9], False),
    (114, "BOOLEAN", True, [True], True),
    (123, "BOOLEAN", False, [True], False),
    (133, "STRING", "anything", None, True),
    (140, "STRING", "anything", [], True),
    (147, "STRING", "only_option", ["only_option"], True),
    (156, "STRING", "other", ["only_option"], False),
]


@pytest.mark.parametrize("line,ptype,value,literals,accepted", LITERAL_CASES,
                         ids=[f"L{c[0]}" for c in LITERAL_CASES])
def test_upstream_literal_cases(line, ptype, value, literals, accepted):
    spec = _one("test-parameter", ptype, literals=literals)
    if accepted:
        assert preflight.check_spec(spec, {"test-parameter": value}) == {"test-parameter": value}
    else:
        _refused(lambda: preflight.check_spec(spec, {"test-parameter": value}),
                 "does not match any of the allowed literal values")


def test_literals_compare_as_protobuf_values():
    # proto.Equal on structpb: 3 and 3.0 are one double; true is not the number 1.
    spec = _one("n", "NUMBER_INTEGER", literals=[1, 3])
    assert preflight.check_spec(spec, {"n": 3.0}) == {"n": 3.0}
    _refused(lambda: preflight.check_spec(_one("b", "BOOLEAN", literals=[True]), {"b": 1}),
             "requires type bool")


# backend/src/v2/objectstore/object_store_test.go#L38-L157 (Test_parseCloudBucket): all parse.
PARSED_BY_KFP = ["gs://my-bucket", "gs://my-bucket/", "gs://my-bucket/my-path",
                 "gs://my-bucket/my-path/", "gs://my-bucket/my-path/123",
                 "gs://my-bucket/my-path/123/", "minio://my-bucket", "minio://my-bucket/my-path",
                 "minio://my-bucket/my-path/123", "s3://my-bucket/my-path/123"]


@pytest.mark.parametrize("uri", PARSED_BY_KFP)
def test_upstream_bucket_uris_are_pipeline_roots(uri):
    assert preflight.check_pipeline_root(uri, targets.KUBEFLOW) == uri
    if uri.startswith("gs://"):
        assert preflight.check_pipeline_root(uri, targets.VERTEX) == uri
    else:
        _refused(lambda: preflight.check_pipeline_root(uri, targets.VERTEX), "gs://bucket/path")


@pytest.mark.parametrize("uri,fragment", [
    # objectstore/config.go#L137 accepts mem://, config/env.go#L130-L153 has no provider.
    ("mem://bucket/root", "mem:// is not allowed on kubeflow"),
    ("file:///tmp/root", "file:// is not allowed"),
    ("https://host/root", "https:// is not allowed"),
    ("gs://", "unrecognized pipeline root format"),
    ("/mnt/pipeline_root", "unrecognized pipeline root format"),
    ("GS://bucket/root", "unrecognized pipeline root format"),
])
def test_pipeline_roots_kfp_cannot_open(uri, fragment):
    _refused(lambda: preflight.check_pipeline_root(uri, targets.KUBEFLOW), fragment)


# ---- storage ------------------------------------------------------------------------------

def test_task_image_tf_has_gcs_and_no_s3_or_minio_filesystem():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    schemes = set(tf.io.gfile.get_registered_schemes())
    assert "gs" in schemes and not {"s3", "minio", "http", "https"} & schemes
    for scheme in ("s3", "minio"):
        with pytest.raises(tf.errors.UnimplementedError,
                           match=f"File system scheme '{scheme}' not implemented"):
            tf.io.gfile.exists(f"{scheme}://bucket/images")
    # The rule refuses exactly what the image cannot open.
    for scheme in ("s3", "minio", "http", "https", "hdfs"):
        assert scheme not in schemes
        _refused(lambda: preflight.check_task_path("data_root", f"{scheme}://b/x", "the images"),
                 "copy the images to gs://")
    assert preflight.check_task_path("data_root", "gs://b/x") == "gs://b/x"


OK_ROOTS = {"workdir": "gs://bucket/imgpipe", "data_root": "gs://bucket/flowers"}
DATAFLOW = {"beam_runner": "dataflow", "gcp_project": "p", "gcp_region": "europe-west4",
            "dataflow_temp_location": "gs://bucket/tmp"}
BOTH, KFP_ONLY, NONE = targets.TARGETS, (targets.KUBEFLOW,), ()
# (settings over OK_ROOTS, targets that accept it, fragment of the refusal)
STORAGE_CASES = [
    ({}, BOTH, ""),
    ({"data_root": "/data/flowers"}, BOTH, ""),
    ({"workdir": "minio://mlpipeline/imgpipe"}, KFP_ONLY, "minio:// is not allowed on vertex"),
    ({"workdir": "s3://bucket/imgpipe"}, KFP_ONLY, "s3:// is not allowed on vertex"),
    ({"workdir": "/mnt/imgpipe"}, NONE, "not a bucket URI"),
    ({"workdir": "mem://bucket/imgpipe"}, NONE, "mem:// is not allowed"),
    ({"data_root": "minio://mlpipeline/flowers"}, NONE, "no minio:// filesystem"),
    ({"data_root": "s3://bucket/flowers"}, NONE, "copy the images to gs://"),
    ({"data_root": "https://host/flowers.csv"}, NONE, "cannot read http(s)"),
    ({"data_root": "http://host/flowers"}, NONE, "cannot read http(s)"),
    ({"data_root": "flowers"}, NONE, "relative path"),
    ({"data_root": "file:///data/flowers"}, NONE, "without file://"),
    ({"schema_path": "gs://bucket/schema.pbtxt"}, BOTH, ""),
    ({"schema_path": "s3://bucket/schema.pbtxt"}, NONE, "copy the schema file to gs://"),
    ({"weights": "imagenet"}, BOTH, ""),
    ({"weights": "gs://bucket/b3_notop.h5"}, BOTH, ""),
    ({"weights": "minio://bucket/b3_notop.h5"}, NONE, "copy the weights file to gs://"),
    ({"cache": "s3://bucket/cache"}, NONE, "cache="),
    ({"cache": "/scratch/cache"}, BOTH, ""),
    (DATAFLOW, BOTH, ""),
    ({**DATAFLOW, "data_root": "/data/flowers"}, NONE, "beam_runner=dataflow needs gs://"),
    ({**DATAFLOW, "workdir": "minio://mlpipeline/imgpipe"}, NONE, "gs://"),
    ({**DATAFLOW, "dataflow_temp_location": None}, NONE, "dataflow_temp_location=None"),
    ({**DATAFLOW, "dataflow_temp_location": "gs://bucket"}, NONE, "Beam's Dataflow runner"),
    ({**DATAFLOW, "dataflow_temp_location": "/tmp/df"}, NONE, "needs gs://bucket/path"),
]


@pytest.mark.parametrize("target", targets.TARGETS)
@pytest.mark.parametrize("settings,accepted_by,fragment", STORAGE_CASES,
                         ids=[str(c[0]) for c in STORAGE_CASES])
def test_check_storage(settings, accepted_by, fragment, target):
    config = load_config(None, {**SETTINGS, **OK_ROOTS, **settings})
    if target in accepted_by:
        assert preflight.check_storage(config, target) is None
    else:
        _refused(lambda: preflight.check_storage(config, target), fragment)


def test_check_storage_names_the_target():
    _refused(lambda: preflight.check_storage(load_config(None, SETTINGS), "argo"),
             "target='argo'")
