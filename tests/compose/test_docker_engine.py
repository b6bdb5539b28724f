"""scripts/docker-engine where no engine can be had: one line saying why, exit 3 (the compose
tests then skip, or fail under CI=true)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.compose import ENGINE_SCRIPT

pytestmark = pytest.mark.compose


def test_no_docker_and_no_apt_gives_one_line_and_exit_3(tmp_path: Path) -> None:
    # A machine with a shell and coreutils but neither docker nor apt-get.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "cat", "printf"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    result = subprocess.run(
        ["bash", str(ENGINE_SCRIPT), "start"],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path), "LASTSEEN_CACHE": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 3, result
    lines = result.stderr.strip().splitlines()
    expected = "root" if os.geteuid() else "not a Debian machine"
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert result.stdout == ""


def test_an_unknown_command_is_refused_with_usage() -> None:
    result = subprocess.run(
        [str(ENGINE_SCRIPT), "restart"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "usage:" in result.stderr
