"""Reading state dicts from local files or s3:// and loading them with clear mismatch errors."""

from __future__ import annotations

import io
from collections.abc import Mapping

import torch
from torch import nn

from mmray import storage
from mmray.errors import StorageNotFoundError, WeightsError
from mmray.pretrained import package_path


def read_state_dict(uri: str) -> dict[str, torch.Tensor]:
    """Load a state dict (a plain dict or one under `state_dict`/`model`) from a path, `pkg:` path or s3:// URI."""
    uri = package_path(uri)
    try:
        raw = storage.read_bytes(uri)
    except StorageNotFoundError as exc:
        raise WeightsError(f"weight file {uri} does not exist") from exc
    try:
        loaded = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{uri}: not a PyTorch state dict ({exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{uri}: expected a mapping of parameter names to tensors")
    return dict(loaded)


def _listing(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … {len(items) - limit} more" if len(items) > limit else "")


def fit_problems(
    expected: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    ignore_prefixes: tuple[str, ...] = (),
    allow_missing: bool = False,
) -> list[str]:
    """How `state` does not fit a model whose state dict is `expected` (its tensors may be on the meta
    device): missing (unless `allow_missing`), unexpected and mis-shaped keys."""
    wanted = {k for k in expected if not k.startswith(ignore_prefixes)}
    given = {k for k in state if not k.startswith(ignore_prefixes)}
    missing = [] if allow_missing else sorted(wanted - given)
    unexpected = sorted(given - wanted)
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(wanted & given)
        if state[k].shape != expected[k].shape
    ]
    found = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
    return [f"{what}: {_listing(keys)}" for what, keys in found if keys]


def load_state_dict_strictly(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Load `state` into `model`; any missing, unexpected or mis-shaped key raises WeightsError."""
    problems = fit_problems(model.state_dict(), state, ignore_prefixes)
    if problems:
        raise WeightsError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}, strict=False)


def grow_token_embeddings(
    state: Mapping[str, torch.Tensor], model: nn.Module, suffix: str = "embed.weight"
) -> dict[str, torch.Tensor]:
    """`state` with each token-embedding table (keys ending in `suffix`) that has fewer rows than the
    model's extended by the model's own (freshly initialised) rows, for a vocabulary grown on warm start."""
    current = model.state_dict()
    grown = dict(state)
    for key, table in state.items():
        mine = current.get(key)
        if (
            key.endswith(suffix)
            and mine is not None
            and mine.shape[1:] == table.shape[1:]
            and mine.shape[0] > table.shape[0]
        ):
            grown[key] = torch.cat([table, mine[table.shape[0] :].to(table.dtype)])
    return grown
