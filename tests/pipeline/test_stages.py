"""A pipeline's stage records: a damaged one is named, not a traceback, and the stage is not run over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmray.errors import ConfigError
from mmray.pipeline.stages import StageRecords


@pytest.mark.parametrize("content", [b"", b'{"outputs": {"model', b"[]", b'{"stage": "train"}', b'{"outputs": 3}',
                                     b"\xff\xfe"])  # fmt: skip
def test_a_damaged_stage_record_is_named(tmp_path: Path, content: bytes) -> None:
    records = StageRecords(str(tmp_path), "p")
    record = Path(records.directory) / "train-k.json"
    record.parent.mkdir(parents=True)
    record.write_bytes(content)
    with pytest.raises(ConfigError, match=f"{record} is damaged"):
        records.run("train", "k", lambda: pytest.fail("the stage ran over its damaged record"))
    assert record.read_bytes() == content
