"""Small randomly initialised bundles for serving tests: a dual encoder with an index bundle over a
generated shapes split (embedded in-process, no Ray), a fusion classifier bound to the data, a
conditional VAE and a caption decoder."""

from __future__ import annotations

from pathlib import Path

import torch

from mmray.artifacts.index_bundle import corpus_metadata, write_index_bundle
from mmray.artifacts.model_bundle import open_bundle, write_bundle
from mmray.config.fusion import FusionModelConfig
from mmray.config.generation import CaptionDecoderConfig, CaptionTaskConfig, ConditionalVaeConfig, VaeTaskConfig
from mmray.config.model import DualEncoderConfig, ModelSection, SmallCnnConfig, SmallTransformerConfig
from mmray.config.prediction import PredictTaskConfig
from mmray.config.tasks import RetrievalTaskConfig, TaskSection
from mmray.data.coco import load_coco
from mmray.data.shapes import split_paths
from mmray.data.tensors import split_to_tensors
from mmray.index.faiss_index import IndexSpec, build_index
from mmray.models.registry import build_model, build_processor
from mmray.tasks.evaluation import evaluation_context
from mmray.tasks.prediction import PredictTask
from mmray.tasks.split_embedding import embed_split


def encoder_config(embed_dim: int = 16) -> DualEncoderConfig:
    """A tiny dual encoder that center-crops (aspect kept), so a served answer that resized otherwise differs."""
    return DualEncoderConfig(
        embed_dim=embed_dim,
        image=SmallCnnConfig(kind="small_cnn", image_size=32, width=4, blocks=3, resize="center_crop"),
        text=SmallTransformerConfig(kind="small_transformer", width=16, layers=1, heads=2, max_length=16),
    )


def dual_encoder_bundle(shapes_root: Path, directory: Path, seed: int = 0) -> Path:
    train = split_paths(str(shapes_root), "train")
    dataset = load_coco(train.captions, train.images, train.instances, progress=False)
    config = encoder_config()
    processor = build_processor(config, [c for r in dataset.records for c in r.captions])
    torch.manual_seed(seed)
    write_bundle(directory, build_model(config, processor), config, processor, RetrievalTaskConfig())
    return directory


def index_bundle(shapes_root: Path, model_dir: Path, directory: Path, split: str = "val") -> Path:
    """Both corpora of `split` embedded with the bundle's model into flat indexes."""
    paths = split_paths(str(shapes_root), split)
    dataset = load_coco(paths.captions, paths.images, paths.instances, progress=False)
    bundle = open_bundle(str(model_dir))
    tensors = split_to_tensors(dataset, bundle.processor)
    images, texts = embed_split(bundle.model, tensors, evaluation_context(bundle, 64))
    caption_ids = [cid for r in dataset.records for cid in r.caption_ids]
    indexes = {
        "images": build_index(images.numpy(), tensors.image_ids.numpy(), IndexSpec(type="flat")),
        "captions": build_index(texts.numpy(), torch.tensor(caption_ids).numpy(), IndexSpec(type="flat")),
    }
    manifest = {"model_version": bundle.version, "model_bundle": str(model_dir), "split": split}
    write_index_bundle(str(directory), indexes, corpus_metadata(dataset), manifest)
    return directory


def fusion_bundle(shapes_root: Path, directory: Path, fusion: dict | None = None) -> Path:
    """A gated-fusion classifier: multilabel shapes-present head + object-count regression head."""
    train = split_paths(str(shapes_root), "train")
    dataset = load_coco(train.captions, train.images, train.instances, progress=False)
    model_config = FusionModelConfig.model_validate(
        {"encoder": encoder_config(), "fusion": fusion or {"kind": "gated"}}
    )
    processor = build_processor(model_config, [c for r in dataset.records for c in r.captions])
    heads = {"shapes": {"kind": "multilabel"}, "objects": {"kind": "regression", "target": "object_count"}}
    task = PredictTask(PredictTaskConfig.model_validate({"heads": heads}), model_config, processor)
    task_config, bound_model = task.bind(dataset)
    bound = PredictTask(task_config, bound_model, processor)
    torch.manual_seed(0)
    write_bundle(directory, bound.build_model().eval(), bound_model, processor, task_config)
    return directory


def generation_bundle(shapes_root: Path, directory: Path, kind: str) -> Path:
    """A conditional VAE (`vae`) or a caption decoder (`caption`) over the shapes vocabulary."""
    train = split_paths(str(shapes_root), "train")
    dataset = load_coco(train.captions, train.images, train.instances, progress=False)
    if kind == "vae":
        config: ModelSection = ConditionalVaeConfig(encoder=encoder_config(), latent_dim=4, width=8)
        task: TaskSection = VaeTaskConfig()
    else:
        config, task = CaptionDecoderConfig(encoder=encoder_config(), width=16, layers=1, heads=2), CaptionTaskConfig()
    processor = build_processor(config, [c for r in dataset.records for c in r.captions])
    torch.manual_seed(0)
    write_bundle(directory, build_model(config, processor).eval(), config, processor, task)
    return directory
