"""A served answer equals the offline one for the same inputs: every endpoint of the open app against the
path `mmray search` / `caption` / `generate` and the model take in this process, with bundles whose images
are center-cropped (aspect kept) and query images that are not square."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmray.artifacts.generators import ImageGenerator
from mmray.artifacts.model_bundle import open_bundle
from mmray.data.image_files import decode_image
from mmray.retrieval.search import Searcher
from tests.serving.conftest import ServedApps
from tests.serving.helpers import b64, post, val_images
from tests.support.cli import invoke_mmray

pytestmark = pytest.mark.slow


def _wide_jpegs(shapes: Path, count: int, directory: Path) -> list[Path]:
    """Validation images cut to 64 × 40, so stretching and center-cropping give different pixels."""
    paths = []
    for source in val_images(shapes, count):
        path = directory / f"wide-{source.name}"
        Image.open(source).convert("RGB").crop((0, 12, 64, 52)).save(path, format="JPEG", quality=95)
        paths.append(path)
    return paths


def test_every_endpoint_answers_as_the_offline_path(served: ServedApps, tmp_path: Path) -> None:
    bundles = served.bundles
    images = _wide_jpegs(bundles.shapes, 2, tmp_path)
    assert open_bundle(str(bundles.clip)).processor.image.resize == "center_crop"
    searcher = Searcher.open(str(bundles.index))
    texts = ["a big red circle at the top", "two small blue squares"]

    embedded = post(served.open_url, "/v1/embed", {"texts": texts, "images": [b64(p.read_bytes()) for p in images]})
    assert embedded.status_code == 200, embedded.text
    offline_images = torch.stack([searcher.embed_image(decode_image(p.read_bytes(), str(p))) for p in images])
    offline_texts = torch.stack([searcher.embed_text(text) for text in texts])
    np.testing.assert_allclose(embedded.json()["image_embeddings"], offline_images.numpy(), atol=1e-5)
    np.testing.assert_allclose(embedded.json()["text_embeddings"], offline_texts.numpy(), atol=1e-5)

    for query in ({"image": str(images[0]), "target": "images"}, {"image": str(images[1]), "text": "but blue"}):
        body = {**query, "k": 5}
        if "image" in body:
            body["image"] = b64(Path(query["image"]).read_bytes())
        served_hits = post(served.open_url, "/v1/search", body).json()["hits"]
        args = [f"--{key}={value}" for key, value in query.items()]
        offline = invoke_mmray("search", str(bundles.index), *args, "--k", "5", "--json")
        assert offline.returncode == 0, offline.stderr
        offline_hits = offline.last_json()["hits"]
        assert [(h["kind"], h["id"]) for h in served_hits] == [(h["kind"], h["id"]) for h in offline_hits]
        np.testing.assert_allclose([h["score"] for h in served_hits], [h["score"] for h in offline_hits], atol=1e-5)

    classified = post(served.open_url, "/v1/classify", {"items": [{"image": b64(images[0].read_bytes()),
                                                                    "text": texts[0]}], "threshold": 0.5})  # fmt: skip
    assert classified.status_code == 200, classified.text
    prediction = classified.json()["predictions"][0]
    classifier = open_bundle(str(bundles.classifier))
    processor = classifier.processor
    pixels = processor.normalize(processor.pixels_from_bytes(images[0].read_bytes()).unsqueeze(0))  # (1, 3, S, S)
    tokens = processor.tokenize([texts[0]])
    with torch.no_grad():
        outputs = classifier.model(pixels, tokens.ids, tokens.mask.bool()).predictions
    probabilities = torch.sigmoid(outputs["shapes"][0]).tolist()  # (4,) multi-label
    names = ["circle", "square", "triangle", "diamond"]
    assert prediction["shapes"]["probabilities"] == pytest.approx(
        dict(zip(names, probabilities, strict=True)), abs=1e-5
    )
    assert prediction["shapes"]["labels"] == [n for n, p in zip(names, probabilities, strict=True) if p >= 0.5]
    assert prediction["objects"]["value"] == pytest.approx(float(outputs["objects"][0, 0]), abs=1e-5)

    captioned = post(served.open_url, "/v1/caption", {"images": [b64(p.read_bytes()) for p in images], "beam": 2})
    offline_captions = invoke_mmray("caption", str(bundles.captioner), *map(str, images), "--beam", "2", "--json")
    assert offline_captions.returncode == 0, offline_captions.stderr
    lines = [json.loads(line)["caption"] for line in offline_captions.stdout.strip().splitlines()]
    assert captioned.json()["captions"] == lines

    generated = post(served.open_url, "/v1/generate/image", {"text": texts[0], "n": 2, "seed": 5}).json()
    samples = ImageGenerator.open(str(bundles.painter)).sample([texts[0]], 2, seed=5)[0]  # (2, 3, S, S) in [0, 1]
    for served_image, sample in zip(generated["images"], samples, strict=True):
        pixels_served = np.asarray(Image.open(io.BytesIO(base64.b64decode(served_image.split(",", 1)[1]))))
        offline_pixels = (sample.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(pixels_served, offline_pixels)
