"""WiSE-FT: the weight-space ensemble of a zero-shot and a fine-tuned model, α chosen on a validation split
by the task's own score, written as a bundle of its own (`mmray wise-ft`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmray.artifacts.model_bundle import check_new_target, open_bundle
from mmray.artifacts.weight_ensembling import ensembled_model, write_ensemble, zero_shot_model
from mmray.config.data import DataConfig
from mmray.devices import pick_device
from mmray.errors import BundleError, ConfigError
from mmray.progress import track
from mmray.tasks.base import EvalContext
from mmray.tasks.evaluation import load_split_tensors
from mmray.tasks.registry import task_class


def wise_ft(
    fine_tuned_uri: str,
    target: str,
    alphas: Sequence[float],
    zero_shot_uri: str | None = None,
    data: DataConfig | None = None,
    split: str = "val",
    batch_size: int = 512,
    device: str = "auto",
) -> dict[str, Any]:
    """θ = (1 − α)·θ₀ + α·θ₁ of the zero-shot model (`zero_shot_uri`, else rebuilt from its pretrained weights)
    and the fine-tuned bundle, written to `target`. With `data`, every α is measured on `split` and the best by
    the task's score is kept; without, `alphas` must hold one."""
    if not alphas:
        raise ConfigError("give at least one alpha in [0, 1]")
    if len(alphas) > 1 and data is None:
        raise ConfigError(f"choosing among {len(alphas)} alphas needs data to measure them on (a job)")
    check_new_target(target)
    fine_tuned = open_bundle(fine_tuned_uri)
    start = zero_shot_model(fine_tuned, zero_shot_uri)
    candidates: list[dict[str, Any]] = []
    chosen, metrics = alphas[0], None
    if data is not None:
        if fine_tuned.task_config is None:
            raise BundleError(f"{fine_tuned.uri} records no task, so mmray cannot tell which score chooses alpha")
        task = task_class(fine_tuned.task_config.kind)(
            fine_tuned.task_config, fine_tuned.model_config, fine_tuned.processor
        )
        tensors = load_split_tensors(data, split, fine_tuned, task)
        where = pick_device(device)
        context = EvalContext(0, 1, where, batch_size, fine_tuned.processor)
        score = task.score
        measured = [
            (alpha, task.evaluate(ensembled_model(start, fine_tuned, alpha).to(where), tensors, context))
            for alpha in track(alphas, "alphas")
        ]
        candidates = [{"alpha": alpha, score.metric: values[score.metric]} for alpha, values in measured]
        chosen, metrics = (max if score.mode == "max" else min)(measured, key=lambda pair: pair[1][score.metric])
    model = ensembled_model(start, fine_tuned, chosen)
    record = {"alpha": chosen, "zero_shot": zero_shot_uri or "pretrained", "fine_tuned": fine_tuned.uri}
    version = write_ensemble(model, fine_tuned, target, {**record, "candidates": candidates}, metrics)
    return {"model_bundle": target, "model_version": version, **record, "split": split, "candidates": candidates}
