"""`mmray data ...`: generate the shapes dataset, inspect COCO data, prepare a job's data."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mmray.config import ConfigError, IndexJob, PipelineJob, ShapesData, TrainJob, TuneJob, load_job
from mmray.config.base import validate
from mmray.config.data import ImageCheck, LoaderOptions

if TYPE_CHECKING:
    from mmray.data.inspect import InspectionSummary

app = typer.Typer(help="Generate, inspect and prepare image-text datasets.", no_args_is_help=True)


KIND_NAMES = {
    "missing_images": "missing image files (image ids",
    "unreadable_images": "unreadable images (image ids",
    "images_without_captions": "images without captions (image ids",
    "duplicate_files": "image files under several ids (ids, the one kept first",
    "duplicate_image_ids": "image ids listed twice in 'images' (image ids",
    "empty_captions": "empty or whitespace-only captions (annotation ids",
    "duplicate_captions": "captions repeating another of their image's (annotation ids",
    "orphan_captions": "captions of an image id not in the file (annotation ids",
    "orphan_instances": "instances of an image id not in the file (annotation ids",
    "duplicate_instances": "instance ids listed twice (annotation ids, the one kept first",
    "unknown_categories": "instances of a category not in 'categories' (annotation ids",
}


def _shown(ids: list[Any], limit: int = 10) -> str:
    text = ", ".join(" = ".join(map(str, i)) if isinstance(i, list) else str(i) for i in ids[:limit])
    return text + (", …" if len(ids) > limit else "")


def _print_summary(title: str, summary: InspectionSummary, merge_hint: str) -> None:
    typer.echo(f"{title}")
    typer.echo(f"  images:            {summary.images} ({summary.usable_images} usable)")
    typer.echo(
        f"  captions:          {summary.captions} "
        f"(per image min {summary.captions_per_image_min}, mean {summary.captions_per_image_mean}, "
        f"max {summary.captions_per_image_max})"
    )
    typer.echo(f"  categories:        {summary.categories} ({summary.instances} instances)")
    typer.echo(f"  problems:          {summary.problem_count}")
    for kind, found in summary.problems.items():
        if found["count"]:
            typer.echo(f"    {found['count']} {KIND_NAMES[kind]} {_shown(found['ids'])})")
    if summary.problems.get("duplicate_files", {}).get("count"):
        typer.echo(f"    {merge_hint} makes each such file one image with all its captions")
    if summary.merged_files:
        typer.echo(f"  merged:            {summary.merged_files} image files under several ids, each now one image")
    if summary.error:
        typer.echo(f"  unusable:          {summary.error}")


@app.command("shapes")
def shapes(
    out: Annotated[str, typer.Option(help="output directory or s3:// prefix")],
    images: Annotated[int, typer.Option(help="total images, train + val")] = 11000,
    val_images: Annotated[int | None, typer.Option(help="validation images [default: images/10]")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    image_size: Annotated[int, typer.Option()] = 64,
    captions_per_image: Annotated[int, typer.Option()] = 3,
    holdout_fraction: Annotated[
        float, typer.Option(help="share of shape/colour/size/cell combinations kept out of training")
    ] = 0.05,
) -> None:
    """Write the synthetic shapes dataset (JPEGs + COCO captions/instances JSON) to OUT.

    Example: mmray data shapes --out data/shapes-small --images 2000
    """
    config = validate(
        ShapesData,
        {
            "source": "shapes",
            "root": out,
            "images": images,
            "val_images": val_images if val_images is not None else max(1, images // 10),
            "seed": seed,
            "image_size": image_size,
            "captions_per_image": captions_per_image,
            "holdout_fraction": holdout_fraction,
        },
        "mmray data shapes",
    )
    from mmray.data.shapes import generate_shapes

    summary = generate_shapes(config, out)
    typer.echo(f"shapes dataset at {summary.root}")
    for split in ("train", "val"):
        typer.echo(f"  {split}: {summary.images[split]} images, {summary.captions[split]} captions")
    typer.echo(f"  held-out object combinations: {summary.heldout_objects}")
    typer.echo(f"  val captions fitting several val images: {summary.val_captions_fitting_several_images:.2%}")
    job_keys = " ".join(f"data.{key}={value}" for key, value in summary.params.items())
    typer.echo(f"  a job uses it with: data.source=shapes data.root={out} {job_keys}")
    typer.echo(json.dumps(asdict(summary)))


@app.command("inspect")
def inspect(
    captions: Annotated[str, typer.Option(help="captions JSON, local or s3://")],
    images: Annotated[str, typer.Option(help="image directory or s3:// prefix")],
    instances: Annotated[str | None, typer.Option(help="instances JSON, local or s3://")] = None,
    decode: Annotated[bool, typer.Option(help="decode every image (else only check it exists)")] = True,
    strict: Annotated[bool, typer.Option(help="any problem makes the split unusable (exit 1)")] = False,
    merge_duplicates: Annotated[
        bool, typer.Option(help="image files under several ids become one image with all their captions")
    ] = False,
) -> None:
    """Validate a COCO-format split, print a summary and end with one JSON line of counts and problems (with
    their ids). Exit 1 when the split is unusable: no usable image, or with --strict any problem.

    Example: mmray data inspect --captions coco/annotations/captions_val2017.json --images coco/val2017 --strict
    """
    from mmray.data.coco import check_image_directory
    from mmray.data.inspect import inspect_split

    check: ImageCheck = "decode" if decode else "exists"
    check_image_directory(images, check)
    options = LoaderOptions(image_check=check, merge_duplicate_files=merge_duplicates)
    summary = inspect_split(captions, images, instances, options, strict=strict)
    _print_summary(captions, summary, "--merge-duplicates (in a job: data.merge_duplicate_files=true)")
    typer.echo(json.dumps(summary.as_dict()))
    if not summary.usable:
        raise typer.Exit(1)


def trial_job(spec: TuneJob) -> TrainJob:
    """The train job of a tune job's trials (its base job with its overrides)."""
    from mmray.tune.space import base_mapping, trial_mapping

    mapping, _ = trial_mapping(base_mapping(spec), spec.overrides, {})
    return TrainJob.model_validate(mapping)


