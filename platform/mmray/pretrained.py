"""Where pretrained files come from: a local folder, a cached download of an s3:// prefix, or a hub name."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mmray import storage

CACHE_DIR = Path(os.environ.get("MMRAY_CACHE", Path.home() / ".cache" / "mmray"))


def local_model_dir(location: str) -> str:
    """A local folder for `location`: itself, a cached download of an s3:// prefix, or a hub name."""
    if not storage.is_s3(location):
        return location
    target = CACHE_DIR / "hf" / hashlib.sha256(location.encode()).hexdigest()[:16]
    if not (target / "config.json").is_file() and not (target / "tokenizer_config.json").is_file():
        storage.download_dir(location, target)
    return str(target)
