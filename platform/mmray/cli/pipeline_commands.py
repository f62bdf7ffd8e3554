"""`mmray pipeline` and `mmray models list | show | promote | rollback`."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from mmray.cli.jobs import JOB, OVERRIDES, disconnect_ray, load_job_of_kind
from mmray.config import PipelineJob
from mmray.errors import how_stopped

app = typer.Typer(help="The model registry: every evaluated (model, index) pair and which one is served.",
                  no_args_is_help=True)  # fmt: skip
ROOT = Annotated[str, typer.Option("--storage-root", help="the storage root holding registry/ (local or s3://)")]
SERVE = Annotated[str | None, typer.Option("--serve", help="URL of the running app to hot-reload")]
KEY = Annotated[str | None, typer.Option("--key", help="admin key of that app [default: $MMRAY_ADMIN_KEY]")]


def pipeline(job: JOB, overrides: OVERRIDES = None) -> None:
    """Run a pipeline job: tune (optional) → train → index → evaluate on held-out data next to the served
    model → promote only past the gate. Stages done before for the same inputs are skipped, so a rerun
    continues where one stopped. The last line is JSON: the candidate's registry entry, both scores, whether
    it was promoted and why.

    Example: mmray pipeline jobs/shapes-pipeline.yaml
    """
    spec = load_job_of_kind(job, overrides, PipelineJob, "pipeline")
    from mmray.pipeline.run import run_pipeline

    try:
        outcome = run_pipeline(spec, Path(job).resolve().parent)
    except KeyboardInterrupt as stop:
        how, code = how_stopped(stop)
        disconnect_ray()
        command = shlex.join(["mmray", "pipeline", job, *(overrides or [])])
        typer.echo(f"{how}: pipeline {spec.name}: the stages it finished are recorded; `{command}` continues it",
                   err=True)  # fmt: skip
        raise typer.Exit(code) from None
    disconnect_ray()
    typer.echo(json.dumps(outcome.summary()))


@app.command("list")
def list_models(storage_root: ROOT = "runs") -> None:
    """Every entry of the registry, the served one marked; the last line is JSON.

    Example: mmray models list --storage-root runs
    """
    from mmray.pipeline.registry import ModelRegistry

    registry = ModelRegistry(storage_root)
    current = registry.current()
    entries = registry.read().entries
    for entry in entries:
        mark = "*" if current is not None and entry.id == current.id else " "
        gate = "passed" if entry.passed_gate else "refused"
        metric = entry.metrics.get("metric", "score")
        typer.echo(f"{mark} {entry.id:>3}  {entry.model_version}  {entry.index_version or '-':<16}  "
                   f"{metric} {float(entry.metrics.get('candidate', float('nan'))):.4f}  gate {gate:<7}  "
                   f"{entry.created_at}  {entry.job}")  # fmt: skip
    typer.echo(json.dumps({"served": current.id if current else None, "entries": len(entries)}))


@app.command("show")
def show(entry: Annotated[int, typer.Argument(help="entry number")], storage_root: ROOT = "runs") -> None:
    """One entry of the registry as JSON: bundles, versions, scores, the job that made it, when.

    Example: mmray models show 2 --storage-root runs
    """
    from mmray.pipeline.registry import ModelRegistry

    registry = ModelRegistry(storage_root)
    found = registry.entry(entry)
    current = registry.current()
    typer.echo(json.dumps({**asdict(found), "served": current is not None and current.id == found.id}, indent=2))


def _serve(storage_root: str, entry_id: int, action: str, serve: str | None, key: str | None) -> None:
    from mmray.pipeline.registry import ModelRegistry
    from mmray.serving.client import ApiClient

    registry = ModelRegistry(storage_root)
    entry = registry.entry(entry_id)
    if serve is not None:
        body = {
            "models": {"retrieval": entry.model_bundle},
            **({"index": entry.index_bundle} if entry.index_bundle else {}),
        }
        ApiClient(serve, key or os.environ.get("MMRAY_ADMIN_KEY"), timeout_s=900).post("/v1/admin/reload", body)
    registry.record(entry.id, action, f"mmray models {action}")
    typer.echo(json.dumps({"served": entry.id, "model_version": entry.model_version, "action": action,
                           "reloaded": serve}))  # fmt: skip


@app.command("promote")
def promote(
    entry: Annotated[int, typer.Argument(help="entry number")],
    storage_root: ROOT = "runs",
    serve: SERVE = None,
    key: KEY = None,
) -> None:
    """Serve an entry (whatever its gate said): the app at --serve hot-reloads it first (staged, checked,
    committed; on failure nothing changes), then the registry records it.

    Example: mmray models promote 3 --serve http://127.0.0.1:8000
    """
    _serve(storage_root, entry, "promote", serve, key)


@app.command("rollback")
def rollback(storage_root: ROOT = "runs", serve: SERVE = None, key: KEY = None) -> None:
    """Serve again the entry promoted before the current one (the app at --serve hot-reloads it first).

    Example: mmray models rollback --serve http://127.0.0.1:8000
    """
    from mmray.pipeline.registry import ModelRegistry

    _serve(storage_root, ModelRegistry(storage_root).previous().id, "rollback", serve, key)
