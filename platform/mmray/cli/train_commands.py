"""`mmray train` and `mmray evaluate`."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mmray.cli.jobs import DEVICE, JOB, OVERRIDES, disconnect_ray, load_job_of_kind
from mmray.config import ConfigError, EvaluateJob, IndexJob, PipelineJob, TrainJob, TuneJob, load_job
from mmray.config.base import validate
from mmray.errors import how_stopped

if TYPE_CHECKING:
    from mmray.train.driver import TrainOutcome
    from mmray.train.run_record import Rerun


def train(
    job: JOB,
    overrides: OVERRIDES = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue a run of this name even though its settings differ")
    ] = False,
    force_new: Annotated[
        bool, typer.Option("--force-new", help="move a run of this name aside and start afresh")
    ] = False,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="train in this one process without Ray (one worker; its GPU with train.use_gpu): to debug a job, "
            "or for small data where Ray's start-up would dominate",
        ),
    ] = False,
) -> None:
    """Train the job's model for its task on Ray Train; the last line printed is the final metrics as JSON.
    Re-running a name resumes its run (more epochs: raise train.epochs); other settings are refused unless
    --resume or --force-new. Ctrl-C stops it, saying which epoch is checkpointed.

    Example: mmray train jobs/shapes-clip.yaml train.epochs=4
    """
    if resume and force_new:
        raise ConfigError("--resume and --force-new exclude each other")
    spec = load_job_of_kind(job, overrides, TrainJob, "train")
    from mmray.train.run_record import finished_summary, latest_checkpointed_epoch, run_directory

    rerun: Rerun = "resume" if resume else "new" if force_new else "check"
    finished = None if force_new else finished_summary(spec)  # before any data, model or Ray is touched
    if finished is not None:
        typer.echo(
            f"run {spec.name} is finished: {finished['epoch']} epochs trained, train.epochs={spec.train.epochs}; "
            f"its outputs are in {run_directory(spec)} (raise train.epochs to train it longer, or --force-new)",
            err=True,
        )
        typer.echo(json.dumps(finished))
        return
    try:
        outcome = _train_local(spec, rerun) if local else _train_on_ray(spec, rerun)
    except KeyboardInterrupt as stop:
        how, code = how_stopped(stop)
        disconnect_ray()  # Ray's late log lines before the final word; the run registers nothing after this
        epoch = latest_checkpointed_epoch(run_directory(spec))
        saved = f"epoch {epoch} is checkpointed" if epoch else "no epoch was checkpointed yet"
        command = shlex.join(["mmray", "train", job, *(overrides or []), *(["--local"] if local else [])])
        typer.echo(f"{how}: run {spec.name}: {saved}; `{command}` resumes it", err=True)
        raise typer.Exit(code) from None
    disconnect_ray()
    typer.echo(json.dumps(outcome.summary()))


def _train_local(spec: TrainJob, rerun: Rerun) -> TrainOutcome:
    from mmray.train.local_run import run_local

    return run_local(spec, rerun)


def _train_on_ray(spec: TrainJob, rerun: Rerun) -> TrainOutcome:
    from mmray.train.live import draw_until_done, wants_bar
    from mmray.train.trainer import finish_run, fit_in_background, start_run

    prepared = start_run(spec, rerun=rerun, live=wants_bar())  # Ray starts in this (main) thread
    board = prepared.board
    draw = (lambda thread: draw_until_done(board, thread)) if board is not None else None
    return finish_run(prepared, fit_in_background(prepared, draw))


def _evaluation_of(
    spec: TrainJob | IndexJob | EvaluateJob | TuneJob | PipelineJob, checkpoint: str | None, source: str
) -> EvaluateJob:
    """An evaluate job from any job: a train job's best model, an index job's index bundle, or as given."""
    from mmray import storage

    if isinstance(spec, TuneJob):
        raise ConfigError(
            f"{spec.name} is a 'tune' job; evaluate its best trial with the job it exports "
            f"({spec.storage_root}/{spec.name}/best_job.yaml)"
        )
    if isinstance(spec, PipelineJob):
        raise ConfigError(f"{spec.name} is a 'pipeline' job; `mmray models list --storage-root "
                          f"{spec.storage_root}` shows what it evaluated")  # fmt: skip
    if isinstance(spec, EvaluateJob):
        return spec if checkpoint is None else spec.model_copy(update={"checkpoint": checkpoint})
    job: dict[str, Any] = {"kind": "evaluate", "name": spec.name, "data": spec.data.model_dump()}
    if isinstance(spec, TrainJob):
        job["checkpoint"] = checkpoint or storage.join(spec.storage_root, spec.name)
    else:
        job["checkpoint"] = checkpoint or storage.join(spec.storage_root, spec.name, "index")
        job["evaluate"] = {"split": spec.index.split, "batch_size": spec.index.batch_size}
    return validate(EvaluateJob, job, f"{source} (evaluated)")


def evaluate(
    job: JOB,
    overrides: OVERRIDES = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(help="model bundle, training run or index bundle [default: the job's own output]"),
    ] = None,
    device: DEVICE = "auto",
    zero_shot: Annotated[
        bool,
        typer.Option(
            "--zero-shot",
            help="evaluate the model a train job starts from, untrained (a pretrained CLIP / SigLIP's zero-shot "
            "figures) on its val split",
        ),
    ] = False,
) -> None:
    """Evaluate a model bundle (its task's metrics) or an index bundle (Recall@K through its indexes)
    on the job's data. JOB is an evaluate job, or a train / index job whose output is evaluated.
    The last line is JSON.

    Example: mmray evaluate jobs/shapes-clip.yaml --checkpoint runs/shapes-clip/checkpoint_epoch_0008
    """
    from mmray import storage
    from mmray.artifacts.manifests import INDEX_MANIFEST
    from mmray.retrieval.evaluate import evaluate_index_bundle
    from mmray.tasks.evaluation import evaluate_bundle, evaluate_starting_model

    loaded = load_job(job, overrides or [])
    if zero_shot:
        if not isinstance(loaded, TrainJob) or checkpoint is not None:
            raise ConfigError(
                "--zero-shot evaluates the model a train job starts from: give a train job, no --checkpoint"
            )
        typer.echo(json.dumps(evaluate_starting_model(loaded, device=device)))
        return
    spec = _evaluation_of(loaded, checkpoint, job)
    settings = spec.evaluate
    if storage.exists(storage.join(spec.checkpoint, INDEX_MANIFEST)):
        metrics = evaluate_index_bundle(
            spec.data, spec.checkpoint, settings.nprobe, settings.ef_search, settings.batch_size, device
        )
    else:
        metrics = evaluate_bundle(
            spec.data, spec.checkpoint, settings.split, settings.batch_size, settings.figures, device
        )
    disconnect_ray()
    typer.echo(json.dumps(metrics))
