"""TLS to RabbitMQ (``amqps://``) and PostgreSQL (``POSTGRES_SSLMODE``), and the one-line error a
refused certificate gets.

Contexts are built from file paths at start. The settings models build them once while validating,
so an unreadable or malformed certificate stops the service with exit code 2 and one line.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Literal

PostgresSslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
# Below "require", libpq (and asyncpg) may fall back to plain text and verify nothing.
VERIFYING_MODES = ("verify-ca", "verify-full")


class TlsConfigError(ValueError):
    """A certificate, key or CA file that cannot be used."""


def _load(what: str, path: Path, action: Callable[..., object], *args: object) -> None:
    try:
        action(str(path), *args)
    except FileNotFoundError:
        raise TlsConfigError(f"{what}: no such file {str(path)!r}") from None
    except PermissionError:
        raise TlsConfigError(f"{what}: cannot read {str(path)!r}") from None
    except (ssl.SSLError, OSError, ValueError) as error:
        raise TlsConfigError(f"{what}: {str(path)!r} is not a usable PEM file ({error})") from None


def amqp_ssl_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A client context that verifies the broker's certificate and host name against ``ca`` (the
    system's trusted CAs when unset), presenting ``cert``/``key`` when given."""
    return client_ssl_context("AMQP_TLS", ca, cert, key)


def client_ssl_context(
    prefix: str, ca: Path | None, cert: Path | None, key: Path | None
) -> ssl.SSLContext:
    """:func:`amqp_ssl_context` for the settings ``<prefix>_CA``, ``_CERT`` and ``_KEY`` (named in
    its errors)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca is not None:
        _load(f"{prefix}_CA", ca, context.load_verify_locations)
    if cert is not None:
        _load(f"{prefix}_CERT/{prefix}_KEY", cert, context.load_cert_chain, _str(key))
    return context


def postgres_ssl(
    mode: PostgresSslMode, rootcert: Path | None, cert: Path | None, key: Path | None
) -> ssl.SSLContext | str:
    """What asyncpg's ``ssl=`` takes for libpq's ``sslmode``.

    ``disable``, ``allow`` and ``prefer`` go to asyncpg as they are (``prefer``, libpq's default,
    is what the services did before this setting existed). From ``require`` on, a context of our
    own: asyncpg then insists on TLS, and reads neither ``~/.postgresql`` nor ``PGSSL*``
    variables behind the operator's back. As in libpq, ``require`` with a root certificate
    verifies the chain like ``verify-ca``; ``verify-full`` also checks the host name.
    """
    if mode in ("disable", "allow", "prefer"):
        return mode
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if mode == "require" and rootcert is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = mode == "verify-full"
        context.verify_mode = ssl.CERT_REQUIRED
        if rootcert is None:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            _load("POSTGRES_SSLROOTCERT", rootcert, context.load_verify_locations)
    if cert is not None:
        _load("POSTGRES_SSLCERT/POSTGRES_SSLKEY", cert, context.load_cert_chain, _str(key))
    return context


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def certificate_refused(error: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind ``error`` (aiormq wraps it), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe_refusal(target: str, error: ssl.SSLCertVerificationError, hint: str) -> str:
    """One line: what refused whose certificate, why, and which settings to check."""
    reason = error.verify_message or error.reason or str(error)
    return f"{target}: TLS certificate refused: {reason} ({hint})"
