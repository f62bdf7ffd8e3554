"""A pipeline stage's output recorded under a key of its inputs: `<storage_root>/<pipeline>/stages/<stage>-<key>.json`,
written when the stage has finished, so a rerun with the same inputs reads it instead of running it again."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from mmray import storage
from mmray.errors import ConfigError, json_object, reading

logger = logging.getLogger(__name__)


def stage_key(**inputs: Any) -> str:
    """A short content hash of everything a stage's output depends on (JSON-encodable values)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StageRecords:
    """The finished stages of one pipeline."""

    def __init__(self, storage_root: str, pipeline: str) -> None:
        self.directory = storage.join(storage_root, pipeline, "stages")

    def run(self, stage: str, key: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """`work()`'s outputs, or those recorded by an earlier run of this stage with the same key."""
        uri = storage.join(self.directory, f"{stage}-{key}.json")
        if storage.exists(uri):
            with reading(uri, ConfigError):
                outputs = json_object(storage.read_bytes(uri))["outputs"]
                if not isinstance(outputs, dict):
                    raise TypeError(f"outputs is a {type(outputs).__name__}, not an object")
            logger.info("%s: done before for these inputs (%s), skipped", stage, uri)
            return outputs
        logger.info("%s: running (inputs %s)", stage, key)
        started = time.monotonic()
        outputs = work()
        record = {"stage": stage, "key": key, "outputs": outputs, "seconds": round(time.monotonic() - started, 1),
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
        storage.write_text(uri, json.dumps(record, indent=2))
        return outputs
