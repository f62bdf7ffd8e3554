"""A model or index bundle with a damaged file (truncated, edited, replaced) is refused with one error
naming that file, never a raw JSON, YAML, safetensors or faiss exception."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from mmray import storage
from mmray.artifacts.index_bundle import load_index_bundle
from mmray.artifacts.manifests import resolve_model_bundle
from mmray.artifacts.model_bundle import export_bundle, open_bundle
from mmray.errors import BundleError, IndexBundleError
from mmray.index.faiss_index import IndexSpec, build_index
from tests.support.serving_bundles import dual_encoder_bundle, index_bundle


@pytest.fixture(scope="module")
def bundles(tiny_shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bundles")
    model = dual_encoder_bundle(tiny_shapes, root / "model")
    return model, index_bundle(tiny_shapes, model, root / "index")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _nan_weights(path: Path) -> None:
    state = load_file(path)
    state["image_projection.weight"][0, 0] = float("nan")
    save_file(state, path)


def _replace(content: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(content)


MODEL_DAMAGE = [
    ("bundle.json", _truncate),
    ("bundle.json", _replace("[]")),
    ("model.safetensors", _truncate),
    ("model.safetensors", _nan_weights),
    ("model.yaml", _replace("kind: [unclosed")),
    ("model.yaml", lambda path: path.write_text(path.read_text().replace("embed_dim: 16", "embed_dim: 100000000000"))),
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


OPEN_AND_MEASURE = """
import json, resource, sys
from mmray.artifacts.model_bundle import open_bundle
from mmray.errors import BundleError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    open_bundle(sys.argv[1])
    error = None
except BundleError as exc:
    error = str(exc)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"error": error, "grown_mb": grown / 1024}))
