"""The serving classes without Serve: upload checks, API keys, prediction descriptions, bundle
pairing, batched calls that keep each call's own input and errors, and the Serve config files."""

from __future__ import annotations

import base64
import io
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from mmray.config.prediction import PredictTaskConfig
from mmray.config.serving import AuthSettings, RequestLimits
from mmray.errors import BundleError, ConfigError, IndexBundleError
from mmray.serving.auth import KeyChecker, hash_key, new_key, read_key_hashes
from mmray.serving.calls import ClassifyCall, ClassifyItem, EmbedCall, EmbedResult, RequestError, SearchCall
from mmray.serving.model_service import ModelService
from mmray.serving.predictions import describe_predictions
from mmray.serving.retrieval_service import RetrievalService
from mmray.serving.runner import check_serve_config, read_serve_config
from mmray.serving.schemas import SearchBody, parse_body
from mmray.serving.state import model_for, resolve_state
from mmray.serving.uploads import check_image, decode_upload, from_base64
from tests.serving.conftest import Bundles
from tests.serving.helpers import png_bytes, val_images
from tests.support.serving_bundles import fusion_bundle

REPO_ROOT = Path(__file__).resolve().parents[2]


def _jpeg(width: int = 40, height: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_uploads_are_checked_from_their_header_before_decoding() -> None:
    limits = RequestLimits(max_image_pixels=10_000, max_image_bytes=50_000)
    assert check_image(_jpeg(), "image", limits) == (40, 30)
    with pytest.raises(RequestError, match="is 200×200 = 40000 pixels; the limit is 10000") as bomb:
        check_image(png_bytes(200, 200), "image", limits)
    assert bomb.value.status == 413 and bomb.value.field == "image"
    with pytest.raises(RequestError, match="is empty"):
        check_image(b"", "images[2]", limits)
    with pytest.raises(RequestError, match="the limit is 50000") as large:
        check_image(b"\xff" * 60_000, "image", limits)
    assert large.value.status == 413
    with pytest.raises(RequestError, match="not an image") as text:
        check_image(b"hello, I am text", "image", limits)
    assert text.value.status == 422
    with pytest.raises(RequestError, match="decode") as truncated:
        decode_upload(_jpeg(400, 300)[:600], "image")
    assert truncated.value.field == "image"


def test_base64_accepts_data_urls_and_refuses_anything_else() -> None:
    data = _jpeg()
    assert from_base64(base64.b64encode(data).decode(), "image") == data
    assert from_base64("data:image/jpeg;base64," + base64.b64encode(data).decode(), "image") == data
    with pytest.raises(RequestError, match="not valid base64") as bad:
        from_base64("abc$%^", "images[1]")
    assert bad.value.field == "images[1]"


def test_api_keys_come_from_the_environment_a_hashed_file_and_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, hashed = new_key()
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"# comment\n\n{hashed}\n")
    monkeypatch.setenv("MY_KEYS", "alpha, beta")
    settings = AuthSettings(keys_env="MY_KEYS", keys_file=str(keys_file), key_hashes=[hash_key("gamma")])
    checker = KeyChecker(read_key_hashes(settings))
    assert checker.enabled
    for accepted in (key, "alpha", "beta", "gamma"):
        assert checker.allows(f"Bearer {accepted}") and checker.allows(f"bearer {accepted}")
    for refused in (None, "", "Bearer", "Bearer delta", f"Basic {key}", key):
        assert not checker.allows(refused)
    assert KeyChecker([]).allows(None), "no keys: open"
    keys_file.write_text("sha256:1234\n")
    with pytest.raises(ConfigError, match="line 1 is not 'sha256:<64 hex digits>'"):
        read_key_hashes(AuthSettings(keys_env="MY_KEYS", keys_file=str(keys_file)))
    with pytest.raises(ConfigError, match="does not exist"):
        read_key_hashes(AuthSettings(keys_file=str(tmp_path / "missing.txt")))
    with pytest.raises(ValueError, match="is not 'sha256:<64 hex digits>'"):
        AuthSettings(key_hashes=["plaintext-key"])


