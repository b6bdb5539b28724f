"""Where ``last_seen`` lives: one small interface, two implementations side by side.

* :mod:`common.store.postgres` — the ``object`` table (the default; the routine expires rows).
* :mod:`common.store.redis` — one key per object that expires by itself (``STORE=redis``).

The consumer's :class:`~consumer.batch_writer.BatchWriter` sees only :class:`ObjectStore`; the
choice between the two is made once, where the consumer starts (``consumer/service.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol


class ObjectStore(Protocol):
    """What the consumer (and the tests, and the live view) need from a store."""

    name: str
    """``postgresql`` or ``redis``: for logs and messages."""

    overwritten: int
    """Objects whose stored value was not a time (written by someone else) and was replaced:
    always 0 on PostgreSQL, whose column is typed."""

    errors: tuple[type[BaseException], ...]
    """What a lost, refused, read-only or hanging store raises: the batch is kept and retried."""

    async def write(self, latest: Mapping[int, datetime]) -> int:
        """Store ``latest`` (id → time seen online), never moving an object back in time; return
        how many objects changed. Returns only once the store acknowledged every write."""

    async def ping(self) -> None:
        """Raise one of :attr:`errors` unless the store can be written now (readiness)."""

    async def count(self) -> int:
        """Objects stored now (expired ones excluded once the store dropped them)."""

    async def read(self, object_id: int) -> datetime | None:
        """The stored ``last_seen`` of ``object_id``, or ``None``."""

    async def close(self) -> None:
        """Release the connections."""
