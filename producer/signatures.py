"""Callback authentication: Standard Webhooks signatures and/or a bearer token, both optional.

Checked on the raw body bytes before anything parses them; a refused callback is answered 401
and never reaches the broker or the spool.

Replays: a captured signed callback can be sent again while its timestamp is inside the
tolerance. That is harmless here, so ``webhook-id`` is not remembered: a callback only says
"look at these ids again", every stage is idempotent (the consumer asks the status API, and
``last_seen`` only moves forward to the time of that answer), so a replay costs a few status
requests and cannot store anything the status API did not say. See docs/security.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from common.webhooks import SignatureRejected, bearer_matches, check_headers, verify
from producer.callback import CallbackRejected


@dataclass(frozen=True)
class CallbackAuth:
    """What a callback must carry. ``signing_keys`` empty: no signature; ``bearer_token``
    empty: no token. With both set, both are required."""

    signing_keys: tuple[bytes, ...] = ()
    bearer_token: str = ""
    tolerance: float = 300.0
    clock: Callable[[], float] = time.time

    @property
    def enabled(self) -> bool:
        return bool(self.signing_keys or self.bearer_token)

    def check_headers(self, headers: Mapping[str, str]) -> None:
        """What can be refused before the body is read: token, missing or stale headers."""
        if self.bearer_token and not bearer_matches(
            self.bearer_token, headers.get("authorization")
        ):
            raise CallbackRejected(401, "unauthorized", "missing or wrong bearer token")
        if self.signing_keys:
            try:
                check_headers(headers, now=self.clock(), tolerance=self.tolerance)
            except SignatureRejected as rejected:
                raise CallbackRejected(401, rejected.error, rejected.detail) from None

    def check(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise :class:`CallbackRejected` (401) unless the request is authentic."""
        self.check_headers(headers)
        self.check_signature(headers, body)

    def check_signature(self, headers: Mapping[str, str], body: bytes) -> None:
        """The signature over the raw ``body``, once :meth:`check_headers` passed."""
        if self.signing_keys:
            try:
                verify(self.signing_keys, headers, body, now=self.clock(), tolerance=self.tolerance)
            except SignatureRejected as rejected:
                raise CallbackRejected(401, rejected.error, rejected.detail) from None
