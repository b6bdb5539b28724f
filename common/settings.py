"""Settings shared by every service, read from the environment and ``.env``.

Each service builds its settings once, in its entry point, with :func:`load_settings`, and passes
them down. Nothing here reads the environment at import time.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal, NoReturn, TypeVar
from urllib.parse import quote

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.durations import DURATION_HINT, parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, given as a Go-style duration (``3s``, ``500ms``, ``1m30s``) or plain seconds."""


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class ServiceSettings(BaseSettings):
    """What every process reads: logging and how long to wait for its dependencies at start."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        frozen=True,
    )

    log_level: Annotated[LogLevel, BeforeValidator(_lower)] = Field(
        "info", description="debug, info, warning, error or critical"
    )
    log_format: Literal["json", "console"] | None = Field(
        None, description="json or console; unset: console on a terminal, json otherwise"
    )
    startup_timeout: Duration = Field(
        120.0,
        description="consumer and routine: how long to retry the broker/database at start "
        "before exiting 1 (the producer spools instead; the tester needs neither)",
    )


class AmqpSettings(ServiceSettings):
    amqp_uri: str = Field(
        pattern=r"^amqps?://", description="RabbitMQ URI, e.g. amqp://user:pass@host:5672/vhost"
    )
    queue_name: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="work queue; retry and dead-letter queues derive their names from it",
    )


class PostgresSettings(ServiceSettings):
    postgres_host: str = Field(min_length=1, description="PostgreSQL host")
    postgres_port: int = Field(5432, ge=1, le=65535, description="PostgreSQL port")
    postgres_db: str = Field(min_length=1, description="database name")
    postgres_user: str = Field(min_length=1, description="database user")
    postgres_password: str = Field("", description="database password (empty: trust/peer auth)")
    postgres_pool_size: int = Field(10, ge=1, le=1000, description="connections per process")

    @property
    def postgres_dsn(self) -> str:
        auth = quote(self.postgres_user, safe="")
        if self.postgres_password:
            auth += ":" + quote(self.postgres_password, safe="")
        return (
            f"postgresql://{auth}@{self.postgres_host}:{self.postgres_port}/"
            f"{quote(self.postgres_db, safe='')}"
        )


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(model: type[SettingsT], service: str, **overrides: Any) -> SettingsT:
    """Build ``model`` from the environment, or stop the process with exit code 2.

    A bad configuration is an operator's mistake, not a bug: it gets one line on stderr naming
    each offending variable and what it expects, and no traceback.
    """
    try:
        return model(**overrides)
    except ValidationError as error:
        _exit_with(service, describe_errors(error))


def describe_errors(error: ValidationError) -> str:
    """One line naming every invalid or missing variable and what it expects."""
    parts = []
    for item in error.errors(include_url=False):
        name = str(item["loc"][0]).upper() if item["loc"] else "configuration"
        if item["type"] == "missing":
            parts.append(f"{name} is required but not set")
            continue
        message = item["msg"].removeprefix("Value error, ")
        if DURATION_HINT in message:
            parts.append(f"{name}: {message}")
        else:
            parts.append(f"{name}: {message} (got {item.get('input')!r})")
    return "; ".join(parts)


def _exit_with(service: str, message: str) -> NoReturn:
    sys.stderr.write(f"{service}: configuration error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)
