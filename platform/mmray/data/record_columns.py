"""A split's records as columns: what the streaming feed carries per image, a few bytes a caption where the
records are a Python object each (about 2 KB an image)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mmray.data.records import ImageRecord


def records_table(records: list[ImageRecord]) -> pa.Table:
    """image_id, image_uri, captions (list), labels (fixed-size list of K; no column where K is 0: a split
    without instances), object_count, covered_fraction."""
    labels = np.asarray([r.labels for r in records], dtype=np.float32).reshape(len(records), -1)  # (N, K)
    columns = {
        "image_id": pa.array([r.image_id for r in records], pa.int64()),
        "image_uri": pa.array([r.image_uri for r in records], pa.string()),
        "captions": pa.array([r.captions for r in records], pa.list_(pa.string())),
        "object_count": pa.array([r.object_count for r in records], pa.float32()),
        "covered_fraction": pa.array([r.covered_fraction for r in records], pa.float32()),
    }
    if labels.shape[1]:
        columns["labels"] = pa.FixedSizeListArray.from_arrays(pa.array(labels.ravel()), labels.shape[1])
    return pa.table(columns)
