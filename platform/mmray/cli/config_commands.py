"""`mmray config ...`: check and print job specs."""

from __future__ import annotations

from typing import Annotated

import typer

from mmray.cli.jobs import JOB, OVERRIDES
from mmray.config import ConfigError, load_job, to_yaml

app = typer.Typer(help="Validate job specs and print them resolved.", no_args_is_help=True)


@app.command("show")
def show(job: JOB, overrides: OVERRIDES = None) -> None:
    """Validate a job spec with overrides and print the exact config it resolves to.

    Example: mmray config show jobs/shapes-clip.yaml model.image.kind=torchvision model.image.name=resnet18
    """
    typer.echo(to_yaml(load_job(job, overrides or [])), nl=False)


@app.command("schema")
def schema(
    kind: Annotated[str | None, typer.Argument(help="a job kind (train, index, evaluate, tune) [default: all]")] = None,
) -> None:
    """Print the reference of a job kind's keys (every section it uses: types, defaults, descriptions) as
    Markdown; docs/CONFIG.md is this output for every kind.

    Example: mmray config schema train
    """
    from mmray.config.jobs import JOB_CLASSES
    from mmray.config.reference import reference_markdown

    if kind is not None and kind not in JOB_CLASSES:
        raise ConfigError(f"mmray config schema: unknown job kind {kind!r}; job kinds: {', '.join(JOB_CLASSES)}")
    jobs = [JOB_CLASSES[kind]] if kind else list(JOB_CLASSES.values())
    typer.echo(reference_markdown(jobs), nl=False)
