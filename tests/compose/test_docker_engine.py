"""scripts/docker-engine: where no engine can be had, one line saying why and exit 3 (the compose
tests then skip, or fail under CI=true); where it starts one, the daemons keep nothing of the
caller's."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.compose import ENGINE_SCRIPT, Engine

# scripts/docker-engine's pid file for the dockerd it starts.
DOCKERD_PID_FILE = Path("/run/lastseen-docker/dockerd.pid")

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


def test_the_daemons_it_starts_hold_no_descriptor_of_the_caller(
    engine: Engine, tmp_path: Path
) -> None:
    """A caller's lock must not outlive the caller in dockerd or containerd: a flock lock held
    while the engine started stayed held by dockerd until the engine stopped, and every later
    flock on it waited forever. Restarts the engine, so only one this script started."""
    status = _engine_script("status")
    if "our dockerd" not in status.stdout:
        pytest.skip(f"the engine is not one scripts/docker-engine started: {status.stdout}")
    assert _engine_script("stop").returncode == 0
    lock_path = tmp_path / "caller.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = _engine_script("start", pass_fds=(lock.fileno(),))
        assert started.returncode == 0, started.stderr
    dockerd = int(DOCKERD_PID_FILE.read_text())
    daemons = {dockerd: _name(dockerd), **{pid: _name(pid) for pid in _children(dockerd)}}
    for pid, name in daemons.items():
        descriptors = {int(fd.name): _target(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
        assert str(lock_path) not in descriptors.values(), (name, descriptors)
        if pid == dockerd:
            assert descriptors[0] == "/dev/null"
            assert descriptors[1] == descriptors[2] and descriptors[1].endswith("dockerd.log")
    # The caller has closed its descriptor: nobody holds the lock any more.
    with lock_path.open("w") as again:
        fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _engine_script(
    command: str, pass_fds: tuple[int, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENGINE_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        pass_fds=pass_fds,
    )


def _children(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def _name(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def _target(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:
        return "(closed)"
