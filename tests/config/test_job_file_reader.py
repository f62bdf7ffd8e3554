"""Job files that are not job specs (binary bytes, another encoding, a directory, nothing, YAML that is
not a mapping or not YAML) are refused in one line naming the file; the CLI exits 2 without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmray.config import load_job
from mmray.errors import ConfigError
from tests.support.cli import invoke_mmray

CASES = {
    "binary.yaml": (bytes(range(256)) * 4, r"binary\.yaml: not a text file \(byte 128 is 0x80, not UTF-8\)"),
    "utf16.yaml": ("kind: train\n".encode("utf-16"), r"utf16\.yaml: not a text file \(byte 0 is 0xff"),
    "empty.yaml": (b"", r"empty\.yaml is empty; a job spec is a YAML mapping"),
    "blank.yaml": (b"\n   \n# only a comment\n", r"blank\.yaml: top level must be a mapping .*got NoneType"),
    "list.yaml": (b"- kind: train\n", r"list\.yaml: top level must be a mapping .*got list"),
    "scalar.yaml": (b"just words\n", r"scalar\.yaml: top level must be a mapping .*got str"),
    "broken.yaml": (b"kind: train\ndata: [unclosed\n", r"broken\.yaml: not valid YAML: line 3, column 1: expected"),
    "nul.yaml": (
        b"kind: train\x00\n",
        r"nul\.yaml: not valid YAML: character 12 is U\+0000: special characters are not allowed",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_file_that_is_no_job_spec_is_refused_in_one_line(tmp_path: Path, name: str) -> None:
    content, message = CASES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as refused:
        load_job(path)
    assert "\n" not in str(refused.value)


def test_a_directory_and_a_byte_order_mark(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="it is a directory; name a job spec YAML file in it"):
        load_job(tmp_path)
    marked = tmp_path / "bom.yaml"
    marked.write_bytes("\ufeffkind: evaluate\nname: x\ndata: {source: shapes}\ncheckpoint: runs/x\n".encode())
    assert load_job(marked).kind == "evaluate", "a UTF-8 byte order mark is no reason to refuse a file"


def test_the_cli_refuses_each_with_exit_2_and_one_line(tmp_path: Path) -> None:
    (tmp_path / "garbage.yaml").write_bytes(bytes(range(255, -1, -1)))
    (tmp_path / "empty.yaml").write_bytes(b"")
    (tmp_path / "list.yaml").write_bytes(b"- a\n")
    (tmp_path / "folder.yaml").mkdir()
    for name in ("garbage.yaml", "empty.yaml", "list.yaml", "folder.yaml"):
        result = invoke_mmray("train", str(tmp_path / name))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
        assert name in lines[0]
