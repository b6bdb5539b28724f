"""Settings shared by every service, read from the environment and ``.env``.

Each service builds its settings once, in its entry point, with :func:`load_settings`, and passes
them down. Nothing here reads the environment at import time.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar
from urllib.parse import quote

from pydantic import (
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from common import tls
from common.durations import DURATION_HINT, parse_duration
from common.nodes import (
    NodeListError,
    parse_amqp_nodes,
    parse_hosts,
    parse_ports,
    postgres_hostlist,
)
from common.secrets import SECRET, SecretFileError, SecretFilesSource, env_mapping, mask_uri
from common.webhooks import parse_secrets

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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # NAME_FILE wins over NAME: a mounted secret replaces a development value in .env.
        files = SecretFilesSource(
            settings_cls, env_mapping(env_settings), env_mapping(dotenv_settings)
        )
        return init_settings, files, env_settings, dotenv_settings, file_secret_settings


# The error type whose message already names the entry: no "(got …)" with the whole value, which
# would repeat every node's password.
NODE_LIST_ERROR = "node_list"


def _node_list_error(error: NodeListError) -> PydanticCustomError:
    return PydanticCustomError(NODE_LIST_ERROR, str(error))


def uses_tls(nodes: Sequence[str]) -> bool:
    """Whether every node of ``AMQP_URI`` is ``amqps://``; a list mixing schemes is refused.

    One TLS context serves the whole list and the client may fail over to any node, so the
    decision looks at every entry, never the first alone: an ``amqp://`` node behind an
    ``amqps://`` first one would get the password in clear text.
    """
    secure = {node.strip().lower().startswith("amqps://") for node in nodes}
    if len(secure) > 1:
        raise ValueError(
            "AMQP_URI mixes amqp:// and amqps:// nodes: every node must use TLS, or none"
        )
    return secure == {True}


class AmqpSettings(ServiceSettings):
    amqp_uri: str = Field(
        pattern=r"^amqps?://",
        description="RabbitMQ URI, e.g. amqp://user:pass@host:5672/vhost; amqps:// for TLS; "
        "several nodes of one cluster: a comma-separated list (same scheme, user, password and "
        "vhost)",
        repr=False,
        json_schema_extra=SECRET,
    )
    amqp_tls_ca: Path | None = Field(
        None,
        description="amqps://: CA file (PEM) the broker's certificate must chain to; unset: the "
        "system's trusted CAs. The host name in AMQP_URI must match the certificate",
    )
    amqp_tls_cert: Path | None = Field(
        None, description="amqps://: client certificate (PEM) for brokers that ask for one"
    )
    amqp_tls_key: Path | None = Field(None, description="amqps://: the client certificate's key")
    queue_name: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="work queue; retry and dead-letter queues derive their names from it "
        "(BROKER=pubsub: the topic; its subscriptions and dead-letter topic are named from it)",
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

    @model_validator(mode="after")
    def _tls_files_usable(self) -> AmqpSettings:
        self.amqp_ssl_context()
        return self

    def amqp_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``amqps://`` nodes, ``None`` for ``amqp://`` ones."""
        tls_files = (self.amqp_tls_ca, self.amqp_tls_cert, self.amqp_tls_key)
        if not uses_tls(self.amqp_nodes):
            if any(tls_files):
                raise ValueError("AMQP_TLS_* settings need an amqps:// AMQP_URI")
            return None
        if self.amqp_tls_key is not None and self.amqp_tls_cert is None:
            raise ValueError("AMQP_TLS_KEY needs AMQP_TLS_CERT")
        return tls.amqp_ssl_context(*tls_files)

    @property
    def amqp_uri_masked(self) -> str:
        return mask_uri(self.amqp_uri)


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
    postgres_password: str = Field(
        "",
        description="database password (empty: trust/peer auth)",
        repr=False,
        json_schema_extra=SECRET,
    )
    postgres_pool_size: int = Field(10, ge=1, le=1000, description="connections per process")
    postgres_sslmode: tls.PostgresSslMode = Field(
        "prefer",
        description="libpq's sslmode: disable, allow, prefer, require, verify-ca or verify-full "
        "(certificate and host name checked)",
    )
    postgres_sslrootcert: Path | None = Field(
        None,
        description="CA file (PEM) for verify-ca/verify-full (and require, which then verifies "
        "the chain); unset: the system's trusted CAs",
    )
    postgres_sslcert: Path | None = Field(
        None, description="client certificate (PEM), for certificate authentication"
    )
    postgres_sslkey: Path | None = Field(None, description="the client certificate's key")

    @model_validator(mode="after")
    def _ssl_files_usable(self) -> PostgresSettings:
        if self.postgres_sslkey is not None and self.postgres_sslcert is None:
            raise ValueError("POSTGRES_SSLKEY needs POSTGRES_SSLCERT")
        self.postgres_ssl()
        return self

    def postgres_ssl(self) -> ssl.SSLContext | str:
        """asyncpg's ``ssl=`` for ``POSTGRES_SSLMODE``."""
        return tls.postgres_ssl(
            self.postgres_sslmode,
            self.postgres_sslrootcert,
            self.postgres_sslcert,
            self.postgres_sslkey,
        )

    @field_validator("postgres_host")
    @classmethod
    def _valid_hosts(cls, value: str) -> str:
        if not value:
            return value  # required here (min_length); optional where another store is chosen
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
        host_count = len(parse_hosts(hosts)) if hosts else value.count(",") + 1
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


class CallbackAuthSettings(ServiceSettings):
    """How callbacks are authenticated (producer: required; tester: sent). Both off by default."""

    callback_signing_secrets: str = Field(
        "",
        description="Standard Webhooks secrets (whsec_<base64>, space-separated): the producer "
        "accepts a callback signed with any of them, the tester signs with the first; "
        "unset: no signatures",
        repr=False,
        json_schema_extra=SECRET,
    )
    callback_bearer_token: str = Field(
        "",
        description="producer: require Authorization: Bearer <token> on callbacks; tester: send "
        "it; unset: off",
        repr=False,
        json_schema_extra=SECRET,
    )

    @field_validator("callback_signing_secrets")
    @classmethod
    def _secrets_parse(cls, value: str) -> str:
        parse_secrets(value)
        return value

    @property
    def signing_keys(self) -> tuple[bytes, ...]:
        return parse_secrets(self.callback_signing_secrets)


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
    except SecretFileError as error:
        _exit_with(service, str(error))


def describe_errors(error: ValidationError) -> str:
    """One line naming every invalid or missing variable and what it expects."""
    parts = []
    for item in error.errors(include_url=False):
        name = str(item["loc"][0]).upper() if item["loc"] else "configuration"
        if item["type"] == "missing":
            also = f" (nor {name}_FILE)" if name in SECRET_VARIABLES else ""
            parts.append(f"{name} is required but not set{also}")
            continue
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:
            # A check across fields: its input is every setting, secrets included.
            parts.append(message)
        elif name in SECRET_VARIABLES:
            # Never echo a secret, not even a malformed one.
            parts.append(f"{name}: {message}")
        elif DURATION_HINT in message or item["type"] == NODE_LIST_ERROR:
            parts.append(f"{name}: {message}")
        else:
            parts.append(f"{name}: {message} (got {item.get('input')!r})")
    return "; ".join(parts)


SECRET_VARIABLES = {
    "AMQP_URI",
    "REDIS_URL",
    "POSTGRES_PASSWORD",
    "CALLBACK_SIGNING_SECRETS",
    "CALLBACK_BEARER_TOKEN",
}


def _exit_with(service: str, message: str) -> NoReturn:
    sys.stderr.write(f"{service}: configuration error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)
