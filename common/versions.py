"""The library versions whose private parts a fast path relies on, checked at start-up.

One hot path reaches below a library's public API: the producer's confirm pipeline and its
broker-blocked flag (aiormq and the pamqp frames it sends). pyproject.toml pins those libraries
to the minor series tested here; this module is the run-time half of the same guard. A service that
uses a fast path calls :func:`check_fast_paths` before it connects to anything: on any other minor
it stops at once with one line naming the package, the version found, the version tested and the
setting that selects the public-API twin — never an ``AttributeError`` under load.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata

TESTED: dict[str, str] = {"aiormq": "7.2", "pamqp": "4.0"}
"""Minor series each library's internals were tested with. Keep in step with pyproject.toml."""


class UntestedLibrary(RuntimeError):
    """An installed library is not the minor series a fast path was tested with."""


@dataclass(frozen=True, slots=True)
class FastPath:
    """A fast path: the libraries whose internals it uses, and how to switch to the public twin."""

    packages: tuple[str, ...]
    fallback: str
    """The setting that selects the public-API implementation, e.g. ``PUBLISH_MODE=standard``."""


def minor_of(version: str) -> str:
    """``"7.2.4"`` → ``"7.2"``."""
    return ".".join(version.split(".")[:2])


def check_fast_paths(paths: Iterable[FastPath]) -> None:
    """Raise :class:`UntestedLibrary` (one line) for the first library off its tested minor."""
    for path in paths:
        for package in path.packages:
            tested = TESTED[package]
            try:
                found = metadata.version(package)
            except metadata.PackageNotFoundError:
                found = "none"
            if minor_of(found) != tested:
                raise UntestedLibrary(
                    f"{package} {found} is installed, but the fast path was tested with "
                    f"{package} {tested}.x; install the tested version, or set {path.fallback}"
                )
