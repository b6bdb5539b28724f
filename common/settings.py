"""Settings shared by every service, read from the environment and ``.env``.

Each service builds its settings once, in its entry point, with :func:`load_settings`, and passes
them down. Nothing here reads the environment at import time.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal, NoReturn, TypeVar
from urllib.parse import quote

from pydantic import (
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.durations import DURATION_HINT, parse_duration
from common.nodes import (
    NodeListError,
    parse_amqp_nodes,
    parse_hosts,
    parse_ports,
    postgres_hostlist,
)

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


# The error type whose message already names the entry: no "(got …)" with the whole value, which
# would repeat every node's password.
NODE_LIST_ERROR = "node_list"


def _node_list_error(error: NodeListError) -> PydanticCustomError:
    return PydanticCustomError(NODE_LIST_ERROR, str(error))


class AmqpSettings(ServiceSettings):
    amqp_uri: str = Field(
        description="RabbitMQ URI, e.g. amqp://user:pass@host:5672/vhost; several nodes of one "
        "cluster: a comma-separated list (same user, password and vhost)"
    )
    queue_name: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="work queue; retry and dead-letter queues derive their names from it",
    )

    @field_validator("amqp_uri")
    @classmethod
    def _valid_node_list(cls, value: str) -> str:
        try:
            parse_amqp_nodes(value)
        except NodeListError as error:
            raise _node_list_error(error) from None
        return value

    @property
    def amqp_nodes(self) -> tuple[str, ...]:
        """The broker's nodes, in the configured order (connecting shuffles them)."""
        return parse_amqp_nodes(self.amqp_uri)


_PORT: TypeAdapter[int] = TypeAdapter(Annotated[int, Field(ge=1, le=65535)])


class PostgresSettings(ServiceSettings):
    postgres_host: str = Field(
        min_length=1,
        description="PostgreSQL host; a primary and its standbys: a comma-separated list "
        "(the services follow the one that accepts writes)",
    )
    postgres_port: Annotated[int | tuple[int, ...], NoDecode] = Field(
        5432,
        description="PostgreSQL port; with several hosts, one port for all or a "
        "comma-separated list of one per host",
    )
    postgres_db: str = Field(min_length=1, description="database name")
    postgres_user: str = Field(min_length=1, description="database user")
    postgres_password: str = Field("", description="database password (empty: trust/peer auth)")
    postgres_pool_size: int = Field(10, ge=1, le=1000, description="connections per process")

    @field_validator("postgres_host")
    @classmethod
    def _valid_hosts(cls, value: str) -> str:
        try:
            parse_hosts(value)
        except NodeListError as error:
            raise _node_list_error(error) from None
        return value

    @field_validator("postgres_port", mode="before")
    @classmethod
    def _valid_ports(cls, value: object, info: ValidationInfo) -> int | tuple[int, ...]:
        if not isinstance(value, str) or "," not in value:
            # One port: the same checks and messages as a plain integer field.
            return _PORT.validate_python(value)
        hosts = info.data.get("postgres_host")
        host_count = len(parse_hosts(hosts)) if isinstance(hosts, str) else value.count(",") + 1
        try:
            return parse_ports(value, host_count)
        except NodeListError as error:
            raise _node_list_error(error) from None

    @property
    def postgres_hosts(self) -> tuple[str, ...]:
        return parse_hosts(self.postgres_host)

    @property
    def postgres_ports(self) -> tuple[int, ...]:
        port = self.postgres_port
        return (port,) if isinstance(port, int) else port

    @property
    def postgres_dsn(self) -> str:
        """A libpq-style URL; with several hosts, asyncpg's multi-host form that connects only
        to the one accepting writes (``target_session_attrs=read-write``), so that after a
        failover the pool's new connections find the promoted standby by themselves."""
        auth = quote(self.postgres_user, safe="")
        if self.postgres_password:
            auth += ":" + quote(self.postgres_password, safe="")
        database = quote(self.postgres_db, safe="")
        hosts, ports = self.postgres_hosts, self.postgres_ports
        if len(hosts) == 1 and len(ports) == 1:
            return f"postgresql://{auth}@{hosts[0]}:{ports[0]}/{database}"
        return (
            f"postgresql://{auth}@{postgres_hostlist(hosts, ports)}/{database}"
            "?target_session_attrs=read-write"
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
        if DURATION_HINT in message or item["type"] == NODE_LIST_ERROR:
            parts.append(f"{name}: {message}")
        else:
            parts.append(f"{name}: {message} (got {item.get('input')!r})")
    return "; ".join(parts)


def _exit_with(service: str, message: str) -> NoReturn:
    sys.stderr.write(f"{service}: configuration error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)