def test_predictions_are_described_with_names_and_each_calls_parameters() -> None:
    task = PredictTaskConfig.model_validate(
        {
            "heads": {
                "colour": {"kind": "multiclass", "target": "c", "classes": 3, "class_names": ["red", "green", "blue"]},
                "shapes": {"kind": "multilabel", "classes": 2, "class_names": ["circle", "square"], "threshold": 0.5},
                "count": {"kind": "regression", "target": "object_count"},
            }
        }
    )
    outputs = {
        "colour": torch.tensor([0.0, 2.0, 1.0]),
        "shapes": torch.tensor([0.0, 3.0]),
        "count": torch.tensor([2.5]),
    }
    described = describe_predictions(task, outputs, top_k=2, threshold=None)
    assert described["colour"]["label"] == "green" and [t["label"] for t in described["colour"]["top"]] == [
        "green",
        "blue",
    ]
    assert described["colour"]["probability"] == pytest.approx(float(torch.softmax(outputs["colour"], 0)[1]), 1e-5)
    assert described["shapes"]["labels"] == ["circle", "square"] and described["shapes"]["threshold"] == 0.5
    assert describe_predictions(task, outputs, 1, 0.9)["shapes"]["labels"] == ["square"]
    assert described["count"] == {"kind": "regression", "value": 2.5}


def test_an_index_pairs_only_with_a_served_model_of_its_version(bundles: Bundles) -> None:
    state = resolve_state({"a": str(bundles.clip), "b": str(bundles.clip_b)}, str(bundles.index_b))
    assert state.index is not None and state.index.model == "b"
    assert model_for(state, "embed", None) == "b", "the index's partner embeds by default"
    assert model_for(state, "embed", "a") == "a"
    with pytest.raises(IndexBundleError, match="was built with model version") as refused:
        resolve_state({"a": str(bundles.clip)}, str(bundles.index_b))
    assert state.models["a"].version in str(refused.value) and state.models["b"].version in str(refused.value)
    with pytest.raises(Exception, match="no served model answers classify"):
        model_for(state, "classify", None)


def test_what_a_bundle_serves_comes_from_its_manifest_or_for_an_older_bundle_from_its_kind(
    bundles: Bundles, tmp_path: Path
) -> None:
    """The Ingress resolves a reload from manifests alone, without the model code (tests/test_light_imports.py)."""
    assert json.loads((bundles.classifier / "bundle.json").read_text())["serves"] == ["classify"]
    state = resolve_state({"clip": str(bundles.clip), "classifier": str(bundles.classifier)}, None)
    assert (state.models["clip"].serves, state.models["classifier"].serves) == (("embed",), ("classify",))
    for listed, shown in (
        (None, None),
        (["embed", "paint"], "'serves' must list endpoint groups"),
        ("embed", "'serves' must list .* got 'embed'"),
    ):
        older = tmp_path / f"older-{len(str(listed))}"
        shutil.copytree(bundles.clip, older)
        manifest = json.loads((older / "bundle.json").read_text())
        manifest["serves"] = listed
        if listed is None:
            del manifest["serves"]
        (older / "bundle.json").write_text(json.dumps(manifest))
        if shown is None:
            assert resolve_state({"clip": str(older)}, None).models["clip"].serves == ("embed",)
        else:
            with pytest.raises(BundleError, match=rf"{older}: bundle\.json {shown}"):
                resolve_state({"clip": str(older)}, None)