@app.command("prepare")
def prepare(
    job: Annotated[str, typer.Argument(help="job spec YAML")],
    overrides: Annotated[list[str] | None, typer.Argument(help="section.key=value overrides")] = None,
    shards: Annotated[
        str | None,
        typer.Option(
            "--shards",
            help="also write each split's images, decoded and resized for the job's model, as Parquet shards "
            "under this directory or s3:// prefix (URI/train, URI/val); train, tune and index jobs",
        ),
    ] = None,
) -> None:
    """Materialise a job's data (generating the shapes dataset on first use) and summarise each split;
    with --shards, decode and resize its images once into shards that jobs read with data.prepared=URI.

    Example: mmray data prepare jobs/coco-clip.yaml data.image_check=decode data.on_bad_record=error
    Example: mmray data prepare jobs/coco-clip.yaml --shards s3://bucket/prepared/coco-224
    """
    from mmray.data.inspect import inspect_split
    from mmray.data.sources import resolve_splits

    spec = load_job(job, overrides or [])
    train_job = trial_job(spec) if isinstance(spec, TuneJob) else spec if isinstance(spec, TrainJob) else None
    shards_job = spec if isinstance(spec, IndexJob) else train_job
    if shards is not None and shards_job is None:
        raise ConfigError("--shards needs a train, tune or index job: the shards hold images resized for its model")
    source = train_job or spec  # a tune job's data is its trials'
    assert not isinstance(source, TuneJob)
    data = source.holdout if isinstance(source, PipelineJob) else source.data
    results: dict[str, Any] = {}
    for split, paths in resolve_splits(data).items():
        summary = inspect_split(paths.captions, paths.images, paths.instances, data)
        _print_summary(f"{split}: {paths.captions}", summary, "data.merge_duplicate_files=true")
        results[split] = summary.as_dict()
    if not all(r["usable"] for r in results.values()):
        typer.echo(json.dumps(results))
        raise typer.Exit(1)
    if shards is not None and shards_job is not None:
        for split, written in write_shards(shards_job, shards).items():
            results[split]["prepared"] = written
        how = "" if shards_job.kind == "index" else " (train.loader=shards: each worker reads its share)"
        typer.echo(f"written; read them with data.prepared={shards}{how}", err=True)
    typer.echo(json.dumps(results))


def write_shards(spec: TrainJob | IndexJob, shards: str) -> dict[str, dict[str, Any]]:
    """Each split of `spec`'s data (an index job's: the split it indexes) decoded and resized by its model's
    processor (an index job's: its bundle's) into shards under `shards`."""
    from mmray import storage
    from mmray.artifacts.manifests import resolve_model_bundle
    from mmray.artifacts.model_bundle import read_processor
    from mmray.data.prepared import prepare_split
    from mmray.data.sources import load_split, resolve_splits
    from mmray.models.registry import build_processor

    names = [spec.index.split] if isinstance(spec, IndexJob) else list(resolve_splits(spec.data))
    splits = {split: load_split(spec.data, split) for split in names}
    if isinstance(spec, IndexJob):
        processor, seed = read_processor(resolve_model_bundle(spec.checkpoint))[0], 0
    else:
        first = splits.get("train", next(iter(splits.values())))
        processor, seed = build_processor(spec.model, [c for r in first.records for c in r.captions]), spec.train.seed
    written = {}
    for split, dataset in splits.items():
        out = storage.join(shards, split)
        manifest = prepare_split(dataset, processor, out, seed, strict=spec.data.on_bad_record == "error")
        written[split] = {"uri": out, "images": manifest.images, "shards": len(manifest.shards),
                          "left_out": len(manifest.left_out)}  # fmt: skip
    return written
