"""Telling a command's own output lines from those Ray forwards from its processes."""

from __future__ import annotations

import re

# "(ServeController pid=21451) …", "(ServeReplica:app:Ingress pid=…) …", "(RayTrainWorker pid=…, ip=…) …",
# coloured on a terminal.
RAY_PROCESS_LINE = re.compile(r"^(\x1b\[\d+m)?\([\w:.-]+ pid=\d+[^)]*\)")


def own_lines(output: str) -> str:
    """The lines of `output` that the command itself printed (not forwarded from a Ray process)."""
    return "".join(line for line in output.splitlines(keepends=True) if not RAY_PROCESS_LINE.match(line))
