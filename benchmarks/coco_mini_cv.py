"""Retrieval on real photos, cross-validated: coco-mini's 80 COCO images × 5 captions cut into k folds.

Rows, each trained on k − 1 folds and measured on the held-out one (rsum = R@1 + R@5 + R@10 in both
directions, in %; the mean and spread over the folds):
- `shipped job`: jobs/coco-mini-clip.yaml as it ships (frozen pretrained towers, linear heads, every caption);
- `fine-tune text`: the same with the text tower's last 2 blocks trained at a tenth of the heads' lr
  (`train.tower_lr_scale=0.1`; `--fine-tune image` adds the image tower's last 2 blocks, much slower on CPUs);
- `linear InfoNCE`: two linear maps trained with InfoNCE on the same frozen features (full batch);
- `Procrustes`: both feature sets reduced by PCA, then the orthogonal map that best aligns them.

Then, on the whole of coco-mini, the cost of frozen towers: wall time of an epoch (after the first) with
`train.feature_cache=off` (the towers run at every step, as before the cache) against `auto`, and a
40-epoch run's stored checkpoints (with its frozen weights, written once) against one exported bundle.
Usage: python benchmarks/coco_mini_cv.py [--folds 5] [--fine-tune text|image|none] [--storage-root runs/bench-cv]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import torch
import torch.nn.functional as F

from mmray.artifacts.bundle_export import export_bundle
from mmray.config import TrainJob, load_job
from mmray.data.sources import load_split
from mmray.data.tensors import SplitTensors, split_to_tensors
from mmray.metrics.retrieval import retrieval_metrics
from mmray.models.registry import build_model, build_processor
from mmray.train.trainer import run_training

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "jobs" / "coco-mini-clip.yaml"
CAPTIONS = ROOT.parent / "shared" / "data" / "coco-mini" / "annotations" / "captions_train2017.json"
RESULTS = ROOT / "benchmarks" / "results"
RSUM_KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10")


def rsum(metrics: dict[str, Any]) -> float:
    return 100.0 * sum(float(metrics[key]) for key in RSUM_KEYS)


def write_folds(directory: Path, folds: int, seed: int) -> list[tuple[Path, Path, list[int]]]:
    """COCO caption files of each fold's training and held-out images."""
    coco = json.loads(CAPTIONS.read_text())
    ids = sorted(image["id"] for image in coco["images"])
    random.Random(seed).shuffle(ids)
    cut = [ids[k::folds] for k in range(folds)]
    written = []
    for k, held_out in enumerate(cut):
        held = set(held_out)
        paths = []
        for name, inside in (("train", False), ("val", True)):
            subset = {
                **coco,
                "images": [image for image in coco["images"] if (image["id"] in held) == inside],
                "annotations": [a for a in coco["annotations"] if (a["image_id"] in held) == inside],
            }
            path = directory / f"fold{k}-{name}.json"
            path.write_text(json.dumps(subset))
            paths.append(path)
        written.append((paths[0], paths[1], held_out))
    return written


def fold_job(name: str, storage_root: str, train: Path, val: Path, extra: list[str]) -> TrainJob:
    overrides = [f"name={name}", f"storage_root={storage_root}", f"data.train.captions={train}",
                 f"data.val.captions={val}", *extra]  # fmt: skip
    spec = load_job(JOB, overrides)
    assert isinstance(spec, TrainJob)
    return spec


def frozen_features(spec: TrainJob) -> tuple[SplitTensors, torch.Tensor, torch.Tensor]:
    """All of coco-mini with its frozen towers' pooled features: images (80, 1280), captions (C, 384)."""
    processor = build_processor(spec.model)
    split = split_to_tensors(load_split(spec.data, "train"), processor)
    model = build_model(spec.model, processor).eval()
    with torch.no_grad():
        images = torch.cat([model.encode_image_features(processor.normalize(split.images[i : i + 20])).pooled
                            for i in range(0, split.num_images, 20)])  # fmt: skip
        texts = model.encode_text_features(split.caption_ids, split.caption_mask.bool()).pooled
    return split, images.float(), texts.float()


