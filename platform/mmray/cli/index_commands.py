"""`mmray index` and `mmray search`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mmray.cli.jobs import JOB, OVERRIDES, disconnect_ray, load_job_of_kind
from mmray.config import IndexJob


def index(
    job: JOB,
    overrides: OVERRIDES = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local", help="embed in this process without Ray (index.runner=local; small splits embed here anyway)"
        ),
    ] = False,
) -> None:
    """Embed a split and build its faiss index bundle; the last line is JSON. Rows are embedded on Ray Data,
    or in this process for up to index.local_max_rows rows (index.runner: auto | ray_data | local).

    Example: mmray index jobs/shapes-index.yaml checkpoint=runs/shapes-clip
    """
    spec = load_job_of_kind(job, [*(overrides or []), *(["index.runner=local"] if local else [])], IndexJob, "index")
    from mmray.retrieval.indexing import run_index_job

    outcome = run_index_job(spec)
    disconnect_ray()
    typer.echo(json.dumps(outcome.summary()))


def search(
    bundle: Annotated[str, typer.Argument(help="index bundle directory or s3:// prefix")],
    text: Annotated[str | None, typer.Option(help="query text")] = None,
    image: Annotated[Path | None, typer.Option(help="query image file", exists=True, dir_okay=False)] = None,
    k: Annotated[int, typer.Option(min=1, help="results to return")] = 10,
    target: Annotated[
        str | None, typer.Option(help="images or captions [default: captions for an image alone, else images]")
    ] = None,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="image weight of a fused image + text query")] = 0.5,
    nprobe: Annotated[int | None, typer.Option(min=1, help="IVF lists to probe")] = None,
    ef_search: Annotated[int | None, typer.Option(min=1, help="HNSW search breadth")] = None,
    model: Annotated[str | None, typer.Option(help="model bundle [default: the one the index was built with]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
    png: Annotated[str | None, typer.Option(help="also draw the query and its results into this PNG")] = None,
) -> None:
    """Search an index bundle with a text, an image, or both (fused).

    Examples: mmray search runs/shapes-index/index --text "a small red circle in the top left corner" --k 5;
    mmray search runs/shapes-index/index --image photo.jpg --text "but blue" --alpha 0.6 --png hits.png
    """
    from mmray.data.image_files import decode_image
    from mmray.errors import QueryError
    from mmray.retrieval.queries import default_target
    from mmray.retrieval.search import Searcher

    if target not in (None, "images", "captions"):
        raise QueryError(f"--target must be images or captions, got {target!r}")
    if text is None and image is None:
        raise QueryError("a search needs --text, --image, or both")
    if text is not None and not text.strip():
        raise QueryError("--text is empty")
    if png and not png.startswith("s3://") and Path(png).is_dir():
        raise QueryError(f"--png {png} is a directory; name the PNG file to write")
    query_image = decode_image(image.read_bytes(), str(image)) if image else None
    searcher = Searcher.open(bundle, model)
    hits = searcher.search(text, query_image, k, target, alpha, nprobe, ef_search)  # type: ignore[arg-type]
    chosen = default_target(text is not None, target)  # type: ignore[arg-type]
    if len(hits) < k:
        held = searcher.index.indexes[chosen].size
        typer.echo(f"note: --k {k}: the {chosen} index holds {held}; showing all {len(hits)}", err=True)
    if png:
        from mmray import storage
        from mmray.retrieval.sheet import retrieval_sheet_png

        sheet = retrieval_sheet_png(text, query_image, searcher.result_images(hits), f"mmray search: top {len(hits)}")
        storage.write_bytes(png, sheet)
        typer.echo(f"wrote {png}", err=True)
    if as_json:
        typer.echo(json.dumps({"query": {"text": text, "image": str(image) if image else None},
                               "hits": [h.as_dict() for h in hits]}))  # fmt: skip
        return
    for hit in hits:
        shown = hit.metadata.get("text") or hit.metadata.get("file_name", "")
        extra = (
            hit.metadata.get("captions", [""])[0] if hit.kind == "image" else f"image {hit.metadata.get('image_id')}"
        )
        typer.echo(f"{hit.rank:>3}  {hit.score:6.3f}  {hit.kind} {hit.id:<12} {shown}  ({extra})")
