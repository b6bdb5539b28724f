"""The live view's settings: the services' own models, so it logs in wherever they do.

``AMQP_URI`` and ``QUEUE_NAME`` come through :class:`common.settings.AmqpSettings`, ``STORE``
through :class:`common.store.settings.StoreChoice`, and then ``POSTGRES_*`` through
:class:`common.settings.PostgresSettings` or ``REDIS_*`` through
:class:`common.store.settings.RedisSettings`, the models the consumer and the routine build:
``*_FILE`` secrets, TLS files and every host of a list mean the same here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from pydantic import AnyHttpUrl, Field, ValidationError
from pydantic_settings import BaseSettings

from common.secrets import SecretFileError
from common.settings import AmqpSettings, PostgresSettings, describe_errors
from common.store.settings import RedisSettings, StoreChoice
from liveview.sources import Broker, Database

DEFAULT_ENV_FILE = ".env"
DEFAULT_PRODUCER = "http://127.0.0.1:9090"
# compose: the service name resolves to every replica (sources.expand_hosts)
DEFAULT_CONSUMER = "http://consumer:9100"


class ConfigurationError(ValueError):
    """A setting the view cannot use: one line for the operator, exit code 2."""


class ViewSettings(AmqpSettings):
    """The broker's account and queue (the services' model), and where the services listen."""

    callback_endpoint: AnyHttpUrl | None = Field(
        None,
        description=f"the producer's base URL (the tester's setting); unset: {DEFAULT_PRODUCER}",
    )
    consumer_1_metrics_port: int | None = Field(
        None, ge=1, le=65535, description="./scripts/run's first consumer's metrics port"
    )
    consumer_2_metrics_port: int | None = Field(
        None, ge=1, le=65535, description="./scripts/run's second consumer's metrics port"
    )


class ViewAndDatabaseSettings(ViewSettings, PostgresSettings):
    """Also ``POSTGRES_*``, as the consumer reads them: the view without ``--dsn``. One model, so
    one line names every bad setting."""


class ViewAndRedisSettings(ViewSettings, RedisSettings):
    """With ``STORE=redis``: ``REDIS_*`` instead of ``POSTGRES_*``, as the consumer reads them."""


@dataclass(frozen=True)
class Config:
    producer: str
    consumers: list[str]
    broker: Broker
    queue_name: str
    database: Database | None  # STORE=postgres (the default), or --dsn
    redis: RedisSettings | None = None  # STORE=redis

    @property
    def store_name(self) -> str:
        return "redis" if self.redis is not None else "postgresql"


ModelT = TypeVar("ModelT", bound=BaseSettings)


def _build(model: type[ModelT], env_files: Sequence[str]) -> ModelT:
    try:
        return model(_env_file=tuple(env_files))
    except ValidationError as error:
        raise ConfigurationError(describe_errors(error)) from None
    except SecretFileError as error:
        raise ConfigurationError(str(error)) from None


def load_config(
    env_files: Sequence[str] | None = None,
    *,
    producer: str | None = None,
    consumers: Sequence[str] | None = None,
    rabbitmq: str | None = None,
    dsn: str | None = None,
) -> Config:
    """Settings from the environment over ``env_files`` (later files win; default ``.env``), as
    the services read them; the arguments (the command line's flags) override them."""
    files = list(env_files or [DEFAULT_ENV_FILE])
    for name in files:
        if name != DEFAULT_ENV_FILE and not Path(name).is_file():
            raise ConfigurationError(f"--env-file {name}: no such file")
    view: ViewSettings
    redis: RedisSettings | None = None
    database: Database | None = None
    store = _build(StoreChoice, files).store
    if store == "redis" and not dsn:
        view = redis = _build(ViewAndRedisSettings, files)
        if not redis.redis_url:
            raise ConfigurationError("REDIS_URL is required with STORE=redis (nor REDIS_URL_FILE)")
    elif dsn:
        # a libpq URL as given, with its own sslmode: POSTGRES_* are not read at all
        view = _build(ViewSettings, files)
        database = Database(dsn=dsn, ssl=None, user=urlsplit(dsn).username or "postgres")
    else:
        view = full = _build(ViewAndDatabaseSettings, files)
        database = Database(dsn=full.postgres_dsn, ssl=full.postgres_ssl(), user=full.postgres_user)
    ports = (view.consumer_1_metrics_port, view.consumer_2_metrics_port)
    from_ports = [f"http://127.0.0.1:{port}" for port in ports if port is not None]
    endpoint = str(view.callback_endpoint).rstrip("/") if view.callback_endpoint else None
    return Config(
        producer=producer or endpoint or DEFAULT_PRODUCER,
        consumers=list(consumers or []) or from_ports or [DEFAULT_CONSUMER],
        # the management API of the first node: every node shows the cluster's queues
        broker=Broker.from_amqp_uri(view.amqp_nodes[0], rabbitmq),
        queue_name=view.queue_name,
        database=database,
        redis=redis,
    )
