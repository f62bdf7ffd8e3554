"""The `mmray` command itself: version, short help, a directory given as a job."""

from __future__ import annotations

from pathlib import Path

from tests.train.conftest import run_mmray


def test_version_short_help_and_a_directory_as_job(tmp_path: Path) -> None:
    version = run_mmray("--version")
    assert version.returncode == 0 and version.stdout.startswith("mmray ")
    short = run_mmray("train", "-h")
    assert short.returncode == 0 and "Usage: mmray train" in short.stdout and "Example:" in short.stdout
    directory = run_mmray("train", str(tmp_path))
    assert directory.returncode == 2 and "is a directory" in directory.stderr and "Traceback" not in directory.stderr


def _command_paths() -> list[list[str]]:
    import typer.main

    from mmray.cli.app import app

    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        children = getattr(command, "commands", None)
        if children:
            for name, child in children.items():
                walk(child, [*path, name])
        else:
            paths.append(path)

    walk(typer.main.get_command(app), [])
    return paths


def test_every_command_has_help_with_an_example_and_flags_show_no_type() -> None:
    from typer.testing import CliRunner

    from mmray.cli.app import app

    runner = CliRunner()
    paths = _command_paths()
    assert len(paths) >= 19
    for path in paths:
        shown = runner.invoke(app, [*path, "-h"], terminal_width=120)
        assert shown.exit_code == 0, (path, shown.output)
        assert "Example" in shown.output, f"mmray {' '.join(path)} -h shows no example"
        assert "<bool>" not in shown.output, f"mmray {' '.join(path)} -h shows a flag as taking <bool>"


def test_command_lists_show_each_command_help_without_the_docstrings_line_breaks() -> None:
    import typer.main

    from mmray.cli.app import app

    def walk(group: object) -> None:
        for name, child in getattr(group, "commands", {}).items():
            listed = child.short_help or child.help or ""  # what a group's -h lists for the command
            assert "\n" not in listed.strip(), f"{name}: {listed!r}"
            walk(child)

    walk(typer.main.get_command(app))
