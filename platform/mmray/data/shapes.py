"""The generated shapes dataset: real JPEGs and COCO JSON, deterministic for a seed."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmray import storage
from mmray.config.data import SPLITS, CocoSplit, LoaderOptions, ShapesData
from mmray.data.shapes_questions import Question, chance_levels, questions_for
from mmray.data.shapes_render import render_scene
from mmray.data.shapes_scenes import SHAPES, Scene, captions_for, choose_holdout, sample_scene, scene_key
from mmray.errors import DataError, json_object, reading
from mmray.progress import track

logger = logging.getLogger(__name__)

MANIFEST = "shapes.json"
_MAX_TRIES_PER_SCENE = 1000


@dataclass(frozen=True)
class ShapesSummary:
    """What a generated dataset holds; written to `shapes.json` (the last file written) without `root`,
    which is wherever the dataset is found, so a dataset can be moved or copied."""

    root: str
    params: dict[str, Any]
    images: dict[str, int]
    captions: dict[str, int]
    objects_per_image: dict[str, dict[str, int]]
    heldout_objects: int
    val_captions_fitting_several_images: float
    train_scenes_seen_in_val: int
    questions: dict[str, int]
    question_chance: dict[str, dict[str, dict[str, float]]]


def dataset_dir(config: ShapesData) -> str:
    """The directory of the dataset that `config` describes, below `config.root`."""
    name = (
        f"n{config.images}-v{config.val_images}-seed{config.seed}-{config.image_size}px"
        f"-c{config.captions_per_image}-h{config.holdout_fraction:g}"
        f"-q{config.presence_questions_per_image}x{config.count_questions_per_image}"
    )
    return storage.join(config.root, name)


def split_paths(root: str, split: str, text: str = "captions") -> CocoSplit:
    """The COCO files of a split; `text` picks captions_*.json or questions_*.json as its texts."""
    return CocoSplit(
        captions=storage.join(root, "annotations", f"{text}_{split}.json"),
        instances=storage.join(root, "annotations", f"instances_{split}.json"),
        images=storage.join(root, "images", split),
    )


def _sample_scenes(config: ShapesData, rng: np.random.Generator) -> tuple[dict[str, list[Scene]], int]:
    """Validation scenes (distinct) and training scenes (none equal to a validation scene)."""
    holdout = choose_holdout(rng, config.holdout_fraction)
    val: list[Scene] = []
    val_keys: set[Scene] = set()
    for _ in range(config.val_images):
        for _ in range(_MAX_TRIES_PER_SCENE):
            scene = sample_scene(rng, holdout, for_validation=True)
            if scene_key(scene) not in val_keys:
                break
        else:
            raise ValueError(f"cannot find {config.val_images} distinct validation scenes; lower val_images")
        val.append(scene)
        val_keys.add(scene_key(scene))
    train: list[Scene] = []
    while len(train) < config.images - config.val_images:
        scene = sample_scene(rng, holdout, for_validation=False)
        if scene_key(scene) not in val_keys:
            train.append(scene)
    return {"train": train, "val": val}, len(holdout)


def _write_split(out: Path, split: str, scenes: list[Scene], first_id: int, config: ShapesData) -> dict[str, Any]:
    image_dir = out / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    captions: list[dict[str, Any]] = []
    instances: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    asked: list[Question] = []
    pool = [obj for scene in scenes for obj in scene]  # "no" questions name objects of the split's other scenes
    presence, counts = config.presence_questions_per_image, config.count_questions_per_image
    for offset, scene in enumerate(track(scenes, f"drawing {split} images", total=len(scenes))):
        image_id = first_id + offset
        rng = np.random.default_rng([config.seed, image_id])
        image, drawn = render_scene(scene, config.image_size, rng)
        file_name = f"{image_id:012d}.jpg"
        image.save(image_dir / file_name, format="JPEG", quality=92)
        images.append({"id": image_id, "file_name": file_name, "width": config.image_size, "height": config.image_size})
        for text in captions_for(scene, rng, config.captions_per_image):
            captions.append({"id": len(captions) + 1, "image_id": image_id, "caption": text})
        for item in drawn:
            instances.append(
                {
                    "id": len(instances) + 1,
                    "image_id": image_id,
                    "category_id": SHAPES.index(item.obj.shape) + 1,
                    "bbox": list(item.bbox),
                    "area": item.area,
                    "segmentation": [list(item.polygon)],
                    "iscrowd": 0,
                    "attributes": {"colour": item.obj.colour, "size": item.obj.size, "cell": item.obj.cell},
                }
            )
        for question in questions_for(scene, pool, np.random.default_rng([config.seed, image_id, 1]), presence, counts):
            questions.append(
                {"id": len(questions) + 1, "image_id": image_id, "caption": question.text, **question.annotation()}
            )
            asked.append(question)
    info = {"description": f"mmray shapes dataset, {split} split", "version": "1"}
    annotations = out / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    caption_file = {"info": info, "images": images, "annotations": captions}
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)]
    instance_file = {**caption_file, "annotations": instances, "categories": categories}
    (annotations / f"captions_{split}.json").write_text(json.dumps(caption_file))
    (annotations / f"instances_{split}.json").write_text(json.dumps(instance_file))
    (annotations / f"questions_{split}.json").write_text(json.dumps({**caption_file, "annotations": questions}))
    return {
        "images": len(images),
        "captions": len(captions),
        "questions": len(questions),
        "chance": chance_levels(asked),
    }


def _share_fitting_several(scenes: list[Scene], captions_per_image: int) -> float:
    counts = Counter(scene_key(s) for s in scenes)
    several = sum(counts[scene_key(s)] > 1 for s in scenes) * captions_per_image
    return several / max(1, len(scenes) * captions_per_image)


def _generate_into(out: Path, config: ShapesData, root: str) -> ShapesSummary:
    rng = np.random.default_rng(config.seed)
    scenes, heldout_objects = _sample_scenes(config, rng)
    written = {}
    first_id = 1
    for split in SPLITS:
        written[split] = _write_split(out, split, scenes[split], first_id, config)
        first_id += len(scenes[split])
    train_keys = {scene_key(s) for s in scenes["train"]}
    return ShapesSummary(
        root=root,
        params=_generation_params(config.model_dump()),
        images={s: written[s]["images"] for s in SPLITS},
        captions={s: written[s]["captions"] for s in SPLITS},
        objects_per_image={
            s: {str(k): v for k, v in sorted(Counter(len(sc) for sc in scenes[s]).items())} for s in SPLITS
        },
        heldout_objects=heldout_objects,
        val_captions_fitting_several_images=_share_fitting_several(scenes["val"], config.captions_per_image),
        train_scenes_seen_in_val=sum(scene_key(s) in train_keys for s in scenes["val"]),
        questions={s: written[s]["questions"] for s in SPLITS},
        question_chance={s: written[s]["chance"] for s in SPLITS},
    )


def _manifest_text(summary: ShapesSummary) -> str:
    content = asdict(summary)
    del content["root"]
    return json.dumps(content, indent=2)


_NOT_GENERATION = {"root", "source", "text", *LoaderOptions.model_fields}


def _generation_params(recorded: dict[str, Any]) -> dict[str, Any]:
    """What the generated files depend on, from a config's dump or a manifest (whose older versions also
    recorded loader options); how a job reads them (loader options, text kind) is not."""
    return {key: value for key, value in recorded.items() if key not in _NOT_GENERATION}


def _publish_local(staged: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staged, target)
    except OSError:
        if not (target / MANIFEST).is_file():
            raise
        logger.info("%s was completed by another process; using it", target)


_NOT_GENERATION = {"root", "source", "text", *LoaderOptions.model_fields}


def generate_shapes(config: ShapesData, target: str) -> ShapesSummary:
    """Generate the dataset into `target`; it appears there only once complete. A complete dataset with the
    same parameters already at `target` is reused; anything else already there is an error, never overwritten."""
    existing = read_summary(target)
    if existing is not None:
        if _generation_params(existing.params) == _generation_params(config.model_dump()):
            return existing
        raise FileExistsError(
            f"{target} holds a shapes dataset with other parameters ({existing.params}); "
            "choose another output directory"
        )
    if storage.exists(target) and storage.list_files(target):
        raise FileExistsError(f"{target} exists and is not a shapes dataset; choose another output")
    logger.info("generating the shapes dataset at %s", target)
    if storage.is_s3(target):
        with tempfile.TemporaryDirectory(prefix="mmray-shapes-") as tmp:
            summary = _generate_into(Path(tmp), config, target)
            storage.upload_dir(tmp, target)
        storage.write_text(storage.join(target, MANIFEST), _manifest_text(summary))
        return summary
    final = Path(target)
    staging = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        summary = _generate_into(staging, config, target)
        (staging / MANIFEST).write_text(_manifest_text(summary))
        _publish_local(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def read_summary(root: str) -> ShapesSummary | None:
    """The manifest of a complete dataset at `root`, or None when there is none."""
    uri = storage.join(root, MANIFEST)
    if not storage.exists(uri):
        return None
    with reading(uri, DataError):
        content = json_object(storage.read_text(uri))
        content.pop("root", None)
        return ShapesSummary(root=root, **content)


def ensure_shapes(config: ShapesData) -> tuple[ShapesSummary, dict[str, CocoSplit]]:
    """Reuse the complete dataset that `config` describes, generating it first when missing. `root`
    is either a dataset itself (as `mmray data shapes --out` writes), which must have the job's
    parameters, or the parent of one dataset per parameter set."""
    own = read_summary(config.root)
    if own is not None:
        wanted = _generation_params(config.model_dump())
        changed = [key for key, value in wanted.items() if own.params.get(key) != value]
        if changed:
            shown = ", ".join(f"data.{key}: {own.params.get(key)!r} there, {wanted[key]!r} asked" for key in changed)
            raise DataError(
                f"data.root {config.root} is a shapes dataset with other parameters ({shown}); set the job's "
                "data parameters to match, or point data.root at another directory"
            )
        return own, {split: split_paths(config.root, split, config.text) for split in SPLITS}
    root = dataset_dir(config)
    return generate_shapes(config, root), {split: split_paths(root, split, config.text) for split in SPLITS}
