"""Tokenizers with one interface: a word-level tokenizer for the small towers, and Hugging Face's.

Every sequence starts with BOS (the pooled "CLS" position of encoders) and ends with EOS when it
fits; `decode` turns ids back into text, stopping at EOS, so a caption decoder can share them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

WORD_TOKENIZER_FILE = "word_tokenizer.json"
HF_TOKENIZER_DIR = "hf_tokenizer"
MAX_LENGTH_FILE = "mmray_max_length.json"
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


@dataclass
class TokenBatch:
    ids: torch.Tensor  # (B, L) int64
    mask: torch.Tensor  # (B, L) bool, True where a token is real
    truncated: torch.Tensor  # (B,) bool, True where the text did not fit in max_length


class WordTokenizer:
    """Lower-cased words and punctuation; a vocabulary built from training captions."""

    kind = "word"
    SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
    PAD, UNK, BOS, EOS = 0, 1, 2, 3
    pad_id, bos_id, eos_id = PAD, BOS, EOS

    def __init__(self, vocabulary: Sequence[str], max_length: int) -> None:
        if tuple(vocabulary[: len(self.SPECIALS)]) != self.SPECIALS:
            raise ValueError(f"vocabulary must start with {self.SPECIALS}")
        if max_length < 2:
            raise ValueError(f"max_length must leave room for BOS and EOS, got {max_length}")
        self.vocabulary = list(vocabulary)
        self.index = {word: i for i, word in enumerate(self.vocabulary)}
        self.max_length = max_length

    @classmethod
    def build(cls, texts: Iterable[str], max_length: int, min_count: int = 1) -> WordTokenizer:
        """A vocabulary of every word seen `min_count` times, sorted, so every process builds the same."""
        counts = Counter(word for text in texts for word in _WORD.findall(text.lower()))
        words = sorted(w for w, n in counts.items() if n >= min_count and w not in cls.SPECIALS)
        return cls([*cls.SPECIALS, *words], max_length)

    def extended(self, texts: Iterable[str]) -> tuple[WordTokenizer, list[str]]:
        """This vocabulary with the unknown words of `texts` appended (existing ids unchanged), and those
        words in order; for fine-tuning a trained text tower on texts with new words."""
        added = sorted({w for text in texts for w in _WORD.findall(text.lower())} - set(self.index))
        if not added:
            return self, []
        return WordTokenizer([*self.vocabulary, *added], self.max_length), added

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def encode(self, texts: Sequence[str]) -> TokenBatch:
        tokens = [[self.BOS, *(self.index.get(w, self.UNK) for w in _WORD.findall(t.lower())), self.EOS] for t in texts]
        rows = [(row + [self.PAD] * self.max_length)[: self.max_length] for row in tokens]
        ids = torch.tensor(rows, dtype=torch.long).reshape(len(texts), self.max_length)  # (B, L)
        truncated = torch.tensor([len(row) > self.max_length for row in tokens], dtype=torch.bool)  # (B,)
        return TokenBatch(ids=ids, mask=ids != self.PAD, truncated=truncated)

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Text of each row (B, L): specials skipped, stopping at the first EOS."""
        rows = (itertools.takewhile(lambda token: token != self.EOS, row) for row in ids.tolist())
        return [_join_words([self.vocabulary[t] for t in row if t >= len(self.SPECIALS)]) for row in rows]

    def save(self, directory: Path) -> None:
        (directory / WORD_TOKENIZER_FILE).write_text(self._content())

    def fingerprint(self) -> str:
        return hashlib.sha256(self._content().encode()).hexdigest()

    def _content(self) -> str:
        return json.dumps({"vocabulary": self.vocabulary, "max_length": self.max_length})

    @classmethod
    def load(cls, directory: Path) -> WordTokenizer:
        content = json.loads((directory / WORD_TOKENIZER_FILE).read_text())
        return cls(content["vocabulary"], int(content["max_length"]))


def _join_words(words: list[str]) -> str:
    """Words and punctuation back into text: no space before punctuation."""
    text = ""
    for word in words:
        text += (" " if text and word[0].isalnum() else "") + word
    return text


class HuggingFaceTokenizer:
    """A Hugging Face fast tokenizer padded/truncated to `max_length`; BOS/EOS are its CLS/SEP (or BOS/EOS).
    A tokenizer with an end token but no start token (SigLIP's) starts decoded sequences with its padding,
    as T5 does."""

    kind = "huggingface"

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = int(tokenizer.pad_token_id or 0)
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        if eos is None:
            raise ValueError("the Hugging Face tokenizer has neither an EOS nor a SEP token")
        self.bos_id, self.eos_id = int(bos if bos is not None else self.pad_id), int(eos)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode(self, texts: Sequence[str]) -> TokenBatch:
        """Special tokens added by the tokenizer; a text too long keeps its first tokens and ends with EOS."""
        rows = self.tokenizer(list(texts), truncation=False, add_special_tokens=True, verbose=False)["input_ids"]
        kept = [row if len(row) <= self.max_length else [*row[: self.max_length - 1], self.eos_id] for row in rows]
        padded = [row + [self.pad_id] * (self.max_length - len(row)) for row in kept]
        ids = torch.tensor(padded, dtype=torch.long).reshape(len(rows), self.max_length)  # (B, L)
        mask = torch.arange(self.max_length) < torch.tensor([len(row) for row in kept])[:, None]  # (B, L)
        truncated = torch.tensor([len(row) > self.max_length for row in rows], dtype=torch.bool)  # (B,)
        return TokenBatch(ids=ids, mask=mask, truncated=truncated)

    def decode(self, ids: torch.Tensor) -> list[str]:
        rows = [row[: row.index(self.eos_id, 1)] if self.eos_id in row[1:] else row for row in ids.tolist()]
        return [str(self.tokenizer.decode(row, skip_special_tokens=True)).strip() for row in rows]

    def save(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(directory / HF_TOKENIZER_DIR)
        (directory / HF_TOKENIZER_DIR / MAX_LENGTH_FILE).write_text(json.dumps({"max_length": self.max_length}))

    def fingerprint(self) -> str:
        vocabulary = json.dumps(sorted(self.tokenizer.get_vocab().items()))
        return hashlib.sha256(f"{vocabulary}|{self.max_length}".encode()).hexdigest()


Tokenizer = WordTokenizer | HuggingFaceTokenizer
