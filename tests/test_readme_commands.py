"""Every command in the README, as written: its arguments parse against the real CLI (types, choices,
required arguments) and every job it names, with its overrides, is a valid job. The quick ones (config
show) also run. Running the long ones (training, serving) is what the other tests and `make demo` do."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from mmray.cli.app import app
from mmray.config import load_job
from tests.support.readme import readme_steps

REPO = Path(__file__).resolve().parents[1]
JOB_COMMANDS = {"train", "evaluate", "index", "tune", "submit", ("config", "show"), ("data", "prepare")}
# Image files the README's commands read that earlier commands (or the reader) make: an existing
# image stands in for them, since the CLI checks that image files exist while parsing.
MADE_ELSEWHERE = re.compile(r"^(photo\.jpg|data/shapes/\*/images/.*)$")


def readme_commands() -> list[str]:
    """The README's mmray command lines, synopses left out."""
    return [step.line for step in readme_steps() if step.line.startswith("mmray ") and "synopsis" not in step.reason]


def _parsed(args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Parse `args` with mmray's own click commands, their callbacks replaced by a recorder."""
    root = typer.main.get_command(app)
    seen: dict[str, Any] = {}

    def replace(command: Any, path: list[str]) -> None:
        for name, child in getattr(command, "commands", {}).items():
            replace(child, [*path, name])
        if not getattr(command, "commands", None):
            command.callback = lambda **params: seen.update(path=path, params=params)

    replace(root, [])
    root.main(args, prog_name="mmray", standalone_mode=False)
    return seen["path"], seen["params"]


@pytest.mark.parametrize("line", readme_commands())
def test_a_readme_command_parses_and_its_job_is_valid(line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    image = str(next((REPO.parent / "shared" / "data" / "coco-mini" / "images").glob("*.jpg")))
    args = [image if MADE_ELSEWHERE.match(arg) else arg for arg in shlex.split(line, comments=True)[1:]]
    path, params = _parsed(args)
    command = path[0] if len(path) == 1 else tuple(path)
    job = params.get("job")
    if command in JOB_COMMANDS and job and not str(job).startswith("runs/"):  # runs/: written by `mmray tune`
        load_job(job, [o.replace("$W", "/weights") for o in params.get("overrides") or []])


def test_the_readme_lists_the_commands_this_test_checks() -> None:
    commands = readme_commands()
    assert len(commands) >= 40
    assert any("model.image.kind=torchvision" in line for line in commands), "the pretrained-encoders command"


def test_every_readme_line_is_walked_or_says_why_not() -> None:
    """A new kind of line in the README needs a decision: run by `make test-readme`, or a reason."""
    steps = readme_steps()
    unexplained = [step.line for step in steps if step.action == "skip" and not step.reason]
    assert not unexplained, f"README lines the walk neither runs nor explains: {unexplained}"
    walked = [step for step in steps if step.action != "skip"]
    assert len(walked) >= 40
    assert sum(step.action == "serve" for step in walked) == 3
    assert any(step.line.startswith("curl ") for step in walked)
    assert any(step.prelude and "$W" in step.line for step in walked), "the pretrained command keeps W= and M="


def test_the_quick_readme_commands_run() -> None:
    for line in readme_commands():
        if line.startswith("mmray config show"):
            args = shlex.split(line, comments=True)
            result = subprocess.run([str(Path(sys.executable).parent / "mmray"), *args[1:]], cwd=REPO,
                                    capture_output=True, text=True, timeout=120)  # fmt: skip
            assert result.returncode == 0 and result.stdout.startswith("kind: "), (line, result.stderr)
