"""`mmray serve`, `mmray query` and `mmray api-key`."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer

DEFAULT_CONFIG = "serve/local.yaml"
QUERY_ENDPOINTS = ("search", "embed", "classify", "generate", "caption", "models", "health", "ready", "reload")
GET_ENDPOINTS = {"health": ("/healthz", ("status",)), "ready": ("/readyz", ()), "models": ("/v1/models", ("models",))}
"""Path and keys the answer must hold; /readyz answers 503 (an error, exit 2) while bundles load."""


def serve(
    config: Annotated[str, typer.Argument(help="Serve config YAML (the file `serve run` takes)")] = DEFAULT_CONFIG,
    port: Annotated[int | None, typer.Option(help="HTTP port [default: the config's http_options.port]")] = None,
) -> None:
    """Start the Serve application(s) of CONFIG in the foreground; Ctrl-C or SIGTERM stops them.

    Example: mmray serve serve/local.yaml
    """
    from mmray.cluster.connection import connect
    from mmray.serving.runner import read_serve_config, start_serving, stop_serving

    checked = read_serve_config(config)
    if port is not None:
        checked["http_options"] = {**dict(checked.get("http_options") or {}), "port": port}
    names = [str(application.get("name", "default")) for application in checked["applications"]]
    connect()  # from here SIGTERM stops as Ctrl-C does, while the apps start too
    try:
        address = start_serving(checked)
        typer.echo(f"mmray is serving at {address}/ (search page), {address}/docs (API); Ctrl-C stops it", err=True)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        typer.echo("stopping", err=True)
        stop_serving(names)


def _print_hits(body: dict[str, Any]) -> None:
    for hit in body["hits"]:
        meta = hit["metadata"]
        shown = meta.get("text") or (meta.get("captions") or [""])[0]
        typer.echo(f"{hit['rank']:>3}  {hit['score']:6.3f}  {hit['kind']} {hit['id']:<8} {meta.get('file_name', '')}")
        typer.echo(f"     {shown}")


def classify_items(texts: list[str], images: list[str]) -> list[dict[str, str]]:
    """Items from --text / --image: paired in order when both counts match, one text with each image,
    or one modality alone."""
    from mmray.errors import ConfigError

    if texts and images and len(texts) != len(images) and len(texts) != 1:
        raise ConfigError(f"classify: give one --text per --image, or one --text for all ({len(texts)} texts, "
                          f"{len(images)} images)")  # fmt: skip
    if not images:
        return [{"text": text} for text in texts]
    paired = texts if len(texts) == len(images) else texts * len(images)
    return [{"image": image, **({"text": paired[i]} if paired else {})} for i, image in enumerate(images)]


def query(
    url: Annotated[str, typer.Argument(help="address of the app, e.g. http://127.0.0.1:8000")],
    endpoint: Annotated[str, typer.Argument(help=f"one of {', '.join(QUERY_ENDPOINTS)}")] = "search",
    text: Annotated[list[str] | None, typer.Option(help="query or input text (repeat for several)")] = None,
    image: Annotated[list[Path] | None, typer.Option(help="image file (repeat for several)")] = None,
    k: Annotated[int, typer.Option(help="search: results to return")] = 10,
    target: Annotated[str | None, typer.Option(help="search: images or captions")] = None,
    alpha: Annotated[float, typer.Option(help="search: image weight of a fused query")] = 0.5,
    top_k: Annotated[int, typer.Option(help="classify: classes listed per multi-class head")] = 3,
    n: Annotated[int, typer.Option(help="generate: images to draw")] = 4,
    seed: Annotated[int | None, typer.Option(help="generate: noise seed [default: the server draws one]")] = None,
    beam: Annotated[int, typer.Option(help="caption: beam width (1 is greedy)")] = 1,
    out: Annotated[Path | None, typer.Option(help="generate: directory to write the PNG files to")] = None,
    model: Annotated[list[str] | None, typer.Option(help="served model name; reload: name=bundle")] = None,
    index: Annotated[str | None, typer.Option(help="reload: index bundle")] = None,
    key: Annotated[
        str | None, typer.Option(help="API key [default: $MMRAY_API_KEY; for reload $MMRAY_ADMIN_KEY]")
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, max=86_400, help="seconds to wait for the answer")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON answer")] = False,
) -> None:
    """Call a served mmray app.

    Examples: mmray query http://127.0.0.1:8000 search --text "a red circle" --k 5;
    mmray query http://127.0.0.1:8000 generate --text "a red circle" --n 4 --out samples/;
    mmray query http://127.0.0.1:8000 reload --model retrieval=runs/new-clip --index runs/new-index/index
    """
    from mmray.errors import ConfigError
    from mmray.serving.client import ApiClient, encode_image, write_data_urls

    if endpoint not in QUERY_ENDPOINTS:
        raise ConfigError(f"endpoint {endpoint!r}: choose one of {', '.join(QUERY_ENDPOINTS)}")
    if endpoint == "reload" and key is None:
        key = os.environ.get("MMRAY_ADMIN_KEY")
    client = ApiClient(url, key, timeout_s=timeout)
    texts, images = list(text or []), [encode_image(path) for path in image or []]
    chosen = model[0] if model else None
    body: Any
    if endpoint in GET_ENDPOINTS:
        route, expects = GET_ENDPOINTS[endpoint]
        body = client.get(route, expects=expects)
    elif endpoint == "embed":
        body = client.post("/v1/embed", {"texts": texts, "images": images, "model": chosen})
    elif endpoint == "classify":
        body = client.post("/v1/classify", {"items": classify_items(texts, images), "top_k": top_k, "model": chosen},
                           expects=("predictions",))  # fmt: skip
    elif endpoint == "generate":
        if len(texts) != 1:
            raise ConfigError("generate takes one --text")
        body = client.post("/v1/generate/image", {"text": texts[0], "n": n, "seed": seed, "model": chosen},
                           expects=("images",))  # fmt: skip
        if out is not None:
            body["images"] = write_data_urls(body["images"], out)
    elif endpoint == "caption":
        body = client.post("/v1/caption", {"images": images, "beam": beam, "model": chosen}, expects=("captions",))
        if not as_json:
            for path, caption in zip(image or [], body["captions"], strict=True):
                typer.echo(f"{path}\t{caption}")
            return
    elif endpoint == "reload":
        pairs = dict(entry.split("=", 1) for entry in model or [] if "=" in entry)
        if len(pairs) != len(model or []):
            raise ConfigError("reload: give models as --model name=bundle")
        local = {name: _absolute_if_local(uri) for name, uri in pairs.items()}
        index_uri = _absolute_if_local(index) if index else None
        body = client.post("/v1/admin/reload", {"models": local, "index": index_uri})
    else:
        if len(texts) > 1 or len(images) > 1:
            raise ConfigError("search takes one --text and/or one --image")
        query_body = {"text": texts[0] if texts else None, "image": images[0] if images else None, "k": k,
                      "target": target, "alpha": alpha}  # fmt: skip
        body = client.post("/v1/search", query_body, expects=("hits",))
        if not as_json:
            _print_hits(body)
            return
    typer.echo(json.dumps(body, indent=None if endpoint == "embed" else 2))


def api_key(
    keys_file: Annotated[Path | None, typer.Option(help="append the key's hash to this keys file")] = None,
) -> None:
    """Make a new API key: prints the key (shown once) and the `sha256:` line a keys file holds.

    Example: mmray api-key --keys-file serve/api-keys.txt
    """
    from mmray.serving.auth import new_key

    key, hashed = new_key()
    if keys_file is not None:
        with keys_file.open("a") as handle:
            handle.write(hashed + "\n")
        typer.echo(f"added its hash to {keys_file}", err=True)
    typer.echo(f"key:  {key}")
    typer.echo(f"hash: {hashed}")


def _absolute_if_local(uri: str) -> str:
    """A path that exists here, made absolute (the app resolves paths in its own directory); URIs as given."""
    return os.path.abspath(uri) if "://" not in uri and os.path.exists(uri) else uri
