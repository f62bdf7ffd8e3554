"""`mmray export`: a model bundle that stands alone."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def export(
    bundle: Annotated[str, typer.Argument(help="model bundle or training run directory (its best), or s3:// prefix")],
    out: Annotated[str, typer.Argument(help="new directory or s3:// prefix to write the bundle to")],
) -> None:
    """Copy a model bundle to OUT so that it loads on its own anywhere: a checkpoint of a run with
    frozen towers references the run's frozen/ weights, which the copy holds beside it. The last line
    is JSON.

    Example: mmray export runs/coco-mini-clip exported/coco-mini-clip
    """
    from mmray.artifacts.bundle_export import export_bundle

    typer.echo(json.dumps(export_bundle(bundle, out)))
