"""A slow, lossy, narrow link in user space, for :class:`tests.support.proxy.TcpProxy`.

This machine's kernel has no ``netem``, so the proxy shapes the byte stream itself. Each chunk it
reads gets a delivery time from :class:`LinkClock`, a pure function of the chunk's size, the time
it was read and a seeded random source:

- **latency with jitter**: ``latency ± jitter`` seconds (uniform), added one way, per direction;
- **bandwidth**: the chunk first waits for the link to finish serialising the chunks before it
  (``size / bandwidth`` seconds each), as behind a rate-limited interface;
- **loss**: what a dropped segment costs a TCP stream. The proxy cannot drop bytes without
  corrupting the stream it relays, and the kernel's TCP on either side would retransmit them
  anyway. So each segment of the chunk (``segment`` bytes, an Ethernet MSS) is lost with
  probability ``loss``; a chunk with a lost segment is delivered one retransmission timeout
  later (``retransmit_after``, Linux's minimum RTO, 200 ms), doubled for each further loss of the
  retransmission, as TCP's exponential backoff does;
- **order**: nothing overtakes an earlier chunk (a TCP receiver delivers in order, so a late
  segment holds back everything after it: head-of-line blocking, as a real lossy link shows).

What it does not model: the sender's congestion window shrinking after a loss (the delay spike
stands in for it), and losses of the handshake (new connections open at once).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

LINUX_MIN_RTO_S = 0.2
ETHERNET_MSS = 1448


@dataclass(frozen=True)
class Link:
    """One direction of a shaped link. The zero link forwards as fast as the proxy can."""

    latency: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    bandwidth: float | None = None  # bytes per second; None: unlimited
    retransmit_after: float = LINUX_MIN_RTO_S
    segment: int = ETHERNET_MSS

    def __post_init__(self) -> None:
        if self.latency < 0 or not 0 <= self.jitter <= self.latency:
            raise ValueError(f"need 0 <= jitter <= latency: {self}")
        if not 0 <= self.loss < 1:
            raise ValueError(f"loss is a probability below 1: {self}")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError(f"bandwidth must be positive: {self}")

    def describe(self) -> str:
        parts = [f"{self.latency * 1000:.0f} ms ± {self.jitter * 1000:.0f} ms"]
        if self.loss:
            parts.append(f"{self.loss * 100:g} % of segments lost")
        if self.bandwidth:
            parts.append(f"{self.bandwidth / 1024:.0f} KiB/s")
        return ", ".join(parts)


class LinkClock:
    """When each chunk of one direction of a :class:`Link` is delivered."""

    def __init__(self, link: Link, rng: random.Random) -> None:
        self.link = link
        self._rng = rng
        self._wire_free_at = 0.0
        self._last_delivery = 0.0
        self.chunks = 0
        self.retransmissions = 0

    def delivery_time(self, read_at: float, size: int) -> float:
        """The moment a chunk of ``size`` bytes read at ``read_at`` reaches the other side."""
        link = self.link
        sent = read_at
        if link.bandwidth is not None:
            self._wire_free_at = max(read_at, self._wire_free_at) + size / link.bandwidth
            sent = self._wire_free_at
        delay = link.latency + self._rng.uniform(-link.jitter, link.jitter)
        delay += self._retransmission_delay(size)
        self._last_delivery = max(sent + delay, self._last_delivery)
        self.chunks += 1
        return self._last_delivery

    def _retransmission_delay(self, size: int) -> float:
        link = self.link
        if not link.loss:
            return 0.0
        segments = max(1, math.ceil(size / link.segment))
        chunk_hit = 1 - (1 - link.loss) ** segments
        delay, timeout = 0.0, link.retransmit_after
        while self._rng.random() < (chunk_hit if delay == 0 else link.loss):
            self.retransmissions += 1
            delay += timeout
            timeout *= 2
        return delay
