"""The per-dataset schema: the curated template tightened to one dataset's vocabulary.

Starting from the curated template (`schema_template.pbtxt` next to this module: types, presence 100%,
image domain, allowed formats), `dataset_schema` sets
  label       int domain [0, C-1]
  label_name  string domain = the vocabulary (labels.txt order)
so a new, renamed or misspelled class folder is an anomaly. "Every class in every split" is
not expressible in a TFDV schema; the gate checks it against this domain (checks.py).
"""
from __future__ import annotations

import os
from typing import Sequence

from tensorflow_metadata.proto.v0 import schema_pb2

from trainer_module import features

# The curated template shipped with this code (the project is installed editable, in the
# image too), found next to the code that runs rather than by a path compiled into a spec.
CURATED_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "schema_template.pbtxt")


def _feature(schema: schema_pb2.Schema, name: str) -> schema_pb2.Feature:
    for feature in schema.feature:
        if feature.name == name:
            return feature
    raise ValueError(f"the schema template has no feature {name!r}.")


def dataset_schema(template: schema_pb2.Schema,
                   vocabulary: Sequence[str]) -> schema_pb2.Schema:
    """The template with label/label_name domains for `vocabulary` (a new proto).

    Raises:
      ValueError: an empty vocabulary, or a template without label/label_name.
    """
    if not vocabulary:
        raise ValueError("the vocabulary is empty: no class to build a schema for.")
    schema = schema_pb2.Schema()
    schema.CopyFrom(template)
    label = _feature(schema, features.LABEL_KEY)
    label.int_domain.min, label.int_domain.max = 0, len(vocabulary) - 1
    names = _feature(schema, features.LABEL_NAME_KEY)
    names.ClearField("domain")
    names.string_domain.name = features.LABEL_NAME_KEY
    names.string_domain.value[:] = list(vocabulary)
    return schema


def classes(schema: schema_pb2.Schema) -> list:
    """The class names the schema expects (label_name's string domain), [] when unset."""
    names = _feature(schema, features.LABEL_NAME_KEY)
    return list(names.string_domain.value) if names.HasField("string_domain") else []
