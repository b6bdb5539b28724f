"""The worker's counters, typed: the worker increments them, ``consumer/metrics.py`` exports each
field at scrape time (``lastseen_consumer_<name>_total``), the shutdown log prints them, and the
subscription reads the message size from them. A new counter is a new field with its help text."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


def counter(help_text: str) -> int:
    """A counter field starting at 0, with the help text its metric carries."""
    value: int = field(default=0, metadata={"help": help_text})
    return value


@dataclass(slots=True)
class WorkerStats:
    messages: int = counter("work messages received")
    ids: int = counter("ids received in work messages")
    acked: int = counter("work messages acked (every id settled)")
    retried: int = counter("ids sent to a retry queue")
    dead: int = counter("ids and malformed messages sent to the dead-letter queue")

    @property
    def ids_per_message(self) -> float:
        return self.ids / self.messages if self.messages else 0.0

    def counters(self) -> list[tuple[str, str, int]]:
        """``(name, help, value)`` of every counter."""
        return [(f.name, f.metadata["help"], getattr(self, f.name)) for f in fields(self)]

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
