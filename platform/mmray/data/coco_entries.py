"""What each entry of a COCO file must hold before it is read: the keys it is read by, with values of their
kind; else a `DataError` naming the file, section, entry and key."""

from __future__ import annotations

import math
import posixpath
import reprlib
from collections.abc import Callable
from typing import Any

from mmray.errors import DataError

Fields = dict[str, dict[str, str]]
"""Per section, the keys each entry must have and the kind of their values (a key of `VALUE_KINDS`)."""

CAPTION_FIELDS: Fields = {
    "images": {"id": "integer", "file_name": "inner_path"},
    "annotations": {"id": "integer", "image_id": "integer"},
}
INSTANCE_FIELDS: Fields = {
    "images": {"id": "integer"},
    "annotations": {"id": "integer", "image_id": "integer", "category_id": "integer", "bbox": "box"},
    "categories": {"id": "integer", "name": "name"},
}
OPTIONAL_FIELDS: Fields = {"images": {"width": "size", "height": "size"}, "annotations": {"caption": "text"}}
"""Keys checked where present: an image's size is needed only to rasterise its instances; a caption may be
null (reported as empty)."""


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_inner_path(value: Any) -> bool:
    """A non-empty relative path that stays below the folder it is joined to (no `..` leading out of it)."""
    if not isinstance(value, str) or value.startswith(("/", "\\")):
        return False
    inner = posixpath.normpath(value.replace("\\", "/"))
    return inner not in (".", "..") and not inner.startswith("../")


def is_number(value: Any) -> bool:
    """An integer or a finite float (JSON's NaN and Infinity are not numbers here)."""
    return _is_integer(value) or (isinstance(value, float) and math.isfinite(value))


VALUE_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "integer": ("an integer", _is_integer),
    "name": ("a non-empty string", lambda v: isinstance(v, str) and bool(v)),
    "inner_path": ("a path inside the images folder (relative, no '..' out of it)", _is_inner_path),
    "size": ("a positive number", lambda v: is_number(v) and v > 0),
    "text": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "box": (
        "[x, y, width, height] numbers",
        lambda v: isinstance(v, list) and len(v) == 4 and all(is_number(x) for x in v),
    ),
}


def entry_name(section: str, index: int, entry: dict[str, Any]) -> str:
    known = entry.get("id")
    return f"{section}[{index}]" + (f" (id {known})" if _is_integer(known) else "")


def check_entries(uri: str, content: dict[str, Any], fields: Fields) -> None:
    """Refuse (`DataError`) the first entry of a section lacking a key of `fields` or holding a wrong value."""
    for section, required in fields.items():
        entries = content[section]
        if not isinstance(entries, list):
            raise DataError(f"{uri}: {section!r} must be a list of entries, got {type(entries).__name__}")
        optional = OPTIONAL_FIELDS.get(section, {})
        seen: set[int] = set()
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise DataError(f"{uri}: {section}[{index}] must be a JSON object, got {type(entry).__name__}")
            for key, kind in (*required.items(), *optional.items()):
                if key not in entry:
                    if key in required:
                        raise DataError(f"{uri}: {entry_name(section, index, entry)}: missing key {key!r}")
                    continue
                wanted, valid = VALUE_KINDS[kind]
                if not valid(entry[key]):
                    raise DataError(
                        f"{uri}: {entry_name(section, index, entry)}: {key!r} must be {wanted}, "
                        f"got {reprlib.repr(entry[key])}"
                    )
            if section == "categories":  # images listed twice are reported and the first kept; a category is ambiguous
                if entry["id"] in seen:
                    raise DataError(
                        f"{uri}: {entry_name(section, index, entry)}: id {entry['id']} is listed more than once"
                    )
                seen.add(entry["id"])
