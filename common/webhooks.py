"""Standard Webhooks signatures (https://www.standardwebhooks.com), as Svix and others use them.

A signed request carries three headers:

* ``webhook-id`` — a unique id of the message;
* ``webhook-timestamp`` — integer seconds since the epoch;
* ``webhook-signature`` — space-separated ``v1,<base64 HMAC-SHA256>`` entries, each over
  ``id.timestamp.body`` with one secret (several while keys rotate).

Secrets are written ``whsec_<base64 key>``. Pure functions: the producer verifies with them, the
tester signs with them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
VERSION = "v1"
MAX_ID_LENGTH = 256
MIN_KEY_BYTES = 16


@dataclass(frozen=True, slots=True)
class SignatureRejected(Exception):
    """Why a request's signature does not hold: ``error`` a stable code, ``detail`` for humans."""

    error: str
    detail: str


def parse_secret(secret: str) -> bytes:
    """The key of a ``whsec_<base64>`` secret; ``ValueError``, never naming it, if malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a signing secret must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError(f"a signing secret must be {SECRET_PREFIX}<base64>") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a signing secret's key must be at least {MIN_KEY_BYTES} bytes")
    return key


def parse_secrets(value: str) -> tuple[bytes, ...]:
    """Space-separated ``whsec_…`` secrets, as ``CALLBACK_SIGNING_SECRETS`` holds them."""
    return tuple(parse_secret(secret) for secret in value.split())


def new_secret(key: bytes) -> str:
    return SECRET_PREFIX + base64.b64encode(key).decode()


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The base64 HMAC-SHA256 of ``id.timestamp.body``."""
    return base64.b64encode(_digest(key, msg_id, timestamp, body)).decode()


def sign(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of a request signed with every key in ``keys``."""
    if not keys:
        raise ValueError("at least one key is needed to sign")
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: " ".join(
            f"{VERSION},{signature(key, msg_id, timestamp, body)}" for key in keys
        ),
    }


def verify(
    keys: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float,
) -> None:
    """Return if one ``v1`` signature matches one key; raise :class:`SignatureRejected` if not.

    The timestamp must lie within ``tolerance`` seconds of ``now`` on either side: an old
    request is a replay, one from the future a sender with a wrong clock. ``headers`` must be
    case-insensitive (as Starlette's and httpx's are) or use the lower-case names.
    """
    msg_id, timestamp = check_headers(headers, now=now, tolerance=tolerance)
    expected = [_digest(key, msg_id, timestamp, body) for key in keys]
    seen_version = False
    for entry in headers.get(SIGNATURE_HEADER, "").split():
        version, _, encoded = entry.partition(",")
        if version != VERSION:
            continue
        seen_version = True
        try:
            given = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        # compare_digest against every key, no early exit: the time taken does not say which key
        # (or which prefix of a signature) came close.
        matched = False
        for digest in expected:
            matched |= hmac.compare_digest(given, digest)
        if matched:
            return
    if not seen_version:
        raise SignatureRejected(
            "unsupported_signature", f"no {VERSION} signature in {SIGNATURE_HEADER}"
        )
    raise SignatureRejected("invalid_signature", "no signature matches an accepted secret")


def check_headers(headers: Mapping[str, str], *, now: float, tolerance: float) -> tuple[str, int]:
    """The id and timestamp, once both are present and the timestamp is fresh: what can be
    refused before the body is read."""
    msg_id = headers.get(ID_HEADER)
    raw_timestamp = headers.get(TIMESTAMP_HEADER)
    signatures = headers.get(SIGNATURE_HEADER)
    missing = [
        name
        for name, value in (
            (ID_HEADER, msg_id),
            (TIMESTAMP_HEADER, raw_timestamp),
            (SIGNATURE_HEADER, signatures),
        )
        if not value
    ]
    if missing or msg_id is None or raw_timestamp is None:
        raise SignatureRejected("missing_signature", f"missing header {', '.join(missing)}")
    if len(msg_id) > MAX_ID_LENGTH:
        raise SignatureRejected("invalid_id", f"{ID_HEADER} longer than {MAX_ID_LENGTH}")
    if not raw_timestamp.isascii() or not raw_timestamp.isdigit() or len(raw_timestamp) > 12:
        raise SignatureRejected(
            "invalid_timestamp", f"{TIMESTAMP_HEADER} must be integer seconds since the epoch"
        )
    timestamp = int(raw_timestamp)
    if abs(now - timestamp) > tolerance:
        side = "old" if timestamp < now else "far in the future"
        raise SignatureRejected(
            "stale_timestamp",
            f"{TIMESTAMP_HEADER} is {side}: {abs(now - timestamp):.0f}s from the server's clock, "
            f"tolerance {tolerance:g}s",
        )
    return msg_id, timestamp


def bearer_matches(expected: str, authorization: str | None) -> bool:
    """Whether ``Authorization: Bearer <token>`` carries ``expected``, compared in constant time."""
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())
