"""Photos tagged with an EXIF orientation (phones store them sideways) are turned upright wherever a model
sees them, unless the processor keeps the stored pixels (bundles made before the setting)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmray.data.image_files import decode_image
from mmray.data.images import decode_rgb
from mmray.data.prepared import PreparedManifest, check_prepared, pixel_settings
from mmray.data.processor import PROCESSOR_FILE, ImageTransform, Processor
from mmray.data.tokenizers import WordTokenizer
from mmray.errors import DataError
from mmray.serving.uploads import decode_upload

ORIENTATION_TAG = 0x0112
ROTATE_90_CLOCKWISE = 6


def _left_red_right_blue() -> np.ndarray:
    stored = np.zeros((40, 60, 3), np.uint8)  # (H, W, 3) as stored: wider than high
    stored[:, :30, 0] = 255
    stored[:, 30:, 2] = 255
    return stored


def _encoded(fmt: str, orientation: int | None, exif_bytes: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    options: dict[str, object] = {"quality": 95} if fmt == "JPEG" else {}
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = orientation
        options["exif"] = exif.tobytes()
    if exif_bytes is not None:
        options["exif"] = exif_bytes
    Image.fromarray(_left_red_right_blue()).save(buffer, fmt, **options)
    return buffer.getvalue()


def _is_upright(pixels: torch.Tensor) -> bool:
    """Rotated 90° clockwise, the stored left (red) half is on top and the image is higher than wide."""
    top, bottom = pixels[:, :25].float().mean(dim=(1, 2)), pixels[:, 35:].float().mean(dim=(1, 2))  # (3,)
    return pixels.shape[1:] == (60, 40) and top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]


def _is_as_stored(pixels: torch.Tensor) -> bool:
    left, right = pixels[:, :, :25].float().mean(dim=(1, 2)), pixels[:, :, 35:].float().mean(dim=(1, 2))  # (3,)
    return pixels.shape[1:] == (40, 60) and left[0] > 200 > left[2] and right[2] > 200 > right[0]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_tagged_image_decodes_upright_or_as_stored(fmt: str) -> None:
    data = _encoded(fmt, ROTATE_90_CLOCKWISE)
    assert _is_upright(decode_rgb(data, f"phone.{fmt.lower()}"))
    assert _is_as_stored(decode_rgb(data, f"phone.{fmt.lower()}", upright=False))
    assert _is_as_stored(decode_rgb(_encoded(fmt, None), "plain")), "no tag: the pixels as stored"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_damaged_or_out_of_range_tag_is_ignored(fmt: str) -> None:
    assert _is_as_stored(decode_rgb(_encoded(fmt, 9), "odd-tag"))
    assert _is_as_stored(decode_rgb(_encoded(fmt, None, exif_bytes=b"Exif\x00\x00MM\x00*garbage"), "bad-exif"))


def test_the_processor_follows_its_orientation_setting() -> None:
    tokenizer = WordTokenizer.build(["a red square"], 8)
    data = _encoded("JPEG", ROTATE_90_CLOCKWISE)
    upright = Processor(ImageTransform(60, (0.5,) * 3, (0.5,) * 3, resize="center_crop"), tokenizer)
    as_stored = Processor(ImageTransform(60, (0.5,) * 3, (0.5,) * 3, "center_crop", "stored"), tokenizer)
    assert upright.image.orientation == "exif", "new processors turn photos upright"
    top_red = upright.pixels_from_bytes(data)[0, :10].float().mean()  # (3, 60, 60): the centre 60 × 60 of 60 × 90
    assert top_red > 200
    left_red = as_stored.pixels_from_bytes(data)[0, :, :10].float().mean()
    assert left_red > 200 and as_stored.pixels_from_bytes(data)[0, :10, 50:].float().mean() < 30

    opened = Image.open(io.BytesIO(data))  # a PIL image given to the library (search, captioning)
    assert upright.pixels_from_pil(opened)[0, :10].float().mean() > 200
    assert as_stored.pixels_from_pil(opened)[0, :, :10].float().mean() > 200
    assert opened.size == (60, 40), "the caller's image is left as it is"


def test_a_bundle_saved_before_the_setting_keeps_the_stored_pixels_and_its_fingerprint(tmp_path: Path) -> None:
    tokenizer = WordTokenizer.build(["a red square"], 8)
    as_stored = Processor(ImageTransform(32, (0.5,) * 3, (0.25,) * 3, orientation="stored"), tokenizer)
    as_stored.save(tmp_path)
    saved = json.loads((tmp_path / PROCESSOR_FILE).read_text())
    assert saved["image"] == {"size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}, "the file bundles always had"
    loaded = Processor.load(tmp_path)
    assert loaded.image.orientation == "stored" and loaded.fingerprint() == as_stored.fingerprint()

    upright = Processor(ImageTransform(32, (0.5,) * 3, (0.25,) * 3), tokenizer)
    assert upright.fingerprint() != as_stored.fingerprint(), "cached features of the two are not shared"
    upright.save(tmp_path / "new")
    assert Processor.load(tmp_path / "new").image.orientation == "exif"


def test_a_split_prepared_as_stored_is_refused_for_a_job_that_turns_photos_upright() -> None:
    as_stored = ImageTransform(32, (0.5,) * 3, (0.5,) * 3, orientation="stored")
    upright = ImageTransform(32, (0.5,) * 3, (0.5,) * 3)
    assert pixel_settings(as_stored) == {"size": 32, "resize": "stretch"}, "what manifests before the setting hold"
    manifest = PreparedManifest("mmray-prepared-split/1", 0, [], pixel_settings(as_stored), "", {})
    with pytest.raises(DataError, match="prepare again"):
        check_prepared(manifest, "s3://b/prepared", None, upright)  # type: ignore[arg-type]


def test_uploads_and_displayed_images_are_upright() -> None:
    data = _encoded("JPEG", ROTATE_90_CLOCKWISE)
    assert _is_upright(decode_upload(data, "image"))
    assert _is_as_stored(decode_upload(data, "image", upright=False))
    shown = torch.from_numpy(np.array(decode_image(data, "phone.jpg"))).permute(2, 0, 1)  # (3, H, W)
    assert _is_upright(shown), "search results and samples are shown as a viewer shows them"
