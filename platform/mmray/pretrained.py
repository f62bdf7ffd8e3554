"""Where pretrained files come from: a folder, an installed package (`pkg:`), an s3:// prefix, or a hub name."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from pydantic import BaseModel

from mmray import storage
from mmray.errors import WeightsError

CACHE_DIR = Path(os.environ.get("MMRAY_CACHE", Path.home() / ".cache" / "mmray"))


PACKAGE_SCHEME = "pkg:"


def package_path(location: str) -> str:
    """`pkg:<module>/<path>`: the file or folder <path> inside the installed Python package <module>
    (offline weights shipped as packages); any other location is returned unchanged."""
    if not location.startswith(PACKAGE_SCHEME):
        return location
    module, _, relative = location.removeprefix(PACKAGE_SCHEME).partition("/")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"{location}: no installed package named {module!r}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise WeightsError(f"{location}: {path} does not exist in the installed package")
    return str(path)


def local_model_dir(location: str) -> str:
    """A local folder (or hub name) for `location`: itself, a `pkg:` folder, or a cached copy of an s3:// prefix."""
    location = package_path(location)
    if not storage.is_s3(location):
        return location
    target = CACHE_DIR / "hf" / hashlib.sha256(location.encode()).hexdigest()[:16]
    if not (target / "config.json").is_file() and not (target / "tokenizer_config.json").is_file():
        storage.download_dir(location, target)
    return str(target)


PRETRAINED_FIELDS = ("weights", "pretrained", "tokenizer")


def _looks_like_a_path(location: str) -> bool:
    """A hub name ("org/model") cannot be told from a relative folder; only paths that say so are checked."""
    return location.startswith(("/", "./", "../", "~", PACKAGE_SCHEME)) or storage.is_s3(location)


def check_pretrained_files(section: BaseModel, where: str = "model") -> None:
    """Every weights file or pretrained folder a model config names must exist: checked on the driver,
    before any worker starts, naming the key (`torchvision:<ENUM>` names and hub names are not files)."""
    for name in type(section).model_fields:
        value = getattr(section, name)
        key = f"{where}.{name}"
        if isinstance(value, BaseModel):
            check_pretrained_files(value, key)
        elif (
            name in PRETRAINED_FIELDS
            and isinstance(value, str)
            and not value.startswith("torchvision:")
            and (name == "weights" or _looks_like_a_path(value))
        ):
            resolved = package_path(os.path.expanduser(value))  # a missing package file is refused here already
            if not storage.exists(resolved):  # on S3 also a prefix holding objects (a folder)
                raise WeightsError(f"{key}: {value} does not exist (weights are read from local paths, pkg: or s3://)")
