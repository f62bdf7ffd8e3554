"""The `mmray` command run in this process (its `main`, as the console script runs it), for tests of
argument parsing and error messages: the same exit code, stdout and stderr as a subprocess, without the
seconds of a new Python process importing torch. Tests of signals and process exits use a subprocess."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any


@dataclass
class Outcome:
    """What a command run left, named as `subprocess.CompletedProcess` names it."""

    returncode: int
    stdout: str
    stderr: str

    def last_json(self) -> dict[str, Any]:
        return dict(json.loads(self.stdout.strip().splitlines()[-1]))


@contextmanager
def _logs_to(stream: io.StringIO) -> Iterator[None]:
    """mmray's log lines (INFO and up) into `stream`, as the console script's handler writes them to stderr."""
    root = logging.getLogger()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@contextmanager
def _ray_kept() -> Iterator[None]:
    """A command's closing `disconnect` leaves alone a Ray this process joined before it (other tests use it)."""
    import ray

    from mmray.cluster import connection as raycluster

    if not ray.is_initialized():
        yield
        return
    disconnect = raycluster.disconnect
    raycluster.disconnect = lambda: None  # type: ignore[assignment]
    try:
        yield
    finally:
        raycluster.disconnect = disconnect  # type: ignore[assignment]


def invoke_mmray(*args: str, env: dict[str, str] | None = None) -> Outcome:
    """`mmray ARGS…` in this process: exit code, stdout and stderr (log lines included)."""
    from mmray.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    argv, saved_env = sys.argv, dict(os.environ)
    sys.argv = ["mmray", *args]
    os.environ.update(env or {})
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err), _logs_to(err), _ray_kept():
            try:
                main()
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(saved_env)
    return Outcome(code, out.getvalue(), err.getvalue())


@contextmanager
def ray_never_started() -> Iterator[list[str]]:
    """Within: any command that would connect to Ray fails the test instead (a mistake must be found first)."""
    import mmray.serving.runner
    import mmray.train.trainer
    import mmray.tune.search  # noqa: F401  (each imports `connect` by name)
    from mmray.cluster import connection as raycluster

    calls: list[str] = []
    connect = raycluster.connect

    def refuse(*args: Any, **kwargs: Any) -> None:
        calls.append("connect")
        raise AssertionError("Ray was started")

    holders = [m for n, m in sys.modules.items() if n.startswith("mmray") and getattr(m, "connect", None) is connect]
    for module in holders:
        module.connect = refuse  # type: ignore[attr-defined]
    try:
        yield calls
    finally:
        for module in holders:
            module.connect = connect  # type: ignore[attr-defined]
