"""The open-file limit a service's settings need: raised at start when the hard limit allows it,
otherwise an operator's fix (exit 2, one line).

A consumer holds a socket per status lookup in flight (``MAX_CONSUMERS``) and per database
connection (``POSTGRES_POOL_SIZE``). Many systems start processes with a soft limit of 1024 and a
far higher hard one; the soft limit is the process's own to raise up to the hard one.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

# Descriptors besides the lookups and the database pool. An idle consumer holds 18 (measured:
# stdio, uvloop's epoll, wake-up pipes and eventfds, the broker connection, the metrics listener,
# the first pool connections); the rest is room for probe and scrape connections, a broker
# reconnect overlapping the old connection, DNS lookups and files read at start (TLS, heartbeat).
OTHER_DESCRIPTORS = 64

HOW_TO_RAISE = (
    "raise the hard limit (`ulimit -Hn` as root; compose `ulimits: nofile`; on Kubernetes the "
    "container runtime's LimitNOFILE)"
)


@dataclass(frozen=True)
class OpenFiles:
    """How many descriptors the settings need at once, and the setting that drives the count."""

    needed: int
    setting: str
    value: int
    why: str


class OpenFileLimitTooLow(Exception):
    """The hard limit is below what the settings need."""

    def __init__(self, need: OpenFiles, hard: int) -> None:
        super().__init__(
            f"{need.setting}={need.value} needs {need.needed} open files ({need.why}), but the "
            f"hard limit is {hard}: lower {need.setting} or {HOW_TO_RAISE}"
        )


def soft_limit_to_set(need: OpenFiles, soft: int, hard: int) -> int | None:
    """The soft ``RLIMIT_NOFILE`` to set for ``need``; ``None`` when ``soft`` already covers it.

    Raises :class:`OpenFileLimitTooLow` when even the hard limit does not.
    """
    if _covers(soft, need.needed):
        return None
    if not _covers(hard, need.needed):
        raise OpenFileLimitTooLow(need, hard)
    return need.needed


def ensure_open_files(need: OpenFiles) -> tuple[int, int] | None:
    """Raise this process's soft limit to cover ``need``: (old, new) soft limit, or ``None``
    when it already did; :class:`OpenFileLimitTooLow` when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = soft_limit_to_set(need, soft, hard)
    if target is None:
        return None
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, target


def _covers(limit: int, needed: int) -> bool:
    return limit == resource.RLIM_INFINITY or limit >= needed
