"""The headers that authenticate one callback, when the tester is given the producer's secrets."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.webhooks import sign


@dataclass(frozen=True)
class CallbackSigner:
    """Signs with the first of ``signing_keys`` (the newest, while keys rotate) and sends
    ``bearer_token``; either may be empty (off)."""

    signing_keys: tuple[bytes, ...] = ()
    bearer_token: str = ""
    clock: Callable[[], float] = time.time

    def headers(self, body: bytes) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.signing_keys:
            msg_id = f"msg_{os.urandom(12).hex()}"
            headers.update(sign(self.signing_keys[:1], msg_id, int(self.clock()), body))
        if self.bearer_token:
            headers["Authorization"] = f"Bearer {self.bearer_token}"
        return headers
