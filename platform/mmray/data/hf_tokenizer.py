"""Loading Hugging Face tokenizers from a folder, an s3:// prefix or a hub name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from mmray.data.tokenizers import MAX_LENGTH_FILE, HuggingFaceTokenizer
from mmray.pretrained import local_model_dir


def load_hf_tokenizer(location: str, max_length: int | None = None) -> HuggingFaceTokenizer:
    """An `AutoTokenizer` wrapped to mmray's interface; `max_length` defaults to the one saved with it."""
    folder = local_model_dir(location)
    tokenizer: Any = AutoTokenizer.from_pretrained(folder)
    if max_length is None:
        saved = Path(folder) / MAX_LENGTH_FILE
        if not saved.is_file():
            raise ValueError(f"{location}: no max_length given and none saved with the tokenizer")
        max_length = int(json.loads(saved.read_text())["max_length"])
    return HuggingFaceTokenizer(tokenizer, max_length)
