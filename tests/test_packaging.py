from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_stdlib_platform_is_not_shadowed() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import platform, mmray; print(platform.__file__); print(platform.machine())"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    platform_file = Path(result.stdout.splitlines()[0])
    assert platform_file.parent == Path(sysconfig.get_paths()["stdlib"])
    assert not (REPO_ROOT / "platform" / "__init__.py").exists()


def test_console_script_runs() -> None:
    mmray = Path(sys.executable).parent / "mmray"
    result = subprocess.run([str(mmray), "--help"], capture_output=True, text=True, check=True)
    assert "data" in result.stdout and "config" in result.stdout
