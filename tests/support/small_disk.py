"""A small file system of the test's own (tmpfs), which a test can fill to the last byte and free.

A real ``ENOSPC`` from the kernel, not an emulated one: whatever writes there (SQLite's WAL, its
journal, a checkpoint) meets the full disk the way it would in production. Mounting needs root.
The mount is undone by :meth:`unmount`, lazily if something still holds a file open, so a failed
test leaves no mount behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

BALLAST = ".ballast"


class SmallDisk:
    def __init__(self, mountpoint: Path, size_bytes: int) -> None:
        self.mountpoint = mountpoint
        self.size_bytes = size_bytes
        self.mounted = False

    @staticmethod
    def available() -> str | None:
        """``None`` when a tmpfs can be mounted here, else why not."""
        return None if os.geteuid() == 0 else "mounting a tmpfs needs root"

    def mount(self) -> SmallDisk:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        _run("mount", "-t", "tmpfs", "-o", f"size={self.size_bytes},mode=0755", "lsfault-disk",
             str(self.mountpoint))  # fmt: skip
        self.mounted = True
        return self

    def unmount(self) -> None:
        if not self.mounted:
            return
        if subprocess.run(["umount", str(self.mountpoint)], check=False).returncode != 0:
            _run("umount", "--lazy", str(self.mountpoint))
        self.mounted = False

    def fill(self) -> int:
        """Write a ballast file until the disk refuses; return the bytes it took."""
        written = 0
        block = b"\0" * 65536
        with (self.mountpoint / BALLAST).open("wb", buffering=0) as ballast:
            while True:
                try:
                    written += ballast.write(block) or 0
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    block = block[: len(block) // 2]
                    if not block:
                        return written

    def free(self) -> None:
        """Give the ballast's space back."""
        with contextlib.suppress(FileNotFoundError):
            (self.mountpoint / BALLAST).unlink()

    def free_bytes(self) -> int:
        stats = os.statvfs(self.mountpoint)
        return stats.f_bavail * stats.f_frsize


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)
