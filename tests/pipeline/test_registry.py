"""`mmray models` on a registry file that is damaged or edited by hand: one `error:` line naming the file,
exit 2, and the file left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import invoke_mmray

ENTRY = ('{"id": 1, "model_bundle": "b", "model_version": "v", "index_bundle": null, "index_version": null, '
         '"metrics": {}, "job": "j", "created_at": "t", "passed_gate": true}')  # fmt: skip
DAMAGED = [b"", b'{"entries": [', b"[]", b'"x"', b'{"entries": 5}', b'{"entries": [{"id": 1}]}', b"\xff\xfe\x00",
           ('{"entries": [' + ENTRY.replace('"metrics": {}', '"metrics": 5') + "]}").encode()]  # fmt: skip


@pytest.mark.parametrize("content", DAMAGED)
@pytest.mark.parametrize("command", [["list"], ["show", "1"], ["promote", "1"], ["rollback"]])
def test_a_damaged_registry_is_named_not_a_traceback(tmp_path: Path, content: bytes, command: list[str]) -> None:
    registry = tmp_path / "registry" / "registry.json"
    registry.parent.mkdir()
    registry.write_bytes(content)
    outcome = invoke_mmray("models", *command, "--storage-root", str(tmp_path))
    assert outcome.returncode == 2, outcome.stderr
    assert outcome.stderr.startswith("error: ") and str(registry) in outcome.stderr, outcome.stderr
    assert "Traceback" not in outcome.stderr and len(outcome.stderr.strip().splitlines()) == 1, outcome.stderr
    assert registry.read_bytes() == content
