"""The HTTP API on a real Serve instance: each endpoint's happy path, bad input answered with a 4xx
naming the field, and concurrent requests batched together that each get their own answer."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from mmray.serving.calls import CaptionCall, ClassifyCall, ClassifyItem, EmbedCall, GenerateCall
from mmray.serving.model_service import ModelService
from tests.serving.conftest import API_KEY, LIMITS, ServedApps
from tests.serving.helpers import assert_error, b64, image_id, png_bytes, post, val_images
from tests.train.conftest import run_mmray

pytestmark = pytest.mark.slow


def test_health_models_and_openapi(served: ServedApps) -> None:
    assert requests.get(served.open_url + "/healthz", timeout=30).json()["status"] == "ok"
    models = requests.get(served.open_url + "/v1/models", timeout=30).json()
    direct = ModelService.open(str(served.bundles.clip))
    assert models["models"]["retrieval"]["model_version"] == direct.version
    assert models["models"]["retrieval"]["capabilities"] == ["embed"]
    assert models["models"]["classifier"]["capabilities"] == ["classify"]
    assert models["models"]["painter"]["capabilities"] == ["generate"]
    assert models["models"]["captioner"]["capabilities"] == ["caption"]
    assert models["index"]["model_version"] == direct.version
    spec = requests.get(served.open_url + "/openapi.json", timeout=30).json()
    for route in ("/v1/embed", "/v1/classify", "/v1/search", "/v1/generate/image", "/v1/caption", "/v1/models"):
        assert route in spec["paths"], route
    search_schema = spec["paths"]["/v1/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"text", "image", "k", "alpha", "target"} <= set(search_schema["properties"])
    assert requests.get(served.open_url + "/docs", timeout=30).status_code == 200


def test_embed_texts_and_images_equal_the_model_called_directly(served: ServedApps) -> None:
    images = val_images(served.bundles.shapes, 2)
    texts = ["a big red circle at the top", "two small blue squares"]
    response = post(served.open_url, "/v1/embed", {"texts": texts, "images": [b64(p.read_bytes()) for p in images]})
    assert response.status_code == 200, response.text
    body = response.json()
    direct = ModelService.open(str(served.bundles.clip))
    expected = direct.embed_many([EmbedCall(texts, [p.read_bytes() for p in images])])[0]
    assert not isinstance(expected, Exception)
    np.testing.assert_allclose(body["text_embeddings"], expected.text_vectors, atol=1e-5)
    np.testing.assert_allclose(body["image_embeddings"], expected.image_vectors, atol=1e-5)
    assert body["dim"] == 16 and body["model_version"] == direct.version
    np.testing.assert_allclose(np.linalg.norm(body["image_embeddings"], axis=1), 1.0, atol=1e-5)

    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in images]
    multipart = requests.post(served.open_url + "/v1/embed", files=files, data={"texts": texts}, timeout=60)
    assert multipart.status_code == 200, multipart.text
    np.testing.assert_allclose(multipart.json()["image_embeddings"], expected.image_vectors, atol=1e-5)
    np.testing.assert_allclose(multipart.json()["text_embeddings"], expected.text_vectors, atol=1e-5)


def test_search_by_text_image_and_fused(served: ServedApps) -> None:
    image = val_images(served.bundles.shapes, 1)[0]
    by_image = post(served.open_url, "/v1/search", {"image": b64(image.read_bytes()), "target": "images", "k": 3})
    assert by_image.status_code == 200, by_image.text
    hits = by_image.json()["hits"]
    assert hits[0]["id"] == image_id(image) and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [h["rank"] for h in hits] == [1, 2, 3]

    by_text = post(served.open_url, "/v1/search", {"text": "a small red circle", "k": 5, "thumbnails": True}).json()
    assert by_text["target"] == "images" and len(by_text["hits"]) == 5
    assert all(h["thumbnail"]["data_url"].startswith("data:image/jpeg;base64,") for h in by_text["hits"])
    captions = post(served.open_url, "/v1/search", {"image": b64(image.read_bytes()), "k": 4}).json()
    assert captions["target"] == "captions" and all(h["kind"] == "caption" for h in captions["hits"])
    fused = post(served.open_url, "/v1/search", {"image": b64(image.read_bytes()), "text": "but blue", "alpha": 1.0,
                                                 "target": "images", "k": 1, "nprobe": 4})  # fmt: skip
    assert fused.json()["hits"][0]["id"] == image_id(image), "alpha=1 weighs only the image"
    upload = requests.post(
        served.open_url + "/v1/search",
        files={"image": (image.name, image.read_bytes(), "image/jpeg")},
        data={"k": "2", "target": "images"},
        timeout=60,
    )
    assert upload.status_code == 200 and upload.json()["hits"][0]["id"] == image_id(image)


def test_classify_honours_each_requests_own_parameters(served: ServedApps) -> None:
    image = b64(val_images(served.bundles.shapes, 1)[0].read_bytes())
    response = post(served.open_url, "/v1/classify", {"items": [{"image": image, "text": "a red circle"}]})
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    assert set(prediction["shapes"]["probabilities"]) == {"circle", "square", "triangle", "diamond"}
    assert prediction["objects"]["kind"] == "regression" and isinstance(prediction["objects"]["value"], float)
    everything = post(served.open_url, "/v1/classify", {"items": [{"image": image}], "threshold": 0.01}).json()
    assert everything["predictions"][0]["shapes"]["labels"] == ["circle", "square", "triangle", "diamond"]
    nothing = post(served.open_url, "/v1/classify", {"items": [{"text": "a red circle"}], "threshold": 0.99}).json()
    assert nothing["predictions"][0]["shapes"]["labels"] == []


def _pixels(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def test_generated_images_follow_the_seed_and_equal_the_model_called_directly(served: ServedApps) -> None:
    body = {"text": "a small red circle at the top", "n": 3, "seed": 11}
    response = post(served.open_url, "/v1/generate/image", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == "painter" and answer["seed"] == 11 and len(answer["images"]) == 3
    direct = ModelService.open(str(served.bundles.painter))
    expected = direct.generate_many([GenerateCall(body["text"], 3, 1.0, 11)])[0]
    assert not isinstance(expected, Exception) and answer["model_version"] == direct.version
    for served_image, direct_png in zip(answer["images"], expected.images, strict=True):
        assert _pixels(served_image).shape == (32, 32, 3)
        np.testing.assert_array_equal(_pixels(served_image), np.asarray(Image.open(io.BytesIO(direct_png))))
    again = post(served.open_url, "/v1/generate/image", body).json()
    assert again["images"] == answer["images"]
    unseeded = post(served.open_url, "/v1/generate/image", {"text": "a blue square"}).json()
    assert isinstance(unseeded["seed"], int) and len(unseeded["images"]) == 1


def test_captions_equal_the_model_called_directly(served: ServedApps) -> None:
    paths = val_images(served.bundles.shapes, 3)
    response = post(served.open_url, "/v1/caption", {"images": [b64(p.read_bytes()) for p in paths], "beam": 2})
    assert response.status_code == 200, response.text
    direct = ModelService.open(str(served.bundles.captioner))
    expected = direct.caption_many([CaptionCall([p.read_bytes() for p in paths], beam=2)])[0]
    assert not isinstance(expected, Exception)
    assert response.json()["captions"] == expected.captions and response.json()["model"] == "captioner"
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    multipart = requests.post(served.open_url + "/v1/caption", files=files, data={"beam": "2"}, timeout=60)
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["captions"] == expected.captions


def test_generation_and_captioning_name_what_the_served_models_can_do(served: ServedApps) -> None:
    image = b64(val_images(served.bundles.shapes, 1)[0].read_bytes())
    message = assert_error(post(served.open_url, "/v1/caption", {"images": [image], "model": "retrieval"}), 404,
                           "model")  # fmt: skip
    assert "does not serve caption" in message
    locked = post(served.locked_url, "/v1/generate/image", {"text": "a red circle"}, key=API_KEY)
    assert "no served model answers generate" in assert_error(locked, 404, "model")


def _bad_requests(served: ServedApps) -> list[tuple[str, dict | None, dict, int, str | None, str]]:
    """(path, JSON body or None, extra request arguments, status, field, words in the message)."""
    jpeg = val_images(served.bundles.shapes, 1)[0].read_bytes()
    big_side = int(LIMITS["max_image_pixels"] ** 0.5) + 10
    return [
        ("/v1/search", {"image": "not base64!!"}, {}, 422, "image", "base64"),
        ("/v1/search", {"image": b64(b"just some text")}, {}, 422, "image", "not an image that can be decoded"),
        ("/v1/search", {"image": b64(jpeg[: len(jpeg) // 2])}, {}, 422, "image", "decode"),
        ("/v1/search", {"image": b64(png_bytes(big_side, big_side))}, {}, 413, "image", "pixels"),
        ("/v1/embed", {"images": [b64(png_bytes(1000, 1000))]}, {}, 413, "images[0]", "pixels"),
        (
            "/v1/search",
            None,
            {"data": b"x" * 2_100_000, "headers": {"content-type": "application/json"}},
            413,
            "body",
            "limit",
        ),
        ("/v1/search", {"text": ""}, {}, 422, "text", "empty"),
        ("/v1/search", {"text": "   "}, {}, 422, "text", "empty"),
        ("/v1/search", {"text": "a" * 201}, {}, 413, "text", "limit"),
        ("/v1/search", {"text": "a red circle", "k": 0}, {}, 422, "k", "1..50"),
        ("/v1/search", {"text": "a red circle", "k": 51}, {}, 422, "k", "1..50"),
        ("/v1/search", {"text": "a red circle", "k": "ten"}, {}, 422, "k", "integer"),
        ("/v1/search", {"text": 5}, {}, 422, "text", "string"),
        ("/v1/search", {"text": "a red circle", "colour": "red"}, {}, 422, "colour", "unknown field"),
        ("/v1/search", {"text": "a red circle", "alpha": 2}, {}, 422, "alpha", "less than or equal"),
        ("/v1/search", {"text": "a red circle", "nprobe": -3}, {}, 422, "nprobe", "greater than or equal"),
        ("/v1/search", {"text": "a red circle", "nprobe": 2**64}, {}, 422, "nprobe", "1..4096"),
        ("/v1/search", {"text": "a red circle", "ef_search": 100_000_000}, {}, 422, "ef_search", "1..4096"),
        ("/v1/generate/image", {"text": "a red circle", "seed": 2**64}, {}, 422, "seed", "less than or equal"),
        (
            "/v1/search",
            None,
            {
                "data": b'{"text":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                "headers": {"content-type": "application/json"},
            },
            400,
            "body",
            "nested too deeply",
        ),
        (
            "/v1/search",
            None,
            {"data": b'{"text": "a", "k": ' + b"9" * 5000 + b"}", "headers": {"content-type": "application/json"}},
            400,
            "body",
            "not valid JSON",
        ),
        ("/v1/search", {"text": "a red circle", "target": "videos"}, {}, 422, "target", "images"),
        ("/v1/search", {}, {}, 422, "text", "text, an image, or both"),
        (
            "/v1/search",
            None,
            {"data": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "body",
            "JSON",
        ),
        ("/v1/search", None, {"json": ["a", "list"]}, 400, "body", "JSON object"),
        (
            "/v1/search",
            None,
            {"data": b"text=hi", "headers": {"content-type": "text/plain"}},
            415,
            "body",
            "content type",
        ),
        ("/v1/embed", {"texts": ["a"] * 9}, {}, 413, "texts", "limit is 8"),
        ("/v1/embed", {}, {}, 422, "texts", "at least one"),
        ("/v1/embed", {"texts": ["a red circle"], "model": "nope"}, {}, 404, "model", "no served model is named"),
        ("/v1/embed", {"texts": ["a red circle"], "model": "classifier"}, {}, 404, "model", "does not serve embed"),
        ("/v1/classify", {"items": [{}]}, {}, 422, "items[0]", "image, a text, or both"),
        ("/v1/classify", {"items": []}, {}, 422, "items", "at least one"),
        ("/v1/classify", {"items": [{"text": "x"}], "top_k": 0}, {}, 422, "top_k", "greater than or equal"),
        ("/v1/generate/image", {"text": "a red circle", "n": 0}, {}, 422, "n", "greater than or equal"),
        ("/v1/generate/image", {"text": "a red circle", "n": 65}, {}, 422, "n", "less than or equal"),
        ("/v1/generate/image", {"text": "a red circle", "temperature": 0}, {}, 422, "temperature", "greater than"),
        ("/v1/generate/image", {"text": "  "}, {}, 422, "text", "empty"),
        ("/v1/generate/image", {"text": "a red circle", "seed": -1}, {}, 422, "seed", "greater than or equal"),
        ("/v1/caption", {"images": []}, {}, 422, "images", "at least one"),
        ("/v1/caption", {"images": ["not base64!!"]}, {}, 422, "images[0]", "base64"),
        ("/v1/caption", {"images": [b64(jpeg)], "max_length": 1}, {}, 422, "max_length", "greater than or equal"),
        ("/v1/caption", {"images": [b64(jpeg)], "beam": 17}, {}, 422, "beam", "less than or equal"),
        ("/v1/admin/reload", {"index": "/nowhere"}, {}, 403, "Authorization", "no admin keys"),
    ]


def test_every_bad_input_gets_a_4xx_naming_the_field(served: ServedApps) -> None:
    for path, body, extra, status, field, words in _bad_requests(served):
        response = post(served.open_url, path, body, **extra)
        message = assert_error(response, status, field)
        assert words.lower() in message.lower(), (path, body and str(body)[:80], message)
    assert_error(requests.get(served.open_url + "/v1/nothing-here", timeout=30), 404, None)
    assert_error(requests.get(served.open_url + "/v1/search", timeout=30), 405, None)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(served: ServedApps) -> None:
    images = [p.read_bytes() for p in val_images(served.bundles.shapes, 8)]
    texts = [f"a {size} {colour} circle" for size in ("big", "small") for colour in ("red", "blue", "green", "cyan")]
    direct = ModelService.open(str(served.bundles.clip))
    classifier = ModelService.open(str(served.bundles.classifier))
    jobs = []
    for i in range(32):
        text, image = texts[i % 8], images[(i * 3) % 8]
        if i % 2:
            jobs.append(("/v1/embed", {"texts": [text], "images": [b64(image)]}, EmbedCall([text], [image])))
        else:
            top_k, threshold = 1 + i % 4, (0.2, 0.5, 0.8)[i % 3]
            body = {"items": [{"image": b64(image), "text": text}], "top_k": top_k, "threshold": threshold}
            jobs.append(("/v1/classify", body, ClassifyCall([ClassifyItem(image, text)], top_k, threshold)))
    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(pool.map(lambda job: post(served.open_url, job[0], job[1]), jobs))
    for (path, _, call), response in zip(jobs, responses, strict=True):
        assert response.status_code == 200, response.text
        if path == "/v1/embed":
            expected = direct.embed_many([call])[0]
            np.testing.assert_allclose(response.json()["text_embeddings"], expected.text_vectors, atol=1e-5)
            np.testing.assert_allclose(response.json()["image_embeddings"], expected.image_vectors, atol=1e-5)
        else:
            expected = classifier.classify_many([call])[0]
            got = response.json()["predictions"][0]
            assert got["shapes"]["threshold"] == call.threshold
            assert got["shapes"]["labels"] == expected.predictions[0]["shapes"]["labels"]
            assert got["objects"]["value"] == pytest.approx(expected.predictions[0]["objects"]["value"], abs=1e-4)
    stats = requests.get(served.open_url + "/v1/models", timeout=30).json()["models"]
    assert stats["retrieval"]["batching"]["largest"] > 1, stats["retrieval"]["batching"]
    assert stats["classifier"]["batching"]["largest"] > 1, stats["classifier"]["batching"]


def test_query_command_generates_into_files_and_captions(served: ServedApps, tmp_path: Path) -> None:
    out = tmp_path / "samples"
    generated = run_mmray("query", served.open_url, "generate", "--text", "a red circle", "--n", "2", "--seed", "3",
                          "--out", str(out), timeout=120)  # fmt: skip
    assert generated.returncode == 0, generated.stderr[-2000:]
    answer = json.loads(generated.stdout)
    assert answer["seed"] == 3 and answer["images"] == [str(out / "000.png"), str(out / "001.png")]
    assert all(Image.open(path).size == (32, 32) for path in answer["images"])
    image = val_images(served.bundles.shapes, 1)[0]
    captioned = run_mmray("query", served.open_url, "caption", "--image", str(image), "--beam", "2", timeout=120)
    assert captioned.returncode == 0, captioned.stderr[-2000:]
    path, caption = captioned.stdout.strip().split("\t")
    assert path == str(image) and caption
