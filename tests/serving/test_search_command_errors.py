"""`mmray search` (its `main`, in this process) refuses bad queries with one clear line (exit 2, no
traceback) and says when it returns fewer hits than asked or cuts a query."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.serving.conftest import Bundles
from tests.serving.helpers import val_images
from tests.support.cli import invoke_mmray as run_mmray


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), "--text, --image, or both"),
        (("--text", ""), "--text is empty"),
        (("--text", "   "), "--text is empty"),
        (("--text", "a red circle", "--nprobe", "-3"), "--nprobe"),
        (("--text", "a red circle", "--ef-search", "0"), "--ef-search"),
        (("--text", "a red circle", "--alpha", "2"), "--alpha"),
        (("--text", "a red circle", "--target", "videos"), "--target must be images or captions"),
    ],
)
def test_bad_queries_get_one_clear_error(bundles: Bundles, args: tuple[str, ...], words: str) -> None:
    result = run_mmray("search", str(bundles.index), *args)
    assert result.returncode == 2, result.stdout[-500:]
    assert "Traceback" not in result.stderr and words in result.stderr, result.stderr[-1500:]


def test_files_that_cannot_be_used_are_named(bundles: Bundles, tmp_path: Path) -> None:
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is text")
    result = run_mmray("search", str(bundles.index), "--image", str(not_image))
    assert result.returncode == 2 and "Traceback" not in result.stderr and str(not_image) in result.stderr
    png = run_mmray("search", str(bundles.index), "--text", "a red circle", "--png", str(tmp_path))
    assert png.returncode == 2 and "Traceback" not in png.stderr and "is a directory" in png.stderr


def test_an_index_naming_ids_without_metadata_is_refused(bundles: Bundles, tmp_path: Path) -> None:
    """Hits without file name or text are not shown as if they were found."""
    index = shutil.copytree(bundles.index, tmp_path / "index")
    ids = np.load(index / "images.ids.npy")
    ids[0] = 900_001
    np.save(index / "images.ids.npy", ids)
    result = run_mmray("search", str(index), "--text", "a red circle")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-1500:]
    assert errors[0].startswith(f"error: {index}/images.ids.npy names 1 id that {index}/metadata.json has no "
                                "'images' entry for: 900001;")  # fmt: skip
    assert result.stdout == ""


def test_fewer_hits_than_asked_and_cut_queries_are_reported(bundles: Bundles) -> None:
    many = run_mmray("search", str(bundles.index), "--text", "a red circle", "--k", "100000")
    assert many.returncode == 0 and len(many.stdout.strip().splitlines()) == 40
    assert "--k 100000: the images index holds 40; showing all 40" in many.stderr
    long_text = " ".join(["a big red circle at the top"] * 20)
    cut = run_mmray("search", str(bundles.index), "--text", long_text, "--k", "1")
    assert cut.returncode == 0 and "the query was cut to 16 tokens" in cut.stderr
    image = val_images(bundles.shapes, 1)[0]
    assert run_mmray("search", str(bundles.index), "--image", str(image), "--k", "1").returncode == 0


def test_an_index_is_not_evaluated_on_data_it_was_not_built_from(bundles: Bundles, tmp_path: Path) -> None:
    from mmray.config import ShapesData
    from mmray.errors import IndexBundleError
    from mmray.retrieval.evaluate import evaluate_index_bundle

    other = ShapesData(source="shapes", root=str(tmp_path / "other"), images=160, val_images=40, seed=99)
    with pytest.raises(IndexBundleError, match=r"indexes 40 images of split 'val', but the job's data has 40 images"):
        evaluate_index_bundle(other, str(bundles.index))
