"""The README's shell blocks as steps: each command line, in order, with the variable assignments of
its block, or the reason it is not run by the README walk (`make test-readme`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Lines that are synopses, not commands: alternatives (`a | b`) and optional parts (`[--strict]`).
SYNOPSIS = re.compile(r"\s\|\s|\[--")
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
NOT_WALKED = {
    "make ": "a Makefile target: it runs the README's own commands (CI runs `make test`)",
    "open ": "opens a browser (the search page has its own browser test)",
    "serve run ": "Serve's own CLI on the same file that `mmray serve` serves",
    "serve deploy ": "deploys to a cluster's dashboard address",
    "ray up ": "starts a cluster on AWS",
    "ray job submit ": "submits to a cluster (tests/cluster submits to a real two-node one)",
    "mmray submit ": "submits to a cluster on AWS with COCO on S3 (tests/cluster submits to a real two-node one)",
}


@dataclass(frozen=True)
class Step:
    line: str
    prelude: tuple[str, ...] = ()  # the block's assignments (`W=$(...)`) that the line uses
    action: str = "run"  # run | serve (a foreground server, started and left running) | skip
    reason: str = ""

    @property
    def command(self) -> str:
        return "\n".join([*self.prelude, self.line])


def _logical_lines(block: str) -> list[str]:
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _without_comment(line: str) -> str:
    return re.split(r"\s#\s", line, maxsplit=1)[0].strip()


def readme_steps(readme: Path = REPO / "README.md") -> list[Step]:
    steps: list[Step] = []
    for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), re.DOTALL):
        lines = [line for line in _logical_lines(block) if not line.startswith("#")]
        prelude = tuple(line for line in lines if ASSIGNMENT.match(line))
        for line in lines:
            if ASSIGNMENT.match(line):
                continue
            command = _without_comment(line)
            reason = next((why for start, why in NOT_WALKED.items() if command.startswith(start)), "")
            if reason:
                steps.append(Step(command, action="skip", reason=reason))
            elif SYNOPSIS.search(command):
                steps.append(Step(command, action="skip", reason="a synopsis, not a command"))
            elif command.startswith("mmray serve "):
                steps.append(Step(command, prelude, action="serve"))
            elif command.startswith(("mmray ", "curl ")):
                steps.append(Step(command, prelude))
            else:
                steps.append(Step(command, action="skip", reason=""))
    return steps