def test_a_batch_keeps_each_calls_inputs_and_errors_apart(bundles: Bundles) -> None:
    service = ModelService.open(str(bundles.clip))
    images = [p.read_bytes() for p in val_images(bundles.shapes, 3)]
    calls = [
        EmbedCall(["a red circle", "a blue square"], [images[0]]),
        EmbedCall([], [images[1], b"broken image bytes"]),
        EmbedCall(["a green triangle"], [images[2], images[1]]),
    ]
    batched = service.embed_many(calls)
    assert isinstance(batched[1], RequestError) and batched[1].field == "images[1]"
    for call, result in zip(calls, batched, strict=True):
        if isinstance(result, EmbedResult):
            alone = service.embed_many([call])[0]
            assert isinstance(alone, EmbedResult)
            torch.testing.assert_close(torch.from_numpy(result.text_vectors), torch.from_numpy(alone.text_vectors))
            torch.testing.assert_close(torch.from_numpy(result.image_vectors), torch.from_numpy(alone.image_vectors))
    with pytest.raises(RequestError, match="cannot classify") as wrong:
        service.classify_many([ClassifyCall([ClassifyItem(text="a")])])
    assert wrong.value.status == 404


def test_a_search_reads_query_vectors_that_arrive_read_only(bundles: Bundles) -> None:
    """Vectors from Ray's object store are read-only NumPy arrays: searched without a warning, same hits."""
    (embedded,) = ModelService.open(str(bundles.clip)).embed_many([EmbedCall(["a red circle"], [])])
    assert isinstance(embedded, EmbedResult)
    service = RetrievalService.open(str(bundles.index))
    writable = service.search(SearchCall(text="a red circle", k=3), embedded)
    embedded.text_vectors.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_only = service.search(SearchCall(text="a red circle", k=3), embedded)
    assert [hit["id"] for hit in read_only.hits] == [hit["id"] for hit in writable.hits]


def test_a_fusion_that_needs_both_modalities_refuses_only_the_call_missing_one(
    bundles: Bundles, tmp_path: Path
) -> None:
    service = ModelService.open(str(fusion_bundle(bundles.shapes, tmp_path / "concat", {"kind": "concat"})))
    image = val_images(bundles.shapes, 1)[0].read_bytes()
    results = service.classify_many(
        [ClassifyCall([ClassifyItem(image, "a red circle")]), ClassifyCall([ClassifyItem(text="only a text")])]
    )
    assert not isinstance(results[0], RequestError) and "shapes" in results[0].predictions[0]
    assert isinstance(results[1], RequestError) and results[1].field == "items[0]"
    assert "image input is missing" in results[1].message


def test_bodies_refuse_unknown_fields_and_wrong_types() -> None:
    with pytest.raises(RequestError, match="unknown field") as unknown:
        parse_body(SearchBody, {"text": "a", "kk": 3})
    assert unknown.value.field == "kk"
    with pytest.raises(RequestError) as wrong:
        parse_body(SearchBody, {"text": "a", "k": "3"})
    assert wrong.value.field == "k"
    assert parse_body(SearchBody, {"text": "a", "k": "3"}, strict=False).k == 3, "form fields arrive as text"


@pytest.mark.parametrize("name", ["local.yaml", "local-all.yaml", "config.yaml"])
def test_the_serve_configs_validate_and_their_import_paths_resolve(name: str) -> None:
    from ray._common.utils import import_attr
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((REPO_ROOT / "serve" / name).read_text())
    ServeDeploySchema.model_validate(raw)
    checked = read_serve_config(str(REPO_ROOT / "serve" / name))
    for application in checked["applications"]:
        assert callable(import_attr(application["import_path"]))
        assert all(Path(uri).is_absolute() or uri.startswith("s3://") for uri in application["args"]["models"].values())


