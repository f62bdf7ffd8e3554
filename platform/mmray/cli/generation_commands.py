"""`mmray generate` (text → image) and `mmray caption` (image → text)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

BUNDLE = Annotated[str, typer.Argument(help="model bundle or training run directory (or s3:// prefix)")]


def generate(
    bundle: BUNDLE,
    text: Annotated[list[str], typer.Option(help="caption to draw; repeat for more rows")],
    n: Annotated[int, typer.Option(min=1, max=64, help="samples per caption")] = 8,
    out: Annotated[str, typer.Option(help="PNG file (or s3:// URI) to write the grid to")] = "samples.png",
    seed: Annotated[int, typer.Option(help="noise seed: equal seeds give equal images")] = 0,
    temperature: Annotated[float, typer.Option(help="noise scale, above 0")] = 1.0,
    interpolate: Annotated[
        bool, typer.Option("--interpolate", help="instead: n steps between the first two captions, one noise draw")
    ] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
) -> None:
    """Draw images of captions with a conditional VAE or GAN bundle into a PNG grid (one row per caption).

    Example: mmray generate runs/shapes-vae --text "a red circle above a blue square" --n 8 --out grid.png
    """
    from mmray import storage
    from mmray.artifacts.generators import ImageGenerator
    from mmray.errors import QueryError
    from mmray.tasks.sample_evaluation import sample_grid_png

    if not out.startswith("s3://") and Path(out).is_dir():
        raise QueryError(f"--out {out} is a directory; name the PNG file to write")
    generator = ImageGenerator.open(bundle, device)
    if interpolate:
        if len(text) != 2:
            raise QueryError(f"--interpolate needs exactly two --text captions, got {len(text)}")
        images = generator.interpolate(text[0], text[1], max(n, 2), seed, temperature)
        grid = sample_grid_png([f"{text[0]}  →  {text[1]}"], images[None])
    else:
        grid = sample_grid_png(text, generator.sample(text, n, seed, temperature))
    storage.write_bytes(out, grid)
    count = {"interpolation_steps": max(n, 2)} if interpolate else {"samples_per_caption": n}
    typer.echo(json.dumps({"out": out, "captions": text, **count, "seed": seed,
                           "model_version": generator.bundle.version}))  # fmt: skip


def caption(
    bundle: BUNDLE,
    images: Annotated[list[Path], typer.Argument(help="image files", exists=True, dir_okay=False)],
    beam: Annotated[int, typer.Option(min=1, max=16, help="beam width; 1 is greedy")] = 1,
    length_penalty: Annotated[float, typer.Option(min=0.0, help="α of the ((5 + length) / 6)^α penalty")] = 0.6,
    max_length: Annotated[int | None, typer.Option(min=2, help="most tokens, BOS and EOS included")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object per image")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
) -> None:
    """Caption images with a caption-decoder bundle.

    Example: mmray caption runs/shapes-caption data/shapes/*/images/val/000000010001.jpg --beam 3
    """
    from mmray.artifacts.generators import Captioner
    from mmray.data.image_files import decode_image

    decoded = [decode_image(path.read_bytes(), str(path)) for path in images]
    captioner = Captioner.open(bundle, device)
    captions = captioner.caption(decoded, beam, length_penalty, max_length)
    for path, text in zip(images, captions, strict=True):
        typer.echo(json.dumps({"image": str(path), "caption": text}) if as_json else f"{path}\t{text}")
