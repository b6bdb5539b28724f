from __future__ import annotations

from pydantic import AnyHttpUrl, Field, field_validator, model_validator

from common.amqp import RETRY_TIERS_MS
from common.broker.settings import BrokerSettings
from common.open_files import OTHER_DESCRIPTORS, OpenFiles
from common.settings import Duration, PostgresSettings
from common.store.settings import RedisSettings, StoreChoice
from consumer.status import StatusClientKind

POSTGRES_ONLY = " (required with STORE=postgres)"


class ConsumerSettings(BrokerSettings, StoreChoice, PostgresSettings, RedisSettings):
    # Required by PostgresSettings; here only with STORE=postgres (checked below), so that a Redis
    # deployment carries no PostgreSQL settings at all.
    postgres_host: str = Field(
        "",
        description="PostgreSQL host; a primary and its standbys: a comma-separated list "
        "(the services follow the one that accepts writes)" + POSTGRES_ONLY,
    )
    postgres_db: str = Field("", description="database name" + POSTGRES_ONLY)
    postgres_user: str = Field("", description="database user" + POSTGRES_ONLY)

    tester_endpoint: AnyHttpUrl = Field(
        description="status API base URL; the consumer asks TESTER_ENDPOINT/objects/{id}"
    )
    # 2000 in flight at the tester's mean 2.3 s delay is ~870 ids/s per process (Little's law),
    # five times the original pair of consumers, for ~2000 sockets and a few tens of MB.
    max_consumers: int = Field(
        2000,
        ge=1,
        le=50_000,
        description="status requests in flight per process; each holds a socket, so the "
        "consumer raises its open-file soft limit to MAX_CONSUMERS + POSTGRES_POOL_SIZE + 64, or "
        "exits 2 when the hard limit is lower",
    )
    status_timeout: Duration = Field(
        10.0, gt=0, description="connect and read timeout of one status request"
    )
    status_client: StatusClientKind = Field(
        "httptools",
        description="httptools (httptools' parser on an asyncio protocol, public layers only: "
        "the least CPU per id) or standard (a plain aiohttp ClientSession: the same answers, "
        "more CPU per id)",
    )
    max_attempts: int = Field(
        8, ge=1, le=100, description="status lookups per id before it goes to the dead letters"
    )
    retry_base_delay: Duration = Field(
        1.0, gt=0, description="delay before the first retry; doubles per attempt, with jitter"
    )
    retry_max_delay: Duration = Field(
        60.0, gt=0, description="longest delay between two attempts (at most 512s)"
    )
    batch_max_rows: int = Field(
        500, ge=1, le=100_000, description="flush the upsert batch at this many rows"
    )
    batch_max_delay: Duration = Field(
        0.05, gt=0, description="flush the upsert batch this long after its first row at most"
    )
    shutdown_grace: Duration = Field(
        10.0, ge=0, description="on SIGTERM, how long in-flight ids may take to finish"
    )
    prefetch: int | None = Field(
        None,
        ge=1,
        le=65_535,
        description="unacked messages per process; unset: sized from MAX_CONSUMERS and the "
        "ids per message seen so far",
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="serve Prometheus metrics on this port (0: off)"
    )
    watchdog_interval: Duration = Field(
        30.0,
        gt=0,
        description="re-subscribe when nothing arrived for this long while the queue holds work",
    )

    @field_validator("status_client", mode="before")
    @classmethod
    def _fast_is_retired(cls, value: object) -> object:
        if value == "fast":
            # Its own line rather than the generic one: a deployment that chose it is told why.
            raise ValueError(
                "fast was retired (it drove aiohttp internals; httptools is faster): "
                "use httptools (the default) or standard"
            )
        return value

    @field_validator("tester_endpoint")
    @classmethod
    def _no_query(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if value.query or value.fragment:
            raise ValueError("must be a base URL without query or fragment")
        return value

    @model_validator(mode="after")
    def _store_configured(self) -> ConsumerSettings:
        if self.store == "redis":
            if not self.redis_url:
                raise ValueError("REDIS_URL is required with STORE=redis (nor REDIS_URL_FILE)")
            return self
        missing = [
            name.upper()
            for name in ("postgres_host", "postgres_db", "postgres_user")
            if not getattr(self, name)
        ]
        if missing:
            raise ValueError(f"{', '.join(missing)} required with STORE=postgres but not set")
        return self

    @model_validator(mode="after")
    def _delays_in_tiers(self) -> ConsumerSettings:
        if self.retry_max_delay * 1000 > RETRY_TIERS_MS[-1]:
            raise ValueError(f"RETRY_MAX_DELAY must be at most {RETRY_TIERS_MS[-1] // 1000}s")
        if self.retry_base_delay > self.retry_max_delay:
            raise ValueError("RETRY_BASE_DELAY must not exceed RETRY_MAX_DELAY")
        return self

    def open_files(self) -> OpenFiles:
        """Descriptors held at once: a socket per status lookup in flight and per database
        connection, and the process's own few."""
        return OpenFiles(
            needed=self.max_consumers + self.postgres_pool_size + OTHER_DESCRIPTORS,
            setting="MAX_CONSUMERS",
            value=self.max_consumers,
            why=f"{self.max_consumers} status lookups + {self.postgres_pool_size} database "
            f"connections + {OTHER_DESCRIPTORS} others",
        )

    @property
    def status_base_url(self) -> str:
        return str(self.tester_endpoint).rstrip("/")
