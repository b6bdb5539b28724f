"""The library versions whose private parts a fast path relies on, checked at start-up.

Two paths of the producer reach below a library's public API: its confirm pipeline and
broker-blocked flag (aiormq and the pamqp frames it sends; ``PUBLISH_MODE=pipeline``), and its
slow-client guard (``producer/guarded_http.py``), a subclass of uvicorn's httptools protocol that
overrides its hooks, always on. pyproject.toml pins those libraries to the minor series tested here;
this module is the run-time half of the same guard. A service that uses a fast path calls
:func:`check_fast_paths` before it connects to anything: on any other minor it stops at once with
one line naming the package, the version found, the version tested and what to do (install the
tested version, or set the setting that selects the public-API twin when there is one) — never an
``AttributeError`` under load.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata

TESTED: dict[str, str] = {"aiormq": "7.2", "pamqp": "4.0", "uvicorn": "0.54"}
"""Minor series each library's internals were tested with. Keep in step with pyproject.toml."""


class UntestedLibrary(RuntimeError):
    """An installed library is not the minor series a fast path was tested with."""


@dataclass(frozen=True, slots=True)
class FastPath:
    """A fast path: the libraries whose internals it uses, and how to switch to the public twin."""

    packages: tuple[str, ...]
    fallback: str | None
    """The setting that selects the public-API implementation, e.g. ``PUBLISH_MODE=standard``;
    ``None`` when there is none and only the tested version will do."""


GUARDED_HTTP = FastPath(("uvicorn",), None)
"""The producer's slow-client guard subclasses uvicorn's ``HttpToolsProtocol`` and overrides its
hooks (``producer/guarded_http.py``). It is always on, so it has no public twin to fall back to."""


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
                fallback = f", or set {path.fallback}" if path.fallback else ""
                raise UntestedLibrary(
                    f"{package} {found} is installed, but the fast path was tested with "
                    f"{package} {tested}.x; install the tested version{fallback}"
                )
