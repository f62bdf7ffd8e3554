"""The word tokenizer's BOS/EOS and decode, and the processor's one preprocessing path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmray.data.processor import ImageTransform, Processor
from mmray.data.tokenizers import WordTokenizer
from mmray.errors import ImageDecodeError

CAPTIONS = ["a small red circle in the top left.", "two shapes: a big blue square, a green triangle"]


def test_word_tokenizer_wraps_in_bos_eos_and_decodes_back() -> None:
    tokenizer = WordTokenizer.build(CAPTIONS, max_length=16)
    batch = tokenizer.encode(CAPTIONS)
    first = batch.ids[0][batch.mask[0]].tolist()
    assert first[0] == WordTokenizer.BOS and first[-1] == WordTokenizer.EOS and len(first) == 11
    assert tokenizer.decode(batch.ids) == CAPTIONS
    assert not batch.truncated.any()


def test_truncation_is_reported_and_decode_stops_at_eos() -> None:
    tokenizer = WordTokenizer.build(CAPTIONS, max_length=5)
    batch = tokenizer.encode(["a small red circle in the top left", "a circle"])
    assert batch.truncated.tolist() == [True, False]
    assert batch.ids[0].tolist() == [WordTokenizer.BOS, *tokenizer.encode(["a small red circle"]).ids[0, 1:5].tolist()]
    assert tokenizer.decode(batch.ids) == ["a small red circle", "a circle"]
    after_eos = torch.tensor(
        [[WordTokenizer.BOS, tokenizer.index["red"], WordTokenizer.EOS, tokenizer.index["circle"]]]
    )
    assert tokenizer.decode(after_eos) == ["red"]


def test_processor_saves_and_loads_with_the_same_fingerprint(tmp_path: Path) -> None:
    processor = Processor(ImageTransform(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), WordTokenizer.build(CAPTIONS, 12))
    processor.save(tmp_path)
    loaded = Processor.load(tmp_path)
    assert loaded.fingerprint() == processor.fingerprint() and loaded.image == processor.image
    other = Processor(ImageTransform(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), WordTokenizer.build(["x y"], 12))
    assert other.fingerprint() != processor.fingerprint()


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_processor_decodes_resizes_and_normalises() -> None:
    processor = Processor(ImageTransform(16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), WordTokenizer.build(CAPTIONS, 8))
    red = np.zeros((40, 60, 3), np.uint8)
    red[..., 0] = 255
    pixels = processor.pixels_from_bytes(_jpeg(red), "red.jpg")
    assert pixels.shape == (3, 16, 16) and pixels.dtype == torch.uint8
    assert pixels[0].float().mean() > 240 and pixels[1:].float().mean() < 15
    from_pil = processor.pixels_from_pil(Image.fromarray(red))
    assert (from_pil.int() - pixels.int()).abs().max() < 20, "bytes and PIL images take the same path"
    normalised = processor.normalize(pixels.unsqueeze(0))
    assert normalised.dtype == torch.float32 and normalised[0, 0].mean() > 0.9 and normalised[0, 1].mean() < -0.9

    png = io.BytesIO()
    Image.fromarray(red).save(png, "BMP")
    assert processor.pixels_from_bytes(png.getvalue(), "red.bmp").shape == (3, 16, 16), "other formats via PIL"
    data = _jpeg(red)
    not_image = (b"not an image", "not an image file mmray can read")
    for broken, reason in ((data[: len(data) // 2], "truncated"), (b"", "empty"), not_image):
        with pytest.raises(ImageDecodeError, match=rf"bad.jpg: cannot decode image: .*{reason}|bad.jpg: .*{reason}"):
            processor.pixels_from_bytes(broken, "bad.jpg")


def test_extending_a_vocabulary_keeps_every_existing_id() -> None:
    tokenizer = WordTokenizer.build(["a red circle", "a blue square"], max_length=12)
    extended, added = tokenizer.extended(["how many red circles?", "a red circle"])
    assert added == ["?", "circles", "how", "many"]
    assert extended.vocabulary[: tokenizer.vocab_size] == tokenizer.vocabulary
    assert torch.equal(extended.encode(["a red circle"]).ids, tokenizer.encode(["a red circle"]).ids)
    assert int(extended.encode(["circles"]).ids[0, 1]) == extended.index["circles"] != WordTokenizer.UNK
    assert tokenizer.extended(["a red square"]) == (tokenizer, [])
