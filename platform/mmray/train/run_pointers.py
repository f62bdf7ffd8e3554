"""A run's best and latest model pointers (`best_model.json`, `latest_model.json`). They are rewritten
after every registered checkpoint, not only at the end: a resumed or extended run prunes the checkpoints its
last outputs named, and pointers that outlived them would leave a stopped run unusable until it finished.
Free of Ray (`mmray train --local`, the GPU check) and of torch: Ray Train's controller imports it through
`pointer_callback.py`."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Sequence

from mmray import storage
from mmray.artifacts.manifests import BEST_MODEL, LATEST_MODEL, MANIFEST
from mmray.errors import BundleError, MmrayError, StorageError, json_object, reading
from mmray.train.checkpoint_score import CHECKPOINT_SCORE, is_measured

logger = logging.getLogger(__name__)
_CHECKPOINT_MANIFEST = re.compile(r"[/\\](checkpoint_epoch_\d+)[/\\]" + re.escape(MANIFEST) + "$")

Candidate = tuple[str, float | None]
"""A kept checkpoint's URI and its score (None, NaN or Ray's unmeasured worst where the epoch was not evaluated)."""


def best_checkpoint(candidates: Sequence[Candidate], latest: str, mode: str) -> str:
    """The kept checkpoint with the best measured score; `latest` when none was measured."""
    measured = [(uri, score) for uri, score in candidates if score is not None and is_measured(score)]
    if not measured:
        return latest
    pick = max if mode == "max" else min
    return pick(measured, key=lambda item: item[1])[0]


def write_pointers(run_dir: str, latest: str, best: str) -> None:
    """Each pointer names its checkpoint by URI and, for a checkpoint inside the run, by its place there, which
    readers prefer (`run_pointer`): a run moved aside or copied elsewhere points at its own checkpoints."""
    for name, uri in ((LATEST_MODEL, latest), (BEST_MODEL, best)):
        pointer: dict[str, str] = {"model_bundle": uri}
        with contextlib.suppress(StorageError, ValueError):
            pointer["in_run"] = storage.relative_to(uri, run_dir)
        storage.write_text(storage.join(run_dir, name), json.dumps(pointer))


def kept_checkpoints(run_dir: str) -> list[Candidate]:
    """The run's complete checkpoints (their manifest written), oldest first, with their epochs' scores."""
    found = sorted(
        (match.group(1), uri[: match.end(1)])
        for uri in storage.list_files(run_dir)
        if (match := _CHECKPOINT_MANIFEST.search(uri))
    )
    kept: list[Candidate] = []
    for _, uri in found:
        manifest = storage.join(uri, MANIFEST)
        with reading(manifest, BundleError):
            score = json_object(storage.read_text(manifest)).get("metrics", {}).get(CHECKPOINT_SCORE)
        kept.append((uri, float(score) if isinstance(score, int | float) else None))
    return kept


def point_at_kept(run_dir: str, mode: str) -> None:
    """Rewrite the run's pointers from the checkpoints it keeps now (a warning, not a failure, when storage
    refuses: the run's outputs rewrite them at its end)."""
    try:
        kept = kept_checkpoints(run_dir)
        if kept:
            write_pointers(run_dir, kept[-1][0], best_checkpoint(kept, kept[-1][0], mode))
    except MmrayError as exc:
        logger.warning("could not update the model pointers of %s: %s", run_dir, exc)
