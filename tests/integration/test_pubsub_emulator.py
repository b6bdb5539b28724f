"""The test support's Pub/Sub emulator: it answers, it stops without leaving a process behind, and
a machine without it fails the tests that need it (one line) instead of skipping them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import PROJECT_ROOT
from tests.support.pubsub_emulator import running_emulator
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def rest_root(host: str) -> str:
    with urllib.request.urlopen(f"http://{host}/", timeout=5) as answer:
        return str(answer.read().decode())


def test_the_session_emulator_answers(pubsub_emulator: str) -> None:
    assert rest_root(pubsub_emulator).strip() == "Ok"


def test_stopping_leaves_no_process_and_no_folder() -> None:
    with running_emulator() as emulator:
        assert emulator.process is not None
        pid, port, data_dir = emulator.process.pid, emulator.port, emulator.data_dir
        assert rest_root(emulator.host).strip() == "Ok"

    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    # nothing else answers to this emulator's command line either (a forked JVM, say)
    survivors = subprocess.run(
        ["pgrep", "-f", f"cloud-pubsub-emulator.*--port={port}( |$)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert survivors.returncode == 1, survivors.stdout
    assert not Path(data_dir).exists()


def test_a_killed_test_run_takes_its_emulator_along(tmp_path: Path) -> None:
    """SIGKILL runs no teardown: the kernel ends the emulator with the process that started it."""
    started = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from tests.support.pubsub_emulator import running_emulator\n"
            "with running_emulator() as emulator:\n"
            "    print(emulator.process.pid, emulator.data_dir, flush=True)\n"
            "    time.sleep(120)\n",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert started.stdout is not None
    pid_text, data_dir = started.stdout.readline().split()
    pid = int(pid_text)
    try:
        os.killpg(pid, 0)  # running
        started.kill()
        started.wait(timeout=10)

        def gone() -> bool:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_until(gone, timeout=15, what=f"emulator {pid} ended with its parent")
    finally:
        started.stdout.close()
        shutil.rmtree(data_dir, ignore_errors=True)  # its teardown never ran


def test_without_the_emulator_the_test_fails_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-emulator"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
        "PUBSUB_EMULATOR_BIN": str(missing),
    }

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            f"{Path(__file__).relative_to(PROJECT_ROOT)}::test_the_session_emulator_answers",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert run.returncode == 1, run.stdout + run.stderr
    assert f"Pub/Sub emulator not found: looked at PUBSUB_EMULATOR_BIN={missing}" in run.stdout
    assert "1 error" in run.stdout
    assert "skipped" not in run.stdout
