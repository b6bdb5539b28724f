"""Single-flight: lookups of one id that overlap in time share one status request."""

from __future__ import annotations

from typing import Generic, TypeVar

W = TypeVar("W")


class Flights(Generic[W]):
    """The ids with a status request in flight, and who waits for each answer."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: dict[int, list[W]] = {}

    def join(self, object_id: int, waiter: W) -> bool:
        """Wait for ``object_id``'s answer; True if the caller must start the request."""
        waiters = self._waiting.get(object_id)
        if waiters is None:
            self._waiting[object_id] = [waiter]
            return True
        waiters.append(waiter)
        return False

    def land(self, object_id: int) -> list[W]:
        """The answer is in: everyone who waited for it (the flight is over)."""
        return self._waiting.pop(object_id, [])

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, object_id: object) -> bool:
        return object_id in self._waiting
