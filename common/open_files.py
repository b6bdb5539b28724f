"""The open-file limit a service's settings need: raised at start when the hard limit allows it,
otherwise an operator's fix (exit 2, one line); and the producer's connection budget within it.

A consumer holds a socket per status lookup in flight (``MAX_CONSUMERS``) and per database
connection (``POSTGRES_POOL_SIZE``); the producer one per client connection
(``PRODUCER_MAX_CONNECTIONS``) and its listen queue. Many systems start processes with a soft limit
of 1024 and a far higher hard one; the soft limit is the process's own to raise up to the hard one.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

# Descriptors a service needs besides the ones its settings count (a consumer's lookups and
# database pool, the producer's client connections and listen queue). An idle consumer holds 18
# (measured: stdio, uvloop's epoll, wake-up pipes and eventfds, the broker connection, the metrics
# listener, the first pool connections), the producer its broker connection, the spool's SQLite
# files and the same loop and logging ones; the rest is room for probe and scrape connections, a
# broker reconnect overlapping the old connection, DNS lookups and files read at start (TLS,
# heartbeat).
OTHER_DESCRIPTORS = 64
# Uvicorn's default backlog; the kernel caps it at net.core.somaxconn (4096 on Linux >= 5.4).
LISTEN_BACKLOG = 2048
# Each held connection costs the producer ~10 KiB (protocol, parser, transport, a request task
# for a body; RSS in the slowclients tier), so the cap also bounds memory: 10,000 ≈ 100 MiB.
MOST_CONNECTIONS = 10_000

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


@dataclass(frozen=True)
class ConnectionBudget:
    descriptor_safe: int  # the most connections the open-file limit allows
    default: int  # PRODUCER_MAX_CONNECTIONS when unset
    backlog: int  # the listen queue, reserved within the open-file limit


def connection_budget(open_files: int | None) -> ConnectionBudget:
    """The most connections that never run the process out of descriptors, and the default cap.

    The server accepts a whole burst from its listen queue before it gets to close anyone, so the
    queue (the backlog) is reserved too: with the cap reached, a burst of ``backlog`` new
    connections is accepted, then as many least-progress ones are closed.
    """
    if open_files is None:
        return ConnectionBudget(2**31 - 1, MOST_CONNECTIONS, LISTEN_BACKLOG)
    backlog = max(16, min(LISTEN_BACKLOG, open_files // 4))
    safe = max(0, open_files - OTHER_DESCRIPTORS - backlog)
    return ConnectionBudget(safe, min(MOST_CONNECTIONS, safe), backlog)


def hard_open_file_limit() -> int | None:
    """The open files this process can have: its hard RLIMIT_NOFILE, since the soft one is raised
    at start (:func:`ensure_open_files`); None when unlimited.

    Many systems start a process with a soft limit of 1024 and a far higher hard one (Docker's
    default): budgeting from the soft limit held the producer's cap at ~700 connections there."""
    _, hard = _open_file_limits()
    return None if hard == resource.RLIM_INFINITY else hard


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
    soft, hard = _open_file_limits()
    target = soft_limit_to_set(need, soft, hard)
    if target is None:
        return None
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, target


def _open_file_limits() -> tuple[int, int]:
    """This process's (soft, hard) RLIMIT_NOFILE."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _covers(limit: int, needed: int) -> bool:
    return limit == resource.RLIM_INFINITY or limit >= needed
