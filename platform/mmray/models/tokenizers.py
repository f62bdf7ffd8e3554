"""Tokenizers with one interface: a word-level tokenizer for the small towers, and Hugging Face's."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

WORD_TOKENIZER_FILE = "word_tokenizer.json"
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


@dataclass
class TokenBatch:
    ids: torch.Tensor  # (B, L) int64
    mask: torch.Tensor  # (B, L) bool, True where a token is real


class Tokenizer(Protocol):
    max_length: int

    def encode(self, texts: Sequence[str]) -> TokenBatch: ...

    def save(self, directory: Path) -> None: ...


class WordTokenizer:
    """Lower-cased words and punctuation; a vocabulary built from training captions; [CLS] first."""

    SPECIALS = ("[PAD]", "[UNK]", "[CLS]")
    PAD, UNK, CLS = 0, 1, 2

    def __init__(self, vocabulary: Sequence[str], max_length: int) -> None:
        if tuple(vocabulary[:3]) != self.SPECIALS:
            raise ValueError(f"vocabulary must start with {self.SPECIALS}")
        self.vocabulary = list(vocabulary)
        self.index = {word: i for i, word in enumerate(self.vocabulary)}
        self.max_length = max_length

    @classmethod
    def build(cls, texts: Iterable[str], max_length: int, min_count: int = 1) -> WordTokenizer:
        counts = Counter(word for text in texts for word in _WORD.findall(text.lower()))
        words = sorted(w for w, n in counts.items() if n >= min_count)
        return cls([*cls.SPECIALS, *words], max_length)

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def encode(self, texts: Sequence[str]) -> TokenBatch:
        ids = torch.full((len(texts), self.max_length), self.PAD, dtype=torch.long)  # (B, L)
        for row, text in enumerate(texts):
            tokens = [self.CLS] + [self.index.get(w, self.UNK) for w in _WORD.findall(text.lower())]
            tokens = tokens[: self.max_length]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return TokenBatch(ids=ids, mask=ids != self.PAD)

    def save(self, directory: Path) -> None:
        content = {"vocabulary": self.vocabulary, "max_length": self.max_length}
        (directory / WORD_TOKENIZER_FILE).write_text(json.dumps(content))

    @classmethod
    def load(cls, directory: Path) -> WordTokenizer:
        content = json.loads((directory / WORD_TOKENIZER_FILE).read_text())
        return cls(content["vocabulary"], int(content["max_length"]))


class HuggingFaceTokenizer:
    """A Hugging Face fast tokenizer padded/truncated to `max_length`."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode(self, texts: Sequence[str]) -> TokenBatch:
        encoded = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return TokenBatch(ids=encoded["input_ids"], mask=encoded["attention_mask"].bool())

    def save(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(directory / "hf_tokenizer")
