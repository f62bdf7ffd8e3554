"""Finding processes that a test itself started (descendants of a pid), via /proc."""

from __future__ import annotations

from pathlib import Path


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants_named(root: int, fragment: str) -> list[int]:
    """Pids below `root` (children, grandchildren, …) whose command line contains `fragment`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        ancestor = _parent(pid)
        while ancestor and ancestor != root:
            ancestor = _parent(ancestor)
        if ancestor == root and fragment in _command_line(pid):
            found.append(pid)
    return sorted(found)
