"""The README's commands, copied as written, run in order in a scratch copy of the project
(`make test-readme`, about 2 hours on 2 cores; not part of `make test`).

Each command must exit 0 without a traceback and write the files it names (`--out`, `--png`). The two
`mmray serve` lines start the server in the background; the query and curl lines after them talk to
it; it is stopped with Ctrl-C before the next one starts and at the end. `photo.jpg` is one of
coco-mini's photos.

A walk stopped part way goes on in its own project directory: `MMRAY_README_WALK_DIR=<.../readme-walk0/main>
MMRAY_README_WALK_FROM=<step number>` skips the steps before that number and keeps what they made."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.readme import REPO, Step, readme_steps

pytestmark = [pytest.mark.slow, pytest.mark.readme]
SERVER = "http://127.0.0.1:8000"
STEP_TIMEOUT_S = 3600
WALKED = [step for step in readme_steps() if step.action != "skip"]
CONTINUED_DIR = os.environ.get("MMRAY_README_WALK_DIR")
FIRST_STEP = int(os.environ.get("MMRAY_README_WALK_FROM", "0"))
_server: dict[str, Any] = {}


def _walk_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env["MMRAY_PROGRESS"] = "lines"
    return env


@pytest.fixture(scope="module")
def walk_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of what a reader has after `git clone` and `make`: jobs, serve configs, the README,
    .venv and ../shared (linked), and a photo of their own; or an earlier walk's directory to go on in."""
    if CONTINUED_DIR:
        yield Path(CONTINUED_DIR)
        _stop_server()
        return
    top = tmp_path_factory.mktemp("readme-walk")
    project = top / "main"
    project.mkdir()
    for name in ("jobs", "serve"):
        shutil.copytree(REPO / name, project / name)
    shutil.copy2(REPO / "README.md", project / "README.md")
    (project / ".venv").symlink_to(REPO / ".venv")
    (top / "shared").symlink_to(REPO.parent / "shared")
    photo = sorted((REPO.parent / "shared" / "data" / "coco-mini" / "images").glob("*.jpg"))[0]
    shutil.copy2(photo, project / "photo.jpg")
    yield project
    _stop_server()


def _output_paths(line: str) -> list[str]:
    return re.findall(r"--(?:out|png)\s+(\S+)", line)


def _run(step: Step, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", f"set -eo pipefail\n{step.command}"], cwd=cwd, env=_walk_env(),
                          capture_output=True, text=True, timeout=STEP_TIMEOUT_S)  # fmt: skip


def _server_answers(cwd: Path) -> bool:
    probe = subprocess.run(["mmray", "query", SERVER, "health"], cwd=cwd, env=_walk_env(),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    return probe.returncode == 0


def _start_server(step: Step, cwd: Path) -> None:
    _stop_server()
    log = (cwd / f"serve-{len(_server.get('logs', []))}.log").open("w")
    script = "\n".join([*step.prelude, f"exec {step.line}"])
    process = subprocess.Popen(["bash", "-c", script], cwd=cwd, env=_walk_env(), stdout=log, stderr=subprocess.STDOUT)
    _server.update(process=process, log=Path(log.name), logs=[*_server.get("logs", []), log.name])
    deadline = time.monotonic() + 900
    while not _server_answers(cwd):
        assert process.poll() is None, f"{step.line} exited {process.returncode}:\n{Path(log.name).read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"{step.line} did not answer in 15 minutes"
        time.sleep(2)


def _stop_server() -> None:
    process = _server.pop("process", None)
    if process is None:
        return
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=300)
    output = _server["log"].read_text()
    assert code == 0, f"mmray serve exited {code} after Ctrl-C:\n{output[-4000:]}"
    assert "Traceback" not in output, output[-4000:]


@pytest.mark.timeout(STEP_TIMEOUT_S + 900)
@pytest.mark.parametrize(
    ("number", "step"), enumerate(WALKED), ids=[f"{n:02d} {step.line[:50]}" for n, step in enumerate(WALKED)]
)
def test_a_readme_command_runs_as_written(number: int, step: Step, walk_dir: Path) -> None:
    if number < FIRST_STEP:
        pytest.skip(f"before MMRAY_README_WALK_FROM={FIRST_STEP}")
    if step.action == "serve":
        _start_server(step, walk_dir)
        return
    result = _run(step, walk_dir)
    said = result.stdout + result.stderr
    assert result.returncode == 0, f"{step.line}\nexit {result.returncode}\n{said[-6000:]}"
    assert "Traceback" not in said, f"{step.line}\n{said[-6000:]}"
    for path in _output_paths(step.line):
        written = walk_dir / path
        assert written.is_file() or (written.is_dir() and any(written.iterdir())), f"{step.line} wrote no {path}"
    if step.line.startswith("curl "):
        answer = json.loads(result.stdout)
        assert answer.get("hits"), f"{step.line}: {result.stdout[:2000]}"


def test_the_last_server_stops_cleanly_with_ctrl_c(walk_dir: Path) -> None:
    assert "process" in _server, "the walk started no server"
    _stop_server()
