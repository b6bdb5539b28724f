"""Google's Pub/Sub emulator, run by the tests on a port and in a folder of their own.

The emulator is the Google Cloud SDK component (a Java program). Its apt source is not reachable
from here, so nothing installs it: the tests find it where it is, and a run without it FAILS with
one line saying where it looked — a Pub/Sub test that skips would count as passing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.support.ports import free_port
from tests.support.processes import die_with_parent
from tests.support.waiting import wait_until

OVERRIDE_VARIABLE = "PUBSUB_EMULATOR_BIN"
"""A path to ``cloud-pubsub-emulator`` that is used instead of looking in the usual places."""

SDK_ROOTS = (
    Path("/usr/lib/google-cloud-sdk"),  # Debian's google-cloud-cli packages
    Path("/usr/share/google-cloud-sdk"),
    Path("/opt/google-cloud-sdk"),
    Path.home() / "google-cloud-sdk",  # the SDK's own installer
)
LAUNCHER = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")

EMULATOR_PROJECT = "lastseen-test"
"""The emulator accepts any project; the tests use this one."""


class EmulatorMissing(Exception):
    """The emulator (or the Java it runs on) is not installed where the tests look."""


class EmulatorFailed(Exception):
    """The emulator did not start, or did not stop."""


def find_emulator(
    environ: Mapping[str, str] | None = None, sdk_roots: tuple[Path, ...] = SDK_ROOTS
) -> Path:
    """The emulator's launcher: ``$PUBSUB_EMULATOR_BIN`` if set, else the first SDK that has it."""
    environ = os.environ if environ is None else environ
    override = environ.get(OVERRIDE_VARIABLE)
    candidates = [Path(override)] if override else [root / LAUNCHER for root in sdk_roots]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            if shutil.which("java", path=environ.get("PATH")) is None:
                raise EmulatorMissing(
                    f"Pub/Sub emulator found at {candidate} but no java on PATH (it needs Java 17+)"
                )
            return candidate
    where = f"{OVERRIDE_VARIABLE}={override}" if override else ", ".join(map(str, candidates))
    raise EmulatorMissing(
        f"Pub/Sub emulator not found: looked at {where} "
        f"(install the Google Cloud SDK component or set {OVERRIDE_VARIABLE})"
    )


class PubSubEmulator:
    """One emulator process, in its own process group so that stopping it leaves nothing behind.

    The launcher script ``exec``s java, so the process group holds the JVM alone; it is still
    signalled as a group in case a launcher ever forks instead.
    """

    def __init__(self, launcher: Path, data_dir: Path) -> None:
        self.launcher = launcher
        self.data_dir = data_dir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """``host:port``, the form ``PUBSUB_EMULATOR_HOST`` takes."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"emulator-{self.port}.log"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 60.0, attempts: int = 3) -> PubSubEmulator:
        """Start on a free port and wait until it answers. A port picked free can be taken by
        someone else before the JVM binds it, so a failed bind is retried on another port."""
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            self._spawn()
            try:
                wait_until(self._ready, timeout=timeout, interval=0.2, what=f"emulator {self.host}")
            except EmulatorFailed:
                self.stop()
                if "Address already in use" not in self.output() or attempt == attempts:
                    raise
            except AssertionError as timed_out:  # the deadline passed
                output = self.output()
                self.stop()
                raise EmulatorFailed(f"{timed_out}; its output:\n{output}") from None
            else:
                return self
        raise EmulatorFailed(f"no free port after {attempts} attempts")

    def _spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "JAVA_TOOL_OPTIONS": f"-Djava.io.tmpdir={self.data_dir}"}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(self.launcher), "--host=127.0.0.1", f"--port={self.port}"],
                cwd=self.data_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise EmulatorFailed(
                f"Pub/Sub emulator exited with {self.process.returncode} before it answered "
                f"on {self.host}:\n{self.output()}"
            )
        try:
            # The emulator answers its REST root with "Ok" once both gRPC and REST serve.
            with urllib.request.urlopen(f"http://{self.host}/", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group (the JVM shuts its servers down), SIGKILL it if it lingers, reap it."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
        # The group outlives its leader if a child was left: kill it and wait until it is empty.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                os.killpg(process.pid, 0)
                time.sleep(0.05)
            raise EmulatorFailed(f"processes of group {process.pid} survived SIGKILL")


@contextlib.contextmanager
def running_emulator(launcher: Path | None = None) -> Iterator[PubSubEmulator]:
    """An emulator in a temporary folder, stopped and the folder removed afterwards."""
    launcher = launcher or find_emulator()
    with tempfile.TemporaryDirectory(prefix="lastseen-pubsub-") as data_dir:
        emulator = PubSubEmulator(launcher, Path(data_dir))
        try:
            yield emulator.start()
        finally:
            emulator.stop()
