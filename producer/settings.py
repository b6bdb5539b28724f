from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, model_validator

from common.broker.settings import BrokerSettings
from common.open_files import (
    OTHER_DESCRIPTORS,
    ConnectionBudget,
    OpenFiles,
    connection_budget,
    hard_open_file_limit,
)
from common.settings import CallbackAuthSettings, Duration
from common.versions import GUARDED_HTTP, FastPath
from producer import publish_modes
from producer.callback import CallbackLimits
from producer.confirms import PublishMode
from producer.signatures import CallbackAuth

# Below this many connections a producer cannot serve a tester and its own probes under a flood.
FEWEST_CONNECTIONS = 16


class ProducerSettings(BrokerSettings, CallbackAuthSettings):
    # A service in a container must listen on every interface; PRODUCER_HOST narrows it.
    producer_host: str = Field(
        "0.0.0.0",  # noqa: S104 - containers listen on every interface
        min_length=1,
        description="address the HTTP server binds",
    )
    producer_port: int = Field(9090, ge=1, le=65535, description="HTTP port of POST /callback")
    ids_per_message: int = Field(
        200,
        ge=1,
        le=100_000,
        description="largest number of ids in one work message (1: one message per id)",
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=64, description="largest accepted callback body; larger gets 413"
    )
    max_ids_per_callback: int = Field(
        10_000, ge=1, description="most ids one callback may carry; more gets 413"
    )
    publish_timeout: Duration = Field(
        0.25,
        gt=0,
        description="wait this long for the broker's confirms, then spool the callback instead",
    )
    publish_mode: PublishMode = Field(
        PublishMode.PIPELINE,
        description="pipeline: batched confirmed publishing on aiormq internals, the fast default "
        "(aiormq and pamqp versions checked at start); standard: aio-pika's public "
        "exchange.publish, the fallback for an untested library version (slower; a broker alarm "
        "shows as confirm timeouts)",
    )
    spool_path: Path = Field(
        Path("var/spool.sqlite3"),
        description="SQLite file holding callbacks the broker has not confirmed yet",
    )
    relay_batch_size: int = Field(
        500, ge=1, le=100_000, description="spooled messages the relay publishes per round"
    )
    relay_publish_timeout: Duration = Field(
        5.0, gt=0, description="how long the relay waits for the confirms of one round"
    )
    broker_max_backoff: Duration = Field(
        5.0,
        gt=0,
        description="longest pause between reconnects and relay rounds while the broker fails",
    )
    keepalive_timeout: Duration = Field(
        75.0,
        gt=0,
        description="idle time before the server closes a kept-alive client connection",
    )
    shutdown_grace: Duration = Field(
        10.0, ge=0, description="on SIGTERM, time for in-flight requests and the relay to finish"
    )
    callback_signature_tolerance: Duration = Field(
        300.0,
        gt=0,
        description="signed callbacks: how far webhook-timestamp may be from the producer's "
        "clock, either way",
    )
    producer_header_timeout: Duration = Field(
        10.0,
        gt=0,
        description="a client must send a whole request head within this time of connecting (or "
        "of its first byte after an idle keep-alive); slower: 408 and the connection closed",
    )
    producer_body_timeout: Duration = Field(
        30.0,
        gt=0,
        description="a client must send a whole request body within this time of its head; "
        "slower: the connection closed",
    )
    producer_max_connections: int | None = Field(
        None,
        ge=FEWEST_CONNECTIONS,
        description="most open client connections; at the cap a new connection closes the one "
        "that made the least progress (oldest incomplete head, longest idle, oldest incomplete "
        "body); unset: the open-file limit less a reserve, at most 10000",
    )

    @model_validator(mode="after")
    def _connections_within_open_files(self) -> ProducerSettings:
        budget = self.connection_budget
        if budget.default < FEWEST_CONNECTIONS:
            raise ValueError(
                f"the open-file limit (ulimit -n) leaves room for {budget.descriptor_safe} "
                f"connections, fewer than {FEWEST_CONNECTIONS}: raise it"
            )
        wanted = self.producer_max_connections
        if wanted is not None and wanted > budget.descriptor_safe:
            raise ValueError(
                f"PRODUCER_MAX_CONNECTIONS: {wanted} would run out of file descriptors; the "
                f"open-file limit (ulimit -n) leaves room for {budget.descriptor_safe}"
            )
        return self

    @cached_property
    def connection_budget(self) -> ConnectionBudget:
        """The budget of this process's hard open-file limit, read once: when the settings are
        validated, then kept for the cap, the soft limit to raise and the listen backlog."""
        return connection_budget(hard_open_file_limit())

    @property
    def max_connections(self) -> int:
        """PRODUCER_MAX_CONNECTIONS, or the default the open-file limit allows."""
        if self.producer_max_connections is not None:
            return self.producer_max_connections
        return self.connection_budget.default

    def open_files(self) -> OpenFiles:
        """The descriptors the connection cap needs: the soft limit is raised to them at start."""
        budget = self.connection_budget
        return OpenFiles(
            self.max_connections + OTHER_DESCRIPTORS + budget.backlog,
            "PRODUCER_MAX_CONNECTIONS",
            self.max_connections,
            f"client connections + {OTHER_DESCRIPTORS} for the broker, spool and loop + a "
            f"listen backlog of {budget.backlog}",
        )

    def fast_paths(self) -> tuple[FastPath, ...]:
        """The library internals checked at start: the slow-client guard's, always, and the
        publish mode's."""
        return (GUARDED_HTTP, *publish_modes.fast_paths(self.publish_mode))

    def callback_limits(self) -> CallbackLimits:
        return CallbackLimits(self.max_body_bytes, self.max_ids_per_callback)

    def callback_auth(self) -> CallbackAuth:
        return CallbackAuth(
            self.signing_keys, self.callback_bearer_token, self.callback_signature_tolerance
        )
