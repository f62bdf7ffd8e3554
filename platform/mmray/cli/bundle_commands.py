"""`mmray export` (a model bundle that stands alone) and `mmray wise-ft` (a weight-space ensemble)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mmray.cli.jobs import DEVICE


def export(
    bundle: Annotated[str, typer.Argument(help="model bundle or training run directory (its best), or s3:// prefix")],
    out: Annotated[str, typer.Argument(help="new directory or s3:// prefix to write the bundle to")],
) -> None:
    """Copy a model bundle to OUT so that it loads on its own anywhere: a checkpoint of a run with
    frozen towers references the run's frozen/ weights, which the copy holds beside it. The last line
    is JSON.

    Example: mmray export runs/coco-mini-clip exported/coco-mini-clip
    """
    from mmray.artifacts.model_bundle import export_bundle

    typer.echo(json.dumps(export_bundle(bundle, out)))


def wise_ft(
    fine_tuned: Annotated[str, typer.Argument(help="fine-tuned model bundle or training run directory (its best)")],
    out: Annotated[str, typer.Argument(help="new directory or s3:// prefix to write the ensemble's bundle to")],
    alphas: Annotated[
        str | None,
        typer.Option(
            "--alpha",
            help="α, or several comma-separated to choose from on the job's data "
            "[default: 0, 0.1, ..., 1 with --job, else 0.5]",
        ),
    ] = None,
    zero_shot: Annotated[
        str | None,
        typer.Option(help="the zero-shot model's bundle [default: rebuilt from the pretrained weights it names]"),
    ] = None,
    job: Annotated[
        str | None, typer.Option(help="a job whose data section measures each α (train, index or evaluate job)")
    ] = None,
    split: Annotated[str, typer.Option(help="the split of the job's data that chooses α")] = "val",
    batch_size: Annotated[int, typer.Option(help="rows per batch when measuring")] = 512,
    device: DEVICE = "auto",
) -> None:
    """Weight-space ensemble of a zero-shot and a fine-tuned model (WiSE-FT): θ = (1 − α)·θ₀ + α·θ₁,
    written as a bundle of its own. With --job, each α is measured on the job's data and the best by the
    task's score (e.g. recall_mean) is kept. The last line is JSON.

    Example: mmray wise-ft runs/coco-clip-finetune runs/coco-clip-finetune-wise --job jobs/coco-clip-finetune.yaml
    """
    from mmray.config import ConfigError, PipelineJob, TuneJob, load_job
    from mmray.tasks.wise_ft import wise_ft as ensemble

    if alphas is None:
        values = [step / 10 for step in range(11)] if job is not None else [0.5]
    else:
        try:
            values = [float(text) for text in alphas.split(",") if text.strip()]
        except ValueError:
            raise ConfigError(f"--alpha takes numbers in [0, 1] separated by commas, got {alphas!r}") from None
    data = None
    if job is not None:
        spec = load_job(job, [])
        if isinstance(spec, TuneJob | PipelineJob):
            raise ConfigError(f"{job} is a {spec.kind} job; give a train job")
        data = spec.data
    typer.echo(json.dumps(ensemble(fine_tuned, out, values, zero_shot, data, split, batch_size, device)))
