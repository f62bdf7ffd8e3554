"""The `mmray` command and its error handling."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console
from rich.logging import RichHandler

from mmray.cli import (
    bundle_commands,
    cluster_commands,
    config_commands,
    data_commands,
    generation_commands,
    index_commands,
    pipeline_commands,
    serve_commands,
    train_commands,
    tune_commands,
)
from mmray.errors import MmrayError, TrainingError, how_stopped

_typed_display = typer.core.TyperOption.display_type_rich


def _flags_without_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """Help shows an option's value type (`<int>`); a flag takes no value, so it shows none."""
    return None if self.is_flag else _typed_display(self, ctx)


typer.core.TyperOption.display_type_rich = _flags_without_type  # type: ignore[method-assign]

app = typer.Typer(
    name="mmray",
    help="Multimodal (image + text) learning on Ray: data, training, evaluation, indexing, search, generation, "
    "captioning, tuning and serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        typer.echo(f"mmray {version('mmray')}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="also show Ray's own progress logs (reports, checkpoints)")
    ] = False,
) -> None:
    """Multimodal (image + text) learning on Ray."""
    if verbose:
        from mmray.cluster.connection import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"


app.add_typer(data_commands.app, name="data")
app.add_typer(config_commands.app, name="config")
app.command("train")(train_commands.train)
app.command("evaluate")(train_commands.evaluate)
app.command("index")(index_commands.index)
app.command("search")(index_commands.search)
app.command("submit")(cluster_commands.submit)
app.add_typer(cluster_commands.app, name="jobs")
app.command("generate")(generation_commands.generate)
app.command("caption")(generation_commands.caption)
app.command("export")(bundle_commands.export)
app.command("wise-ft")(bundle_commands.wise_ft)
app.command("tune")(tune_commands.tune)
app.command("pipeline")(pipeline_commands.pipeline)
app.add_typer(pipeline_commands.app, name="models")
app.command("serve")(serve_commands.serve)
app.command("query")(serve_commands.query)
app.command("api-key")(serve_commands.api_key)


def _one_line_short_helps(commands: typer.Typer) -> None:
    """Each command's entry in its group's help: the docstring's first paragraph as one line (the command
    list otherwise keeps the docstring's line breaks)."""
    for info in commands.registered_commands:
        if info.short_help is None and info.callback is not None and info.callback.__doc__:
            first_paragraph = info.callback.__doc__.strip().split("\n\n")[0]
            info.short_help = " ".join(first_paragraph.split())
    for group in commands.registered_groups:
        if group.typer_instance is not None:
            _one_line_short_helps(group.typer_instance)


_one_line_short_helps(app)

USER_ERRORS = (MmrayError, FileExistsError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
DEBUG_ENV = "MMRAY_DEBUG"
"""Set (to anything) to get the traceback of a user error too."""


def _setup_logging() -> None:
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    logging.getLogger("botocore.credentials").setLevel(logging.WARNING)  # "Found credentials in ..." on every S3 use
    # Tune's TensorBoard logger renames metric keys such as `i2t_R@1`, announcing each rename every epoch.
    logging.getLogger("tensorboardX.summary").setLevel(logging.WARNING)
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False, console=Console(stderr=True))],
    )


def main() -> None:
    """Console-script entry: errors print one clear line, not a traceback: exit 2 for bad input or
    anything refused before the work started, 1 for work that started and failed, 130 for Ctrl-C, 143 for
    SIGTERM."""
    _setup_logging()
    try:
        app()
    except KeyboardInterrupt as stop:
        how, code = how_stopped(stop)
        print(how, file=sys.stderr)
        sys.exit(code)
    except USER_ERRORS as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1 if isinstance(exc, TrainingError) else 2)
