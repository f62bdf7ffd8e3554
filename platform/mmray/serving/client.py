"""A small HTTP client of the API, for `mmray query`, the demo and the benchmark."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import requests

from mmray.errors import MmrayError

KEY_ENV = "MMRAY_API_KEY"


class ApiError(MmrayError, RuntimeError):
    """The server answered with an error: its status, message and field."""

    def __init__(self, status: int, error: str, field: str | None) -> None:
        super().__init__(f"HTTP {status}: {error}" + (f" (field {field})" if field else ""))
        self.status, self.error, self.field = status, error, field


def encode_image(path: str | Path) -> str:
    file = Path(path)
    if not file.is_file():
        raise MmrayError(f"{path}: no such image file" + (" (it is a directory)" if file.is_dir() else ""))
    return base64.b64encode(file.read_bytes()).decode()


def write_data_urls(data_urls: list[str], directory: Path) -> list[str]:
    """Write `data:image/png;base64,...` answers as numbered PNG files; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, url in enumerate(data_urls):
        path = directory / f"{i:03d}.png"
        path.write_bytes(base64.b64decode(url.split(",", 1)[1]))
        paths.append(str(path))
    return paths


class ApiClient:
    """JSON calls to a served mmray app; the API key comes from `key` or MMRAY_API_KEY."""

    def __init__(self, url: str, key: str | None = None, timeout_s: float = 60.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise MmrayError(f"{url!r} is not an http:// or https:// address")
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.timeout_s = timeout_s
        key = key or os.environ.get(KEY_ENV)
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def get(self, path: str, expects: tuple[str, ...] = ()) -> Any:
        return self._send("GET", path, None, expects)

    def post(self, path: str, body: dict[str, Any], expects: tuple[str, ...] = ()) -> Any:
        return self._send("POST", path, body, expects)

    def _send(self, method: str, path: str, json: dict[str, Any] | None, expects: tuple[str, ...]) -> Any:
        """The answer's JSON object; an error status is an ApiError, anything but the API's answer an MmrayError
        naming the address (a web page, another service)."""
        where = self.url + path
        try:
            response = self.session.request(method, where, json=json, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise MmrayError(f"cannot reach {self.url}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            shown = (response.text[:200] or response.reason or "").strip()
            if response.status_code >= 400:
                raise ApiError(response.status_code, f"{where}: not an mmray API answer: {shown}", None)
            raise MmrayError(f"{where}: not an mmray API (the answer is not a JSON object: {shown!r})")
        if response.status_code >= 400:
            raise ApiError(response.status_code, str(body.get("error", body)), body.get("field"))
        missing = [key for key in expects if key not in body]
        if missing:
            raise MmrayError(f"{where}: not an mmray API (its answer has no {', '.join(missing)})")
        return body
