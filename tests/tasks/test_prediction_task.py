"""The predict task: binding to its data (classes, names, weights, checks), bundles that reload and
predict identically, warm starts from a retrieval bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO

from mmray.artifacts.model_bundle import load_initial_weights, open_bundle, write_bundle
from mmray.config import ShapesData, TrainJob
from mmray.config.fusion import FusionModelConfig
from mmray.config.model import DualEncoderConfig, SmallCnnConfig, SmallTransformerConfig
from mmray.config.prediction import PredictTaskConfig
from mmray.config.tasks import RetrievalTaskConfig
from mmray.data.coco import load_coco
from mmray.data.processor import Processor
from mmray.data.shapes import generate_shapes, split_paths
from mmray.errors import ConfigError, DataError, WeightsError
from mmray.models.registry import build_model, build_processor
from mmray.tasks.prediction import PredictTask
from mmray.train.driver import prepare_driver_data

ENCODER = DualEncoderConfig(
    embed_dim=16,
    image=SmallCnnConfig(kind="small_cnn", image_size=32, width=4, blocks=3),
    text=SmallTransformerConfig(kind="small_transformer", width=16, layers=1, heads=2, max_length=16),
)
QUESTION_HEADS = {
    "present": {"kind": "multiclass", "target": "present", "classes": 2},
    "count": {"kind": "regression", "target": "count", "loss": "smooth_l1"},
}


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("predict") / "shapes"
    generate_shapes(ShapesData(source="shapes", images=120, val_images=40, seed=2, image_size=32), str(root))
    return root


def _task(heads: dict, fusion: dict | None = None, texts: list[str] | None = None) -> PredictTask:
    model_config = FusionModelConfig.model_validate({"encoder": ENCODER, "fusion": fusion or {"kind": "gated"}})
    processor = build_processor(model_config, texts or ["is there a red circle", "how many squares are there"])
    return PredictTask(PredictTaskConfig.model_validate({"heads": heads}), model_config, processor)


def test_coco_labels_match_pycocotools_lookups_and_bind_the_head(coco_mini: Path) -> None:
    annotations = coco_mini / "annotations"
    dataset = load_coco(
        str(annotations / "captions_train2017.json"),
        str(coco_mini / "images"),
        str(annotations / "instances_train2017.json"),
        progress=False,
    )
    task = _task({"objects": {"kind": "multilabel", "pos_weight": "balanced"}}, texts=dataset.records[0].captions)
    bound, model_config = task.bind(dataset)
    head = bound.heads["objects"]
    reference = COCO(str(annotations / "instances_train2017.json"))
    assert head.classes == len(reference.getCatIds()) == 80
    assert model_config.heads["objects"].outputs == 80
    for record in dataset.records:
        wanted = {
            c["name"]
            for c in reference.loadCats(
                [a["category_id"] for a in reference.loadAnns(reference.getAnnIds(imgIds=record.image_id))]
            )
        }
        named = {head.class_names[k] for k, on in enumerate(record.labels) if on}
        assert named == wanted, record.image_id
    positives = [sum(r.labels[k] for r in dataset.records) for k in range(80)]
    images = len(dataset.records)
    assert head.pos_weight == [(images - p) / p if p else 1.0 for p in positives]


def test_binding_names_missing_and_invalid_targets(shapes_root: Path) -> None:
    questions = split_paths(str(shapes_root), "train", "questions")
    dataset = load_coco(questions.captions, questions.images, questions.instances, progress=False)
    with pytest.raises(DataError, match="no caption has a target 'answer'; caption targets: count, present"):
        _task({"a": {"kind": "regression", "target": "answer"}}).bind(dataset)
    with pytest.raises(DataError, match=r"head 'c': target 'count' must be class indices 0..1, got \[2.0"):
        _task({"c": {"kind": "multiclass", "target": "count", "classes": 2}}).bind(dataset)
    with pytest.raises(ConfigError, match="need a multilabel head"):
        _task({"c": {"kind": "multiclass", "target": "labels", "classes": 4}}).bind(dataset)


def test_a_fused_bundle_reloads_and_predicts_identically(shapes_root: Path, tmp_path: Path) -> None:
    questions = split_paths(str(shapes_root), "train", "questions")
    dataset = load_coco(questions.captions, questions.images, questions.instances, progress=False)
    task = _task(QUESTION_HEADS, fusion={"kind": "attention", "width": 16, "heads": 2, "layers": 1})
    task_config, model_config = task.bind(dataset)
    bound = PredictTask(task_config, model_config, task.processor)
    torch.manual_seed(0)
    model = bound.build_model().eval()
    write_bundle(tmp_path / "bundle", model, model_config, bound.processor, task_config)
    loaded = open_bundle(str(tmp_path / "bundle"))
    tokens = bound.processor.tokenize(["is there a small red circle?", "how many blue shapes are there?"])
    images = bound.processor.normalize(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    with torch.no_grad():
        before = model(images, tokens.ids, tokens.mask).predictions
        after = loaded.model(images, tokens.ids, tokens.mask).predictions
    assert loaded.task_config == task_config and loaded.model_config.kind == "fusion"
    assert all(torch.equal(before[name], after[name]) for name in ("present", "count"))


def test_a_retrieval_bundle_initialises_the_fusion_encoder_with_a_grown_vocabulary(tmp_path: Path) -> None:
    clip_processor = build_processor(ENCODER, ["a red circle in the top left", "a blue square"])
    torch.manual_seed(1)
    retrieval = build_model(ENCODER, clip_processor)
    write_bundle(tmp_path / "clip", retrieval, ENCODER, clip_processor, RetrievalTaskConfig())
    tokenizer, added = clip_processor.tokenizer.extended(["how many circles are there?"])  # type: ignore[attr-defined]
    task = _task(QUESTION_HEADS)
    task = PredictTask(task.config, task.model_config, Processor(clip_processor.image, tokenizer))
    model = task.build_model()
    fresh_rows = model.encoder.text_encoder.embed.weight[-len(added) :].detach().clone()
    load_initial_weights(model, "fusion", tmp_path / "clip")
    encoder_state = model.encoder.state_dict()
    words = clip_processor.tokenizer.vocab_size
    for key, value in retrieval.state_dict().items():
        loaded = encoder_state[key][:words] if key.endswith("embed.weight") else encoder_state[key]
        assert torch.equal(loaded, value), key
    assert torch.equal(model.encoder.text_encoder.embed.weight[words:], fresh_rows), "added words keep fresh rows"
    narrower = task.model_config.model_copy(update={"encoder": ENCODER.model_copy(update={"embed_dim": 8})})
    with pytest.raises(WeightsError, match=r"shape mismatches: image_projection\.bias"):
        load_initial_weights(
            PredictTask(task.config, narrower, task.processor).build_model(), "fusion", tmp_path / "clip"
        )


def test_streaming_loader_is_refused_for_per_caption_targets(shapes_root: Path, tmp_path: Path) -> None:
    job = TrainJob.model_validate(
        {
            "kind": "train",
            "name": "q",
            "storage_root": str(tmp_path),
            "data": {
                "source": "shapes",
                "root": str(shapes_root.parent),
                "images": 120,
                "val_images": 40,
                "seed": 2,
                "image_size": 32,
                "text": "questions",
            },
            "model": {"kind": "fusion", "encoder": ENCODER.model_dump()},
            "task": {"kind": "predict", "heads": QUESTION_HEADS},
            "train": {"loader": "ray_data", "batch_size": 8},
        }
    )
    with pytest.raises(ConfigError, match=r"use train\.loader=memory"):
        prepare_driver_data(job)


def test_a_contrastive_term_needs_both_towers() -> None:
    with pytest.raises(ConfigError, match=r"task\.contrastive needs both towers"):
        model_config = FusionModelConfig.model_validate({"encoder": ENCODER, "fusion": {"kind": "image_only"}})
        task_config = PredictTaskConfig.model_validate(
            {"heads": QUESTION_HEADS, "contrastive": {"loss": {"kind": "infonce"}}}
        )
        PredictTask(task_config, model_config, build_processor(model_config, ["a red circle"]))
