"""HTTP helpers for the serving tests."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import requests
from PIL import Image


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def val_images(shapes: Path, count: int) -> list[Path]:
    return sorted((shapes / "images" / "val").glob("*.jpg"))[:count]


def image_id(path: Path) -> int:
    return int(path.stem)


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def post(url: str, path: str, body: dict | None = None, key: str | None = None, **kwargs: object) -> requests.Response:
    headers = dict(kwargs.pop("headers", None) or {})  # type: ignore[call-overload]
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if body is not None:
        kwargs["json"] = body
    return requests.post(url + path, headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]


def assert_error(response: requests.Response, status: int, field: str | None) -> str:
    """A JSON error with the status and field expected; returns the message."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    assert set(body) == {"error", "field"}, body
    assert body["field"] == field, body
    assert "Traceback" not in body["error"]
    return str(body["error"])
