"""Every path that decodes an image, run on a corpus of damaged and unusual files in a process of its own
that must survive them all: each file decodes correctly or is refused with the right error, the same way on
every path (data checks, training feeds, Ray Data embedding, search and captioning, serving)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmray.data.image_header import read_header
from tests.support.damaged_images import Sample, write_captions, write_corpus
from tests.train.conftest import REPO_ROOT, last_json, run_mmray

PATHS = ("decode_rgb", "processor", "pil_image", "check_decodable", "embedding_task", "training_feed", "serving")
REFUSED = {"refused": "ImageDecodeError", "too_large": "ImageTooLargeError"}


def _run_paths(corpus: Path, out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.decode_paths", str(corpus), str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"exit {result.returncode} after:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {(row["file"], row["path"]): row for row in rows}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Sample]]:
    directory = tmp_path_factory.mktemp("damaged") / "images"
    return directory, write_corpus(directory)


@pytest.fixture(scope="module")
def outcomes(
    corpus: tuple[Path, list[Sample]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[tuple[str, str], dict[str, Any]], Path]:
    out = tmp_path_factory.mktemp("decoded") / "pixels"
    return _run_paths(corpus[0], out), out


def _check_decoded(
    sample: Sample, rows: dict[str, dict[str, Any]], pixels: np.ndarray, width: int, height: int
) -> None:
    assert rows["decode_rgb"]["shape"] == [3, height, width] and rows["decode_rgb"]["dtype"] == "torch.uint8"
    if sample.reference is not None:
        assert pixels.shape == sample.reference.shape, sample.name
        difference = np.abs(pixels.astype(np.int64) - sample.reference.astype(np.int64)).mean()
        assert difference <= sample.tolerance, f"{sample.name}: mean difference {difference}"
    assert rows["processor"]["shape"] == [3, 24, 24]
    assert rows["pil_image"]["size"] == [width, height]
    assert rows["embedding_task"]["shape"] == [3, 24, 24] and rows["serving"]["shape"] == [3, height, width]


def _check_refused(sample: Sample, rows: dict[str, dict[str, Any]], kind: str) -> None:
    for path in ("decode_rgb", "processor", "pil_image"):
        assert rows[path]["error_type"] == kind, (sample.name, path, rows[path])
        assert rows[path]["error"].count("\n") == 0 and sample.name in rows[path]["error"]
    assert sample.name in rows["embedding_task"]["error"]
    assert rows["serving"]["status"] == (413 if kind == "ImageTooLargeError" else 422), rows["serving"]


def test_every_decode_path_survives_every_damaged_file(
    corpus: tuple[Path, list[Sample]], outcomes: tuple[dict[tuple[str, str], dict[str, Any]], Path]
) -> None:
    directory, samples = corpus
    results, out = outcomes
    assert {file for file, _ in results} == {s.name for s in samples}
    seen = {"decodes": 0, "refused": 0}
    for sample in samples:
        rows = {path: results[(sample.name, path)] for path in PATHS}
        decoded = rows["decode_rgb"]["ok"]
        assert all(row["ok"] == decoded for row in rows.values()), f"{sample.name}: the paths disagree: {rows}"
        seen["decodes" if decoded else "refused"] += 1
        if sample.expect in REFUSED or (sample.expect != "decodes" and not decoded):
            kind = REFUSED.get(sample.expect, "ImageDecodeError")
            assert not decoded, f"{sample.name} should be refused: {rows['decode_rgb']}"
            _check_refused(sample, rows, kind)
            continue
        assert decoded, f"{sample.name} should decode: {rows['decode_rgb']}"
        header = read_header((directory / sample.name).read_bytes(), sample.name)
        pixels = np.load(out / f"{sample.name}.npy")  # (H, W, 3)
        reference = sample if sample.expect != "survives" else Sample(sample.name, sample.image_id, "survives")
        _check_decoded(reference, rows, pixels, header.width, header.height)
    assert seen["decodes"] >= 15 and seen["refused"] >= 25, seen


def test_inspecting_the_corpus_reports_each_undecodable_file(
    corpus: tuple[Path, list[Sample]], outcomes: tuple[dict[tuple[str, str], dict[str, Any]], Path], tmp_path: Path
) -> None:
    directory, samples = corpus
    results, _ = outcomes
    refused = sorted(s.image_id for s in samples if not results[(s.name, "decode_rgb")]["ok"])
    captions = write_captions(samples, tmp_path / "captions.json")
    result = run_mmray("data", "inspect", "--captions", str(captions), "--images", str(directory), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result.stdout)
    assert summary["unreadable_images"] == len(refused) and summary["missing_images"] == 0
    assert summary["usable_images"] == len(samples) - len(refused)
    warning = " ".join(result.stderr.split())
    assert f"unreadable image (ids {refused[0]}, {refused[1]}, {refused[2]}," in warning, warning
    strict = run_mmray("data", "inspect", "--captions", str(captions), "--images", str(directory), "--strict")
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
