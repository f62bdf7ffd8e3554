"""`mmray export`: a model bundle copied to stand alone, its run's frozen weights put beside it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from mmray import storage
from mmray.artifacts.frozen_weights import MANIFEST_KEY, copy_beside
from mmray.artifacts.model_bundle import MANIFEST, local_bundle, read_bundle, read_manifest, resolve_model_bundle
from mmray.errors import BundleError


def publish_directory(staged: Path, target: str) -> None:
    """Put the local directory `staged` at `target` whole: renamed into place, or uploaded to S3."""
    if storage.is_s3(target):
        storage.upload_dir(staged, target)
        return
    destination = Path(target)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.mmray-tmp-export")
    shutil.rmtree(temporary, ignore_errors=True)
    shutil.copytree(staged, temporary)
    temporary.rename(destination)


def export_bundle(source: str, target: str) -> dict[str, Any]:
    """Copy the bundle at `source` (or a run's best) to `target` with everything it needs to load
    on its own; checked by loading the copy before it is published."""
    if storage.exists(storage.join(target, MANIFEST)) or (not storage.is_s3(target) and Path(target).exists()):
        raise BundleError(f"{target} already exists; export into a new directory or prefix")
    resolved = resolve_model_bundle(source)
    with local_bundle(resolved) as directory, tempfile.TemporaryDirectory(prefix="mmray-export-") as tmp:
        staged = Path(tmp) / "bundle"
        shutil.copytree(directory, staged)
        reference = read_manifest(directory).get(MANIFEST_KEY)
        if reference is not None:
            copy_beside(directory, staged, reference)
        version = read_bundle(staged).version
        size = sum(path.stat().st_size for path in staged.rglob("*") if path.is_file())
        publish_directory(staged, target)
    return {"bundle": target, "source": resolved, "model_version": version, "bytes": size}
