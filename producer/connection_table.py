"""Which client connections to close: the ones past a deadline, and, at the cap, the ones that
have made the least progress. Pure bookkeeping on the times it is given; the server layer
(``producer/guarded_http.py``) reports each connection's events and closes what it is told to.

A connection is in one of these stages, and is evicted in this order when the cap is reached:

1. ``HEAD`` — connected but no complete request head: silent since connecting, trickling a head,
   or the first byte of a new request on a kept-alive connection. Oldest first: a well-behaved
   client sends its head right after connecting, so the longer a head stays incomplete, the
   likelier the client is slow or hostile.
2. ``IDLE`` — kept alive between requests. HTTP lets a server close an idle connection at any
   time; longest idle first, so the well-behaved client that sent a request a moment ago keeps
   its connection.
3. ``BODY`` — head complete, body still arriving. Closing it loses a request in progress, so only
   when no head and no idle connection is left.

The new connection itself is the youngest head; it is closed only when every other connection
is busy: a request the application is working on is never evicted.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")


class Stage(enum.IntEnum):
    """Eviction order: lower goes first."""

    HEAD = 0
    IDLE = 1
    BODY = 2


class _Parsing(enum.Enum):
    BETWEEN = enum.auto()  # no byte of the next request yet
    HEAD = enum.auto()
    BODY = enum.auto()


@dataclass(slots=True)
class _Connection:
    parsing: _Parsing
    responses_due: int  # requests whose head is complete and whose response is not
    stage: Stage | None  # None: the application is working on a request


def _stage(parsing: _Parsing, responses_due: int) -> Stage | None:
    if parsing is _Parsing.BODY:
        # Uvicorn runs the application as soon as the head is complete; its body still
        # trickles in. A pipelined body behind an unanswered request is left alone.
        return Stage.BODY if responses_due <= 1 else None
    if responses_due:
        return None
    return Stage.HEAD if parsing is _Parsing.HEAD else Stage.IDLE


class ConnectionTable(Generic[K]):
    """Every open connection, by stage, each stage in the order its connections entered it.

    ``K`` is whatever identifies a connection to the caller (the protocol object).
    """

    def __init__(self, capacity: int, header_timeout: float, body_timeout: float) -> None:
        self.capacity = capacity
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self._connections: dict[K, _Connection] = {}
        # Insertion order is the order of entering the stage, so the oldest is first and a
        # sweep stops at the first connection still within its deadline.
        self._since: dict[Stage, OrderedDict[K, float]] = {stage: OrderedDict() for stage in Stage}

    def __len__(self) -> int:
        return len(self._connections)

    def stage_of(self, key: K) -> Stage | None:
        return self._connections[key].stage

    def opened(self, key: K, now: float) -> list[K]:
        """A new connection; returns the connections to close to stay within the capacity
        (the new one itself when everything else is busy with a request)."""
        # Silence after connecting counts as an incomplete head: its deadline runs from now.
        self._connections[key] = _Connection(_Parsing.HEAD, 0, Stage.HEAD)
        self._since[Stage.HEAD][key] = now
        evicted = []
        while len(self._connections) > self.capacity:
            victim = self._least_progress(besides=key)
            self.closed(victim)
            evicted.append(victim)
        return evicted

    def request_begun(self, key: K, now: float) -> None:
        """The first byte of a request: on a kept-alive connection its head deadline starts."""
        connection = self._connections.get(key)
        if connection is not None and connection.parsing is _Parsing.BETWEEN:
            self._move(key, connection, _Parsing.HEAD, connection.responses_due, now)

    def head_complete(self, key: K, now: float) -> None:
        connection = self._connections.get(key)
        if connection is not None:
            self._move(key, connection, _Parsing.BODY, connection.responses_due + 1, now)

    def request_complete(self, key: K, now: float) -> None:
        connection = self._connections.get(key)
        if connection is not None:
            self._move(key, connection, _Parsing.BETWEEN, connection.responses_due, now)

    def response_complete(self, key: K, now: float) -> None:
        connection = self._connections.get(key)
        if connection is not None:
            due = max(0, connection.responses_due - 1)
            self._move(key, connection, connection.parsing, due, now)

    def closed(self, key: K) -> None:
        connection = self._connections.pop(key, None)
        if connection is not None and connection.stage is not None:
            del self._since[connection.stage][key]

    def expired(self, now: float) -> list[tuple[K, Stage]]:
        """Connections past their deadline (head or body), removed from the table."""
        overdue: list[tuple[K, Stage]] = []
        for stage, timeout in ((Stage.HEAD, self.header_timeout), (Stage.BODY, self.body_timeout)):
            for key, since in self._since[stage].items():
                if now - since < timeout:
                    break
                overdue.append((key, stage))
        for key, _ in overdue:
            self.closed(key)
        return overdue

    def _least_progress(self, besides: K) -> K:
        """The first of the oldest in each stage, in eviction order; ``besides`` (the newcomer,
        the youngest head) only when no other connection can go."""
        for stage in Stage:
            oldest = next(iter(self._since[stage]), besides)
            if oldest != besides:
                return oldest
        return besides

    def _move(
        self, key: K, connection: _Connection, parsing: _Parsing, due: int, now: float
    ) -> None:
        stage = _stage(parsing, due)
        connection.parsing, connection.responses_due = parsing, due
        if stage is connection.stage:
            return
        if connection.stage is not None:
            del self._since[connection.stage][key]
        if stage is not None:
            self._since[stage][key] = now
        connection.stage = stage
