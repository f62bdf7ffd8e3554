"""Config section of index jobs: what to embed and which faiss index to build."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from mmray.config.base import Section

IndexType = Literal["auto", "flat", "ivf_flat", "ivf_pq", "hnsw"]
CorpusKind = Literal["images", "captions"]


class IndexSettings(Section):
    """Embedding a split (on Ray Data, or in this process) and indexing the vectors with faiss."""

    split: str = Field("val", description="which split of the data section to index")
    corpus: list[CorpusKind] = Field(default_factory=lambda: list(get_args(CorpusKind)))
    type: IndexType = Field("auto", description="auto: flat up to 50k vectors, ivf_flat up to 2M, else ivf_pq")
    nlist: int | None = Field(None, ge=1, description="IVF lists; default √n")
    nprobe: int = Field(8, ge=1, description="IVF lists searched per query (changeable at query time)")
    pq_m: int = Field(32, ge=1, description="IVF-PQ sub-quantizers (must divide the dimension)")
    pq_bits: int = Field(8, ge=4, le=12)
    hnsw_m: int = Field(32, ge=4)
    ef_construction: int = Field(80, ge=8)
    ef_search: int = Field(128, ge=1, description="HNSW search breadth (changeable at query time)")
    train_sample: int = Field(200_000, ge=1000, description="vectors sampled to train IVF / PQ")
    shard_size: int = Field(4096, ge=16, description="rows per embedding shard (the unit of resume)")
    batch_size: int = Field(256, ge=1, description="rows per embedding batch")
    runner: Literal["auto", "ray_data", "local"] = Field(
        "auto",
        description="where rows are embedded: ray_data (CPU decoding tasks, a pool of model actors), local (this "
        "process, no Ray), or auto: local for at most local_max_rows rows when one CPU actor is asked, else ray_data",
    )
    local_max_rows: int = Field(
        20_000, ge=0, description="runner auto: the most rows (images + captions) embedded in this process"
    )
    embed_actors: int = Field(1, ge=1, description="embedding actors (one per GPU on a cluster)")
    gpus_per_actor: float = Field(0.0, ge=0.0)
    use_gpu_index: bool = Field(True, description="move flat / IVF indexes to GPUs when faiss has some")
    seed: int = Field(0, description="seed of IVF / PQ training samples")
