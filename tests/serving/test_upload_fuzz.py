"""Property: whatever bytes are uploaded, the serving decode path (header check in the ingress, full decode
in the model replica) answers with pixels of the header's size or a 413 / 422 naming the field; nothing
else is raised and nothing crashes."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings

from mmray.config.serving import RequestLimits
from mmray.serving.calls import RequestError
from mmray.serving.uploads import check_image, decode_upload
from tests.support.image_fuzz import hostile_bytes, seed_images

LIMITS = RequestLimits(max_image_pixels=1_000_000)
SEEDS = seed_images()


def test_the_seed_images_decode() -> None:
    for data in SEEDS:
        width, height = check_image(data, "image", LIMITS)
        assert decode_upload(data, "image", LIMITS.max_image_pixels).shape == (3, height, width)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hostile_bytes(SEEDS))
def test_any_upload_decodes_to_its_header_size_or_is_a_4xx(data: bytes) -> None:
    try:
        width, height = check_image(data, "image", LIMITS)
        pixels = decode_upload(data, "image", LIMITS.max_image_pixels)
    except RequestError as exc:
        assert exc.field == "image" and exc.status in (413, 422), exc
        assert exc.message and "\n" not in exc.message
        return
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, height, width)
