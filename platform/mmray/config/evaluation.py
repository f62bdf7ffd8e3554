"""Config section of evaluate jobs: which split, how many rows per batch, index search breadth."""

from __future__ import annotations

from pydantic import Field

from mmray.config.base import Section


class EvaluateSettings(Section):
    """Evaluating a model bundle (by its task's metrics) or an index bundle (Recall@K through it)."""

    split: str = Field("val", description="which split of the data section to evaluate on")
    batch_size: int = Field(512, ge=1, description="rows per batch when embedding or predicting")
    nprobe: int | None = Field(None, ge=1, description="IVF lists searched (index bundles); default: the bundle's")
    ef_search: int | None = Field(None, ge=1, description="HNSW search breadth (index bundles); default: the bundle's")
    figures: str | None = Field(
        None,
        description="directory or s3:// prefix for the evaluation's figures; default: evaluation/<split> in the "
        "training run directory that holds the bundle",
    )
