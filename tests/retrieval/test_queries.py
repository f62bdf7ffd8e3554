"""The fused query vector the retriever searches with: normalize(α·z_image + (1 − α)·z_text), as torch's
`F.normalize` computes it; one modality as it is, a fresh writable float32 copy of a read-only array."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmray.errors import QueryError
from mmray.retrieval.queries import fuse_query


def test_a_fused_query_is_the_normalised_weighted_sum() -> None:
    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(2, 16)).astype(np.float32)  # (E,) each
    fused = fuse_query(image, text, 0.3)
    expected = F.normalize(0.3 * torch.from_numpy(image) + 0.7 * torch.from_numpy(text), dim=-1).numpy()
    assert fused.dtype == np.float32 and np.allclose(fused, expected, atol=1e-6)
    assert np.allclose(fuse_query(np.zeros(4), np.zeros(4), 0.5), 0.0), "no division by zero"


def test_one_modality_is_searched_as_it_is_in_a_writable_copy() -> None:
    text = np.arange(4, dtype=np.float64)
    text.flags.writeable = False  # as a vector read back from Ray's object store
    query = fuse_query(None, text, 0.5)
    assert query.dtype == np.float32 and query.flags.writeable and np.array_equal(query, text)
    with pytest.raises(QueryError, match="needs a text, an image, or both"):
        fuse_query(None, None, 0.5)
