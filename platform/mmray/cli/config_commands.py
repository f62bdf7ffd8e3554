"""`mmray config ...`: check and print job specs."""

from __future__ import annotations

from typing import Annotated

import typer

from mmray.config import load_job, to_yaml

app = typer.Typer(help="Validate job specs and print them resolved.", no_args_is_help=True)


@app.command("show")
def show(
    job: Annotated[str, typer.Argument(help="job spec YAML, e.g. jobs/shapes-clip.yaml")],
    overrides: Annotated[list[str] | None, typer.Argument(help="section.key=value overrides")] = None,
) -> None:
    """Validate a job spec with overrides and print the exact config it resolves to.

    Example: mmray config show jobs/shapes-clip.yaml model.image.kind=torchvision model.image.name=resnet18
    """
    typer.echo(to_yaml(load_job(job, overrides or [])), nl=False)
