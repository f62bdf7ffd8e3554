"""COCO-protocol retrieval metrics: Recall@K both ways and median rank, in bounded memory."""

from __future__ import annotations

import torch

DEFAULT_KS = (1, 5, 10)


def _ranks(
    queries: torch.Tensor, keys: torch.Tensor, query_ids: torch.Tensor, key_ids: torch.Tensor, chunk: int
) -> torch.Tensor:
    """1-based rank of each query's best-scored own key (one with the query's id) among all keys, behind every
    other key scored as high. NaN own scores rank last; another key's NaN score is never ahead. -> (Q,)"""
    ranks = []
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start : start + chunk] @ keys.T  # (n, K)
        own = query_ids[start : start + chunk, None] == key_ids  # (n, K)
        own_scores = scores.nan_to_num(nan=float("-inf")).masked_fill(~own, float("-inf"))  # (n, K)
        best_own = own_scores.max(dim=1, keepdim=True).values  # (n, 1); -inf: every own score NaN
        ahead = ((scores >= best_own) & ~own).sum(dim=1) + 1  # (n,)
        ranks.append(torch.where(best_own.squeeze(1) == float("-inf"), scores.shape[1], ahead))  # (n,)
    return torch.cat(ranks)


def text_to_image_ranks(
    text_embeddings: torch.Tensor,  # (C, E)
    image_embeddings: torch.Tensor,  # (N, E)
    caption_image: torch.Tensor,  # (C,) index of each caption's image
    chunk_size: int = 1024,
) -> torch.Tensor:
    """The rank (as in `_ranks`) of each caption's own image among all images. -> (C,)"""
    images = torch.arange(image_embeddings.shape[0], device=caption_image.device)  # (N,)
    return _ranks(text_embeddings, image_embeddings, caption_image, images, chunk_size)


def image_to_text_ranks(
    image_embeddings: torch.Tensor,  # (N, E)
    text_embeddings: torch.Tensor,  # (C, E)
    caption_image: torch.Tensor,  # (C,)
    chunk_size: int = 256,
) -> torch.Tensor:
    """The rank (as in `_ranks`) of each image's best-ranked own caption among all captions. -> (N,)"""
    images = torch.arange(image_embeddings.shape[0], device=caption_image.device)  # (N,)
    return _ranks(image_embeddings, text_embeddings, images, caption_image, chunk_size)


def retrieval_metrics(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, caption_image: torch.Tensor
) -> dict[str, float]:
    """`i2t_R@K`, `t2i_R@K` (K in `DEFAULT_KS`), their mean `recall_mean`, and `i2t_medr` / `t2i_medr`.
    An image→text query hits at K when any of the image's captions is in the top K. Ties count against
    the query (a collapsed model finds nothing) and NaN scores of its own pairs rank last (a diverged one)."""
    images, texts = image_embeddings.float(), text_embeddings.float()
    i2t = image_to_text_ranks(images, texts, caption_image)
    return metrics_from_ranks(i2t, text_to_image_ranks(texts, images, caption_image))


def metrics_from_ranks(i2t: torch.Tensor, t2i: torch.Tensor) -> dict[str, float]:
    """Recall@K and median ranks from 1-based first-hit ranks (inf where a search returned no hit)."""
    recalls = {
        f"{direction}_R@{k}": float((ranks <= k).float().mean())
        for direction, ranks in (("i2t", i2t), ("t2i", t2i))
        for k in DEFAULT_KS
    }
    return {
        **recalls,
        "i2t_medr": float(i2t.float().median()),
        "t2i_medr": float(t2i.float().median()),
        "recall_mean": sum(recalls.values()) / len(recalls),
    }