"""


@pytest.mark.parametrize(("edit", "named"), [
    (("embed_dim: 16", "embed_dim: 3000000"), r"image_projection\.weight: file \(16, 16\) vs model \(3000000, 16\)"),
    (("width: 16\n  layers: 1", "width: 2048\n  layers: 4"), r"missing keys: text_encoder\.\S+.*shape mismatches: "),
])  # fmt: skip
def test_a_model_yaml_of_other_sizes_than_its_weights_is_refused_before_the_model_is_built(
    bundles: tuple[Path, Path], tmp_path: Path, edit: tuple[str, str], named: str
) -> None:
    """Sizes a machine can allocate, but not the weights': the config's shapes are checked on torch's meta
    device, so the model (here hundreds of MB) is never built to find out."""
    model = shutil.copytree(bundles[0], tmp_path / "model")
    config = model / "model.yaml"
    assert edit[0] in config.read_text()
    config.write_text(config.read_text().replace(*edit))
    child = subprocess.run([sys.executable, "-c", OPEN_AND_MEASURE, str(model)], capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    said = json.loads(child.stdout.strip().splitlines()[-1])
    assert said["error"] is not None and said["error"].startswith(f"{model}/model.yaml does not fit"), said
    assert re.search(named, said["error"]), said
    assert said["grown_mb"] < 100, said


def test_a_damaged_file_of_a_bundle_on_s3_is_named_by_its_uri(bundles: tuple[Path, Path], s3_env: str) -> None:
    uri = storage.join(s3_env, "model")
    storage.upload_dir(bundles[0], uri)
    storage.write_bytes(storage.join(uri, "model.safetensors"), b"these are not weights")
    with pytest.raises(BundleError, match=rf"^{uri}/model\.safetensors is damaged"):
        open_bundle(uri)


def test_exporting_a_damaged_bundle_names_its_file_and_writes_nothing(
    bundles: tuple[Path, Path], tmp_path: Path
) -> None:
    model = shutil.copytree(bundles[0], tmp_path / "model")
    _truncate(model / "model.safetensors")
    with pytest.raises(BundleError, match=rf"^{model}/model\.safetensors is damaged"):
        export_bundle(str(model), str(tmp_path / "copy"))
    assert not (tmp_path / "copy").exists()


def test_a_damaged_run_pointer_is_named(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "best_model.json").write_text('{"model_bundle": ')
    with pytest.raises(BundleError, match=r"best_model\.json"):
        resolve_model_bundle(str(tmp_path))
    (tmp_path / "best_model.json").write_text('{"checkpoint": "x"}')
    with pytest.raises(BundleError, match=r"best_model\.json"):
        resolve_model_bundle(str(tmp_path))


def _another_index(kind: str, count: int, dim: int) -> Callable[[Path], None]:
    vectors = np.random.default_rng(0).standard_normal((count, dim)).astype(np.float32)
    return lambda path: build_index(vectors, np.arange(count), IndexSpec(type=kind, nlist=2)).save(path)


def _without(key: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != key}))


def _ids_without_metadata(path: Path) -> None:
    ids = np.load(path)
    ids[:3] = [900_001, 900_002, 900_003]
    np.save(path, ids)


def _drop_entries(corpus: str, count: int) -> Callable[[Path], None]:
    def drop(path: Path) -> None:
        metadata = json.loads(path.read_text())
        metadata[corpus] = dict(list(metadata[corpus].items())[count:])
        path.write_text(json.dumps(metadata))

    return drop


def _manifest_type(kind: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(path.read_text().replace('"flat"', f'"{kind}"', 1))


INDEX_DAMAGE = [
    ("index.json", _truncate),
    ("index.json", _replace('{"format_version": 1, "model_version": "v", "indexes": null}')),
    ("index.json", _without("model_bundle")),
    ("index.json", _without("split")),
    ("metadata.json", _truncate),
    ("metadata.json", _replace('{"images": [1, 2], "captions": {}}')),
    ("metadata.json", _replace('{"images": {"1": "a.jpg"}, "captions": {}}')),
    ("metadata.json", _replace('{"images": {}}')),
    ("metadata.json", _drop_entries("images", 2)),
    ("metadata.json", _drop_entries("captions", 1)),
    ("images.ids.npy", _ids_without_metadata),
    ("images.ids.npy", lambda path: np.save(path, np.load(path).astype(np.float64))),
    ("images.faiss", _truncate),
    ("images.ids.npy", _truncate),
    ("images.faiss", _another_index("flat", 40, 32)),
    ("images.faiss", _another_index("hnsw", 40, 16)),
    ("images.faiss", _another_index("ivf_flat", 40, 16)),
]


@pytest.mark.parametrize(("name", "damage"), INDEX_DAMAGE)
def test_a_damaged_index_bundle_file_is_named(
    bundles: tuple[Path, Path], tmp_path: Path, name: str, damage: Callable[[Path], None]
) -> None:
    index = shutil.copytree(bundles[1], tmp_path / "index")
    damage(index / name)
    with pytest.raises(IndexBundleError, match=rf"index/{name}"):
        load_index_bundle(str(index))


def test_ids_without_metadata_are_named_with_both_files(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    """A hit's metadata comes from metadata.json: an id it lacks would be a hit without file name or text."""
    index = shutil.copytree(bundles[1], tmp_path / "index")
    _ids_without_metadata(index / "images.ids.npy")
    named = rf"^{index}/images\.ids\.npy names 3 ids that {index}/metadata\.json has no 'images' entry for: "
    with pytest.raises(IndexBundleError, match=named + r"900001, 900002, 900003;"):
        load_index_bundle(str(index))
    _replace('{"images": {}, "captions": {}}')(index / "metadata.json")
    first_five = r"900001, 900002, 900003, \d+, \d+ \(and 35 more\);"
    with pytest.raises(IndexBundleError, match=r"names 40 ids that .*: " + first_five):
        load_index_bundle(str(index))


@pytest.mark.parametrize("kind", ["ivf_flat", "hnsw", "bogus"])
def test_an_index_file_of_another_type_than_its_manifest_says_is_named(
    bundles: tuple[Path, Path], tmp_path: Path, kind: str
) -> None:
    index = shutil.copytree(bundles[1], tmp_path / "index")
    _manifest_type(kind)(index / "index.json")
    with pytest.raises(IndexBundleError, match=rf"index/images\.faiss .*IndexFlatIP.*{kind}"):
        load_index_bundle(str(index))


def test_an_index_bundle_of_a_newer_format_is_refused(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    index = shutil.copytree(bundles[1], tmp_path / "index")
    manifest = (index / "index.json").read_text().replace('"format_version": 1', '"format_version": 99')
    (index / "index.json").write_text(manifest)
    with pytest.raises(IndexBundleError, match=r"format_version 99.*this mmray reads 1"):
        load_index_bundle(str(index))
