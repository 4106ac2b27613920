"""Driver that makes TFX caching notice changed images.

The component's exec properties name only the data root, so without this a second run on
an edited folder would hit the cache. The driver streams the listing (path, size, mtime)
into a hash and adds it as the `input_fingerprint` exec property, which is part of the
cache key. It holds no file list in memory.
"""
from __future__ import annotations

import json

from tfx.orchestration.portable import data_types

from components.cache_key_driver import CacheKeyDriver
from components.image_example_gen import sources

INGEST_OPTIONS_KEY = "ingest_options"
INPUT_FINGERPRINT_KEY = "input_fingerprint"
DATA_ROOT_KEY = "data_root"


def data_root(exec_properties) -> str:
    """The data root a run ingests: the `data_root` property if set, else the options'."""
    return exec_properties.get(DATA_ROOT_KEY) or \
        json.loads(exec_properties[INGEST_OPTIONS_KEY])["data_root"]


class FingerprintDriver(CacheKeyDriver):
    """Adds {input_fingerprint: sha256 of the data root listing}."""

    def extra_properties(self, execution_info: data_types.ExecutionInfo) -> dict:
        return {INPUT_FINGERPRINT_KEY: sources.fingerprint(data_root(
            execution_info.exec_properties))}
