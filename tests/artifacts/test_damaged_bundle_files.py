"""A model or index bundle with a damaged file (truncated, edited, replaced) is refused with one error
naming that file, never a raw JSON, YAML, safetensors or faiss exception."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from mmray.artifacts.index_bundle import load_index_bundle
from mmray.artifacts.manifests import resolve_model_bundle
from mmray.artifacts.model_bundle import open_bundle
from mmray.errors import BundleError, IndexBundleError
from tests.support.serving_bundles import dual_encoder_bundle, index_bundle


@pytest.fixture(scope="module")
def bundles(tiny_shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bundles")
    model = dual_encoder_bundle(tiny_shapes, root / "model")
    return model, index_bundle(tiny_shapes, model, root / "index")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _replace(content: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(content)


MODEL_DAMAGE = [
    ("bundle.json", _truncate),
    ("bundle.json", _replace("[]")),
    ("model.safetensors", _truncate),
    ("model.yaml", _replace("kind: [unclosed")),
    ("processor.json", _truncate),
    ("processor.json", _replace('{"image": {"size": "big"}, "tokenizer": "word"}')),
    ("word_tokenizer.json", _truncate),
    ("word_tokenizer.json", _replace('{"vocabulary": 3}')),
]


@pytest.mark.parametrize(("name", "damage"), MODEL_DAMAGE)
def test_a_damaged_model_bundle_file_is_named(
    bundles: tuple[Path, Path], tmp_path: Path, name: str, damage: Callable[[Path], None]
) -> None:
    model = shutil.copytree(bundles[0], tmp_path / "model")
    damage(model / name)
    with pytest.raises(BundleError, match=rf"model/{name}"):
        open_bundle(str(model))


def test_a_damaged_run_pointer_is_named(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "best_model.json").write_text('{"model_bundle": ')
    with pytest.raises(BundleError, match=r"best_model\.json"):
        resolve_model_bundle(str(tmp_path))
    (tmp_path / "best_model.json").write_text('{"checkpoint": "x"}')
    with pytest.raises(BundleError, match=r"best_model\.json"):
        resolve_model_bundle(str(tmp_path))


INDEX_DAMAGE = [
    ("index.json", _truncate),
    ("index.json", _replace('{"format_version": 1, "model_version": "v", "indexes": null}')),
    ("metadata.json", _truncate),
    ("images.faiss", _truncate),
    ("images.ids.npy", _truncate),
]


@pytest.mark.parametrize(("name", "damage"), INDEX_DAMAGE)
def test_a_damaged_index_bundle_file_is_named(
    bundles: tuple[Path, Path], tmp_path: Path, name: str, damage: Callable[[Path], None]
) -> None:
    index = shutil.copytree(bundles[1], tmp_path / "index")
    damage(index / name)
    with pytest.raises(IndexBundleError, match=rf"index/{name}"):
        load_index_bundle(str(index))


def test_an_index_bundle_of_a_newer_format_is_refused(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    index = shutil.copytree(bundles[1], tmp_path / "index")
    manifest = (index / "index.json").read_text().replace('"format_version": 1', '"format_version": 99')
    (index / "index.json").write_text(manifest)
    with pytest.raises(IndexBundleError, match=r"format_version 99.*this mmray reads 1"):
        load_index_bundle(str(index))
