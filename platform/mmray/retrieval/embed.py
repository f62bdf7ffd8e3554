"""Embedding a corpus (a split's images or captions) into resumable shards of `shard_size` rows, from batches
embedded by Ray Data (`ray_embed`) or this process (`local_batches`), both running the same steps.

Shards live under a directory keyed by the plan (model version, corpus, rows and their contents, shard size),
so nothing else reuses them. Each is written atomically as one `.npz` (ids, vectors, failed ids and reasons)
once all its rows are embedded: a killed job leaves only complete shards, and a re-run embeds the missing ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mmray import storage
from mmray.artifacts.model_bundle import LoadedBundle, open_bundle
from mmray.config.indexing import CorpusKind
from mmray.data.coco import CocoDataset
from mmray.data.prepared import PixelLocations, shard_pixels
from mmray.data.processor import Processor
from mmray.errors import DataError, IndexBundleError, StorageError, json_object, reading
from mmray.models.embedding import as_embedding_model

logger = logging.getLogger(__name__)


@dataclass
class ShardPlan:
    """Which rows make up each shard of a corpus."""

    kind: CorpusKind
    shard_size: int
    rows: list[dict[str, Any]]
    model_version: str

    @property
    def digest(self) -> str:
        """Hash of everything the shards' contents depend on."""
        content = hashlib.sha256(f"{self.model_version}|{self.kind}|{self.shard_size}".encode())
        for row in self.rows:
            content.update(f"\n{row['id']}|{row['uri']}|{row['text']}".encode())
        return content.hexdigest()

    def directory(self, embeddings_root: str) -> str:
        """Where this plan's shards live: `<root>/<model_version>/<kind>-<plan digest>`."""
        return storage.join(embeddings_root, self.model_version, f"{self.kind}-{self.digest[:16]}")

    @property
    def shard_count(self) -> int:
        return -(-len(self.rows) // self.shard_size)

    def shard_rows(self, shard: int) -> list[dict[str, Any]]:
        return self.rows[shard * self.shard_size : (shard + 1) * self.shard_size]


def corpus_plan(
    dataset: CocoDataset, kind: CorpusKind, shard_size: int, model_version: str, prepared: PixelLocations | None = None
) -> ShardPlan:
    """Rows in id order: images carry their URI, captions their text. Images whose pixels were prepared
    (`prepared`) carry their shard and row there and come in the shards' order, so each is read once."""
    located = (prepared or {}) if kind == "images" else {}
    if kind == "images":
        items = [(r.image_id, r.image_uri, "") for r in dataset.records]
    else:
        items = [(cid, "", text) for r in dataset.records for cid, text in zip(r.caption_ids, r.captions, strict=True)]
    nowhere = ("", -1)
    items.sort(key=lambda item: (item[0] not in located, located.get(item[0], nowhere), item[0]))
    rows: list[dict[str, Any]] = [
        {
            "id": row_id,
            "uri": uri,
            "text": text,
            "shard": position // shard_size,
            "pixels_from": located.get(row_id, nowhere)[0],
            "pixels_row": located.get(row_id, nowhere)[1],
        }
        for position, (row_id, uri, text) in enumerate(items)
    ]
    return ShardPlan(kind=kind, shard_size=shard_size, rows=rows, model_version=model_version)


def shard_uri(directory: str, shard: int) -> str:
    return storage.join(directory, f"shard-{shard:05d}.npz")


def finished_shards(directory: str) -> set[int]:
    """Shards already written completely (atomic writes: a listed shard is a whole shard)."""
    names = (uri.rsplit("/", 1)[-1] for uri in storage.list_files(directory))
    return {
        int(name[len("shard-") : -len(".npz")]) for name in names if name.startswith("shard-") and name.endswith(".npz")
    }


class DecodeImages:
    """CPU batch task: read and preprocess each image, or take its prepared pixels (`pixels_from` a shard,
    each shard read once per batch); failures become an error string, not a crash."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = self.processor.image.size
        pixels = np.zeros((len(batch["id"]), 3, size, size), dtype=np.uint8)
        sources = [str(uri) for uri in batch.get("pixels_from", [""] * len(batch["id"]))]
        prepared: dict[str, list[np.ndarray | str] | str] = {}  # each shard's images in row order, or why not
        for source in {uri for uri in sources if uri}:
            try:
                prepared[source] = shard_pixels(source, size)
            except DataError as exc:
                prepared[source] = str(exc)
        errors = []
        for row, uri in enumerate(batch["uri"]):
            try:
                if sources[row]:
                    stored, at = prepared[sources[row]], int(batch["pixels_row"][row])
                    if isinstance(stored, str):
                        raise DataError(stored)
                    found = stored[at] if at < len(stored) else f"{sources[row]} has no row {at}"
                    if isinstance(found, str):
                        raise DataError(found)
                    pixels[row] = found
                else:
                    pixels[row] = self.processor.array_from_uri(str(uri))
                errors.append("")
            except (DataError, StorageError) as exc:
                errors.append(str(exc))
        return {**batch, "pixels": pixels, "error": np.array(errors, dtype=object)}


class EmbedRows:
    """Model actor: embeds decoded images or caption texts with a model bundle (GPU when given)."""

    def __init__(self, bundle_uri: str, kind: CorpusKind, bundle: LoadedBundle | None = None) -> None:
        bundle = bundle or open_bundle(bundle_uri)
        self.processor = bundle.processor
        self.kind = kind
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = as_embedding_model(bundle.model.to(self.device).eval(), bundle_uri)

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = np.zeros((len(batch["id"]), self.model.embed_dim), dtype=np.float32)
        if self.kind == "images":
            ok = np.array([not e for e in batch["error"]], dtype=bool)
            if ok.any():
                pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok])).to(self.device)  # (b, 3, S, S)
                embedded = self.model.embed_images(self.processor.normalize(pixels))  # (b, E)
                vectors[ok] = embedded.float().cpu().numpy()
            errors = batch["error"]
        else:
            tokens = self.processor.tokenize([str(t) for t in batch["text"]])
            embedded = self.model.embed_texts(tokens.ids.to(self.device), tokens.mask.to(self.device))  # (b, E)
            vectors = embedded.float().cpu().numpy()
            errors = np.array([""] * len(batch["id"]), dtype=object)
        return {"id": batch["id"], "shard": batch["shard"], "vector": vectors, "error": errors}


@dataclass
class _PendingShard:
    expected: int
    ids: list[int] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)


PROGRESS_EVERY_S = 10.0


def _write_shard(uri: str, pending: _PendingShard, dim: int) -> None:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        ids=np.array(pending.ids, dtype=np.int64),
        vectors=np.stack(pending.vectors) if pending.vectors else np.zeros((0, dim), np.float32),
        failed_ids=np.array([i for i, _ in pending.failed], dtype=np.int64),
        failed_reasons=np.array([r for _, r in pending.failed], dtype=str),
    )
    storage.write_bytes(uri, buffer.getvalue())


BatchSource = Callable[[list[dict[str, Any]]], Iterable[dict[str, np.ndarray]]]
"""Rows of a plan → their embedded batches (`id`, `shard`, `vector`, `error`), in row order."""


def local_batches(bundle: LoadedBundle, bundle_uri: str, kind: CorpusKind, batch_size: int) -> BatchSource:
    """Rows embedded in this process, `batch_size` at a time, by the steps the Ray Data path runs."""
    decode = DecodeImages(bundle.processor)
    embed = EmbedRows(bundle_uri, kind, bundle)

    def batches(rows: list[dict[str, Any]]) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            strings = ("uri", "text", "pixels_from")
            batch = {name: np.array([row[name] for row in chunk], dtype=object) for name in strings}
            batch |= {name: np.array([row[name] for row in chunk]) for name in ("id", "shard", "pixels_row")}
            yield embed(decode(batch) if kind == "images" else batch)

    return batches


def _check_plan(plan: ShardPlan, directory: str) -> None:
    """Record the plan beside its shards; refuse a directory whose shards were embedded for another plan."""
    uri = storage.join(directory, "plan.json")
    description = {
        "digest": plan.digest,
        "model_version": plan.model_version,
        "kind": plan.kind,
        "shard_size": plan.shard_size,
        "rows": len(plan.rows),
    }
    if storage.exists(uri):
        with reading(uri, IndexBundleError):
            recorded = json_object(storage.read_text(uri))
        if recorded.get("digest") != plan.digest:
            differing = sorted(k for k in description if recorded.get(k) != description[k])
            raise IndexBundleError(
                f"{directory} holds embeddings of another plan (differing: {', '.join(differing)}); "
                "they cannot be reused for this one"
            )
        return
    storage.write_text(uri, json.dumps(description))


def embed_corpus(plan: ShardPlan, directory: str, embedded: BatchSource) -> int:
    """Embed every shard of `plan` not yet in `directory` through `embedded`; returns how many were written."""
    _check_plan(plan, directory)
    storage.remove_temporary_files(directory)
    done = finished_shards(directory)
    todo = [shard for shard in range(plan.shard_count) if shard not in done]
    if not todo:
        return 0
    logger.info("embedding %s: %d of %d shards to do", plan.kind, len(todo), plan.shard_count)
    pending = {shard: _PendingShard(expected=len(plan.shard_rows(shard))) for shard in todo}
    written = 0
    dim = 0
    said = time.monotonic()
    for batch in embedded([row for shard in todo for row in plan.shard_rows(shard)]):
        dim = batch["vector"].shape[1]
        for row_id, shard, vector, error in zip(
            batch["id"], batch["shard"], batch["vector"], batch["error"], strict=True
        ):
            target = pending[int(shard)]
            if error:
                target.failed.append((int(row_id), str(error)))
                logger.warning("skipping %s %d: %s", plan.kind[:-1], int(row_id), error)
            else:
                target.ids.append(int(row_id))
                target.vectors.append(np.asarray(vector, dtype=np.float32))
            if len(target.ids) + len(target.failed) == target.expected:
                _write_shard(shard_uri(directory, int(shard)), target, dim)
                del pending[int(shard)]
                written += 1
                if written == len(todo) or time.monotonic() - said >= PROGRESS_EVERY_S:
                    logger.info("embedded %s: %d of %d shards", plan.kind, written, len(todo))
                    said = time.monotonic()
    if pending:
        raise RuntimeError(f"embedding stopped early: shards {sorted(pending)} of {plan.kind} are incomplete")
    return written


def read_shards(directory: str, shard_count: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """All shards of a corpus: ids (n,), vectors (n, E) and the failed rows with their reasons."""
    ids: list[np.ndarray] = []
    vectors: list[np.ndarray] = []
    failed: list[tuple[int, str]] = []
    for shard in range(shard_count):
        uri = shard_uri(directory, shard)
        with reading(uri, IndexBundleError), np.load(io.BytesIO(storage.read_bytes(uri))) as content:
            if content["ids"].shape != content["vectors"].shape[:1]:
                raise ValueError(f"ids of shape {content['ids'].shape}, vectors of {content['vectors'].shape}")
            ids.append(content["ids"])
            vectors.append(content["vectors"])
            failed.extend(zip(content["failed_ids"].tolist(), content["failed_reasons"].tolist(), strict=True))
    return np.concatenate(ids), np.concatenate(vectors).astype(np.float32), failed
