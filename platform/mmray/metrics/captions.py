"""BLEU-4 and CIDEr-D of generated captions with the COCO caption evaluation code (pycocoevalcap, imported
here only; its Java tokenizer replaced by lower-casing and splitting off punctuation)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

_PUNCTUATION = re.compile(r"[^\w\s]")


def caption_tokens(text: str) -> str:
    """Lower case, punctuation removed, words separated by single spaces."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def caption_scores(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-4 and CIDEr-D of one candidate per image against its references, on the COCO evaluation's
    scale (CIDEr-D 1.0 is the "100" of papers); CIDEr-D's document frequencies come from these references."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    if not candidates:
        raise ValueError("no captions to score")
    empty = [i for i, refs in enumerate(references) if not refs]
    if empty:
        raise ValueError(f"images without reference captions at positions {empty[:10]}")
    gts = {i: [caption_tokens(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [caption_tokens(c)] for i, c in enumerate(candidates)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "cider_d": float(cider)}