def _rows(split: SplitTensors, image_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image rows, caption rows and each caption's image position among the chosen images."""
    wanted = torch.tensor(sorted(image_ids))
    image_rows = torch.nonzero(torch.isin(split.image_ids, wanted)).squeeze(1)  # (n,)
    caption_rows = torch.nonzero(torch.isin(split.caption_image, image_rows)).squeeze(1)  # (c,)
    position = torch.full((split.num_images,), -1, dtype=torch.long)
    position[image_rows] = torch.arange(image_rows.numel())
    return image_rows, caption_rows, position[split.caption_image[caption_rows]]


def linear_infonce(train: tuple[torch.Tensor, torch.Tensor, torch.Tensor], dim: int = 256, steps: int = 400) -> Any:
    """Two linear maps into `dim` dimensions trained with symmetric InfoNCE, one caption per image per step."""
    images, texts, owner = train
    torch.manual_seed(0)
    image_map, text_map = torch.nn.Linear(images.shape[1], dim), torch.nn.Linear(texts.shape[1], dim)
    log_scale = torch.nn.Parameter(torch.tensor(3.0))
    optimizer = torch.optim.Adam([*image_map.parameters(), *text_map.parameters(), log_scale], lr=1e-3)
    by_image = [torch.nonzero(owner == i).squeeze(1) for i in range(images.shape[0])]
    for _ in range(steps):
        chosen = torch.stack([rows[torch.randint(len(rows), ())] for rows in by_image])  # (n,)
        a = F.normalize(image_map(images), dim=-1)
        b = F.normalize(text_map(texts[chosen]), dim=-1)
        logits = log_scale.exp().clamp(max=100) * a @ b.T  # (n, n)
        target = torch.arange(images.shape[0])
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return lambda x: F.normalize(image_map(x), dim=-1), lambda t: F.normalize(text_map(t), dim=-1)


def procrustes(train: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> Any:
    """PCA of each modality (as many components as the training images allow), then the orthogonal map
    that best carries image components onto their captions' components."""
    images, texts, owner = train
    dim = min(images.shape[0] - 1, texts.shape[1], 64)
    image_mean, text_mean = images.mean(0), texts.mean(0)
    image_basis = torch.linalg.svd(images - image_mean, full_matrices=False).Vh[:dim].T  # (D_img, d)
    text_basis = torch.linalg.svd(texts - text_mean, full_matrices=False).Vh[:dim].T  # (D_txt, d)
    a = F.normalize((images[owner] - image_mean) @ image_basis, dim=-1)  # (c, d) each caption's image
    b = F.normalize((texts - text_mean) @ text_basis, dim=-1)  # (c, d)
    u, _, vh = torch.linalg.svd(a.T @ b)
    rotation = u @ vh  # (d, d)
    return (lambda x: F.normalize((x - image_mean) @ image_basis @ rotation, dim=-1),
            lambda t: F.normalize((t - text_mean) @ text_basis, dim=-1))  # fmt: skip


def baseline_rsum(
    fit: Any, split: SplitTensors, features: tuple[torch.Tensor, torch.Tensor], folds: list[Any]
) -> list[float]:
    images, texts = features
    scores = []
    for _, _, held_out in folds:
        train_ids = sorted(set(split.image_ids.tolist()) - set(held_out))
        image_rows, caption_rows, owner = _rows(split, train_ids)
        embed_image, embed_text = fit((images[image_rows], texts[caption_rows], owner))
        image_rows, caption_rows, owner = _rows(split, held_out)
        with torch.no_grad():
            metrics = retrieval_metrics(embed_image(images[image_rows]), embed_text(texts[caption_rows]), owner)
        scores.append(rsum(metrics))
    return scores


def epoch_seconds(storage_root: str, cache: str) -> float:
    """The median wall time of epochs 2–4 of the shipped job on all of coco-mini."""
    spec = load_job(JOB, [f"name=speed-{cache}", f"storage_root={storage_root}", "train.epochs=4",
                          "train.eval_every=4", f"train.feature_cache={cache}"])  # fmt: skip
    assert isinstance(spec, TrainJob)
    history = run_training(spec, rerun="new").history
    return statistics.median(float(row["epoch_seconds"]) for row in history[1:])


def tree_bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def checkpoint_sizes(storage_root: str) -> dict[str, float]:
    """A 40-epoch run of the shipped job: what it stores (checkpoints it keeps, frozen weights) against
    one bundle exported to stand alone."""
    spec = load_job(JOB, ["name=size-40", f"storage_root={storage_root}", "train.epochs=40", "train.eval_every=10"])
    assert isinstance(spec, TrainJob)
    outcome = run_training(spec, rerun="new")
    run_dir = Path(outcome.run_dir)
    stored = sum(tree_bytes(p) for p in run_dir.glob("checkpoint_epoch_*")) + tree_bytes(run_dir / "frozen")
    exported = Path(storage_root) / "size-40-exported"
    shutil.rmtree(exported, ignore_errors=True)
    export_bundle(outcome.model_bundle, str(exported))
    return {"stored_mb": stored / 2**20, "bundle_mb": tree_bytes(exported) / 2**20,
            "checkpoints_kept": len(list(run_dir.glob("checkpoint_epoch_*")))}  # fmt: skip


def summary(scores: list[float]) -> str:
    spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
    return f"{statistics.mean(scores):7.1f} ± {spread:4.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fine-tune", choices=("text", "image", "none"), default="text")
    parser.add_argument("--storage-root", default=str(ROOT / "runs" / "bench-cv"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = Path(args.storage_root).resolve()
    shutil.rmtree(root, ignore_errors=True)
    (root / "folds").mkdir(parents=True)
    folds = write_folds(root / "folds", args.folds, args.seed)
    started = time.perf_counter()

    rows: dict[str, list[float]] = {"shipped job": []}
    fine_tune_overrides = {
        "none": [],
        "text": ["model.text.trainable_blocks=2", "train.tower_lr_scale=0.1"],
        "image": ["model.text.trainable_blocks=2", "model.image.trainable_blocks=2", "train.tower_lr_scale=0.1"],
    }
    fine_tune = fine_tune_overrides[args.fine_tune]
    if fine_tune:
        rows[f"fine-tune {args.fine_tune}"] = []
    for k, (train, val, _) in enumerate(folds):
        rows["shipped job"].append(rsum(run_training(fold_job(f"cv{k}", str(root), train, val, [])).metrics))
        if fine_tune:
            spec = fold_job(f"cv{k}-fine-tune", str(root), train, val, fine_tune)
            rows[f"fine-tune {args.fine_tune}"].append(rsum(run_training(spec).metrics))
        print(json.dumps({"fold": k, **{name: scores[-1] for name, scores in rows.items()}}), flush=True)

    split, images, texts = frozen_features(fold_job("features", str(root), CAPTIONS, CAPTIONS, []))
    rows["linear InfoNCE"] = baseline_rsum(linear_infonce, split, (images, texts), folds)
    rows["Procrustes"] = baseline_rsum(procrustes, split, (images, texts), folds)

    slow, fast = epoch_seconds(str(root), "off"), epoch_seconds(str(root), "auto")
    sizes = checkpoint_sizes(str(root))
    minutes = (time.perf_counter() - started) / 60
    print(f"\ncoco-mini, {args.folds}-fold cross-validation (held-out images), rsum in % (max 600), mean ± sd")
    for name, scores in rows.items():
        print(f"{name:<18}{summary(scores)}   folds: {', '.join(f'{s:.1f}' for s in scores)}")
    print(f"\nepoch after the first: {slow:.2f} s with the towers at every step, {fast:.3f} s from cached "
          f"features: {slow / fast:.1f}× faster")  # fmt: skip
    print(f"40-epoch run stores {sizes['stored_mb']:.1f} MiB ({sizes['checkpoints_kept']:.0f} checkpoints + frozen "
          f"weights once); one exported bundle {sizes['bundle_mb']:.1f} MiB: "
          f"{sizes['stored_mb'] / sizes['bundle_mb']:.2f}× a bundle")  # fmt: skip
    print(f"({minutes:.1f} minutes)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "coco_mini_cv.json").write_text(json.dumps(
        {"folds": args.folds, "rsum": rows, "epoch_seconds": {"towers": slow, "cached": fast}, "sizes": sizes,
         "minutes": minutes}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
