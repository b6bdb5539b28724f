"""Start a service as a real process (``python -m <service>``) and wait for it to be ready."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from tests.support.waiting import wait_until

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def die_with_parent() -> None:
    """``preexec_fn`` for a server a test or benchmark starts: in the child before exec, ask the
    kernel to SIGKILL it when the thread that started it ends (``PR_SET_PDEATHSIG``).

    A test run or benchmark killed by a signal runs no teardown, and nothing else would stop a
    server it started (an emulator in a session of its own, a redis-server); ``exec`` keeps the
    setting. The thread that starts the server must therefore live as long as it: pytest's main
    thread for a session fixture, the event loop's thread in a benchmark.
    """
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


class ServiceProcess:
    """One ``python -m <module>`` child, with its output captured to a file.

    It runs in a scratch directory so the project's ``.env`` (which names Docker hosts) is not
    read; everything it needs comes from ``env``.
    """

    def __init__(
        self,
        module: str,
        env: Mapping[str, str],
        workdir: Path,
        args: tuple[str, ...] = (),
        python: str = sys.executable,
    ) -> None:
        self.module = module
        self.python = python
        self.args = args
        self.workdir = workdir
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "PYTEST_"))},
            "PYTHONPATH": str(PROJECT_ROOT),
            "PYTHONUNBUFFERED": "1",
            "LOG_FORMAT": "json",
            **env,
        }
        self.log_path = workdir / f"{module}-{time.monotonic_ns()}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [self.python, "-m", self.module, *self.args],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, ready: Callable[[], object], *, timeout: float = 30.0) -> ServiceProcess:
        """Poll ``ready`` until truthy; fail early, with the output, if the process dies."""

        def check() -> object:
            if not self.running():
                raise AssertionError(
                    f"{self.module} exited with {self.returncode} before ready:\n{self.output()}"
                )
            return ready()

        wait_until(check, timeout=timeout, what=f"{self.module} ready")
        return self

    def wait_for_log(self, text: str, *, timeout: float = 30.0) -> ServiceProcess:
        return self.wait_ready(lambda: text in self.output(), timeout=timeout)

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def signal(self, signum: int) -> None:
        if self.running():
            assert self.process is not None
            self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout=timeout)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Teardown: SIGTERM, then SIGKILL if it lingers."""
        if not self.running():
            return
        try:
            self.terminate(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


def run_module(
    module: str, env: Mapping[str, str], workdir: Path, *args: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module`` to completion (for start-up errors and one-shot commands)."""
    process = ServiceProcess(module, env, workdir, args)
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=workdir,
        env=process.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


Spawn = Callable[..., "ServiceProcess"]
"""The ``spawn`` fixture: start ``python -m <module>`` with an environment (and arguments)."""
