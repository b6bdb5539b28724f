"""When the producer is degraded, and when a connection that stopped confirming is dropped: the
two rules in one place, fed by explicit events from the publisher. Pure: no I/O, no clock."""

from __future__ import annotations

# A relay round that goes unconfirmed may be a broker that refuses (reconnecting does not help)
# or a stalled network path on a connection that looks open (reconnecting beats waiting for the
# heartbeat to notice). Every second such round in a row costs one reconnect per two backoffs.
RESET_AFTER_UNCONFIRMED_ROUNDS = 2


class BrokerHealth:
    """Degraded: a publish went unconfirmed, so callbacks go to the spool without waiting for
    confirms, until the relay shows the broker confirms again (a whole round confirmed), the spool
    is empty (nothing left to probe with: callbacks try the broker themselves), or a new
    connection opens."""

    __slots__ = ("_unconfirmed_rounds", "degraded")

    def __init__(self) -> None:
        self.degraded = False
        self._unconfirmed_rounds = 0

    def connection_opened(self) -> None:
        self.degraded = False
        self._unconfirmed_rounds = 0

    def publish_unconfirmed(self) -> bool:
        """A publish (a callback's or the relay's) left messages unconfirmed. True if this
        degrades the producer (it was not degraded before)."""
        newly = not self.degraded
        self.degraded = True
        return newly

    def relay_round(self, *, confirmed: bool) -> bool:
        """The relay published a batch of the spool. A confirmed round recovers; an unconfirmed
        one (after :meth:`publish_unconfirmed`) counts. True: drop the connection now."""
        if confirmed:
            self.degraded = False
            self._unconfirmed_rounds = 0
            return False
        self._unconfirmed_rounds += 1
        return self._unconfirmed_rounds % RESET_AFTER_UNCONFIRMED_ROUNDS == 0

    def spool_empty(self) -> bool:
        """The relay found nothing to send. True if this recovers the producer."""
        recovered = self.degraded
        self.degraded = False
        return recovered
