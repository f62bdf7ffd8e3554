"""`mmray train` and `mmray evaluate`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mmray.config import load_job

JOB = Annotated[str, typer.Argument(help="job spec YAML, e.g. jobs/shapes-clip.yaml")]
OVERRIDES = Annotated[list[str] | None, typer.Argument(help="section.key=value overrides")]


def train(job: JOB, overrides: OVERRIDES = None) -> None:
    """Train a dual encoder on Ray Train; the last line printed is the final metrics as JSON."""
    from mmray.train.trainer import run_training

    spec = load_job(job, overrides or [])
    outcome = run_training(spec)
    typer.echo(json.dumps(outcome.summary()))


def evaluate(job: JOB, overrides: OVERRIDES = None) -> None:
    """Evaluate `checkpoint=BUNDLE` on the job's validation split: a model bundle (or training run)
    by exact search, an index bundle through its indexes. The last line is JSON."""
    from mmray import storage
    from mmray.evaluate import evaluate_bundle
    from mmray.index_bundle import MANIFEST
    from mmray.retrieval_eval import evaluate_index_bundle

    spec = load_job(job, overrides or [])
    if not spec.checkpoint:
        raise typer.BadParameter("name the model or index bundle to evaluate: checkpoint=PATH_OR_URI")
    if storage.exists(storage.join(spec.checkpoint, MANIFEST)):
        typer.echo(json.dumps(evaluate_index_bundle(spec, spec.checkpoint)))
        return
    typer.echo(json.dumps(evaluate_bundle(spec, spec.checkpoint)))
