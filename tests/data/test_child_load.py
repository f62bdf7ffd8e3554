"""A large split is parsed in a child process: the caller gets the same records, report and warning as
parsing it itself, refusals arrive with their report, and a child that dies is named, not waited on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmray.config.data import CocoData
from mmray.data.child_load import load_in_child
from mmray.data.sources import load_split
from mmray.errors import DataError
from tests.data.coco_files import problem_split


def _config(root: Path, on_bad_record: str = "skip") -> CocoData:
    paths = problem_split(root)
    split = {"captions": str(paths.captions), "images": str(paths.images), "instances": str(paths.instances)}
    return CocoData.model_validate({"source": "coco", "train": split, "on_bad_record": on_bad_record})


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_child_parse_gives_the_callers_records_report_and_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(tmp_path)
    here = load_split(config, "train", progress=False)
    warned_here = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    caplog.clear()
    child = load_split(config, "train", progress=False, child_load_bytes=0)
    warned_in_child = [(r.name, r.getMessage()) for r in caplog.records if r.levelname == "WARNING"]
    assert child.records == here.records
    assert child.categories == here.categories
    assert child.report == here.report
    assert len(warned_here) == 1 and "skipping them" in warned_here[0]
    assert warned_in_child == [("mmray.data.coco", warned_here[0])], "the child's warning is logged by the caller"


def test_a_refusal_in_the_child_arrives_with_its_report(tmp_path: Path) -> None:
    config = _config(tmp_path, on_bad_record="error")
    with pytest.raises(DataError, match="on_bad_record=error") as refused:
        load_split(config, "train", progress=False, child_load_bytes=0)
    assert refused.value.report is not None and refused.value.report.problem_count == 11


def test_a_child_that_dies_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"the big split: the process loading it stopped \(exit code -9"):
        load_in_child(_die, "the big split")


def sleep_long() -> None:
    time.sleep(120)


def _children(parent: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]


def test_ctrl_c_in_the_caller_stops_the_child() -> None:
    code = (
        "from mmray.data.child_load import load_in_child\n"
        "from tests.data.test_child_load import sleep_long\n"
        "load_in_child(sleep_long, 'a slow split')\n"
    )
    caller = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 30
    while not (children := _children(caller.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert children, "the child never started"
    time.sleep(2)  # the child is importing or sleeping
    os.killpg(caller.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the caller's whole group
    _, stderr = caller.communicate(timeout=30)
    assert caller.returncode != 0 and "KeyboardInterrupt" in stderr
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in children), "the child outlived its caller"