def test_a_serve_config_with_mistakes_is_refused_naming_them(tmp_path: Path) -> None:
    base = yaml.safe_load((REPO_ROOT / "serve" / "local.yaml").read_text())
    wrong_name = {**base, "applications": [{**base["applications"][0], "deployments": [{"name": "model_clip"}]}]}
    with pytest.raises(ConfigError, match=r"no deployment is named 'model_clip'; this app has .*model_retrieval"):
        check_serve_config(wrong_name, "cfg")
    bad_args = {**base, "applications": [{**base["applications"][0], "args": {"models": {}, "idx": "x"}}]}
    with pytest.raises(ConfigError, match="idx"):
        check_serve_config(bad_args, "cfg")
    with pytest.raises(ConfigError, match="cfg"):
        check_serve_config({**base, "http_options": {"port": "eighty"}}, "cfg")
    with pytest.raises(ConfigError, match="it is a directory"):
        read_serve_config(str(tmp_path))
    app = base["applications"][0]
    listed = {**base, "applications": [{**app, "deployments": ["model_retrieval"]}]}
    with pytest.raises(ConfigError, match=r"cfg: .*deployments"):  # Ray's schema raised AttributeError on it
        check_serve_config(listed, "cfg")
    for user_config, shown in (({"max_batch_sise": 16}, "max_batch_sise"), ({"max_batch_size": 0}, "max_batch_size"),
                               ({"batch_wait_timeout_s": float("inf")}, "batch_wait_timeout_s")):  # fmt: skip
        deployments = [{"name": "model_retrieval", "user_config": user_config}]
        with pytest.raises(ConfigError, match=rf"model_retrieval.*user_config.*{shown}"):
            check_serve_config({**base, "applications": [{**app, "deployments": deployments}]}, "cfg")
    with pytest.raises(ConfigError, match="batch_wait_timeout_s"):  # a lone request waited for ever
        check_serve_config({**base, "applications": [{**app, "args": {**app["args"],
                           "batching": {"batch_wait_timeout_s": float("inf")}}}]}, "cfg")  # fmt: skip


def test_device_cuda_needs_a_gpu_in_every_model_replica() -> None:
    base = yaml.safe_load((REPO_ROOT / "serve" / "local.yaml").read_text())
    application = base["applications"][0]
    on_cuda = {**application, "args": {**application["args"], "device": "cuda"}}
    with pytest.raises(ConfigError, match=r"device is cuda, but model_retrieval has no ray_actor_options.num_gpus"):
        check_serve_config({**base, "applications": [on_cuda]}, "cfg")
    deployments = [
        {"name": f"model_{name}", "ray_actor_options": {"num_gpus": 0.5}} for name in on_cuda["args"]["models"]
    ]
    checked = check_serve_config({**base, "applications": [{**on_cuda, "deployments": deployments}]}, "cfg")
    assert checked["applications"][0]["args"]["device"] == "cuda"


def test_query_pairs_classify_texts_with_images() -> None:
    from mmray.cli.serve_commands import classify_items

    assert classify_items(["a"], ["I1", "I2"]) == [{"image": "I1", "text": "a"}, {"image": "I2", "text": "a"}]
    assert classify_items(["a", "b"], ["I1", "I2"]) == [{"image": "I1", "text": "a"}, {"image": "I2", "text": "b"}]
    assert classify_items(["a", "b"], []) == [{"text": "a"}, {"text": "b"}]
    assert classify_items([], ["I1"]) == [{"image": "I1"}]
    with pytest.raises(ConfigError, match="one --text per --image"):
        classify_items(["a", "b"], ["I1", "I2", "I3"])


def test_query_and_admin_keys_are_scoped() -> None:
    from mmray.serving.auth import Access

    query_only = Access([hash_key("q")], [])
    assert not query_only.may_query(None) and not query_only.may_query("Bearer wrong")
    assert query_only.may_query("Bearer q") and not query_only.may_administer("Bearer q")
    both = Access([hash_key("q")], [hash_key("a")])
    assert both.may_query("Bearer a") and both.may_administer("Bearer a") and not both.may_administer("Bearer q")
    admin_only = Access([], [hash_key("a")])
    assert admin_only.may_query(None) and admin_only.may_administer("Bearer a") and not admin_only.may_administer(None)
    open_app = Access([], [])
    assert open_app.may_query(None) and not open_app.may_administer(None)
