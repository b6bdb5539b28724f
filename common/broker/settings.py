"""The broker settings: ``BROKER`` picks one; ``AMQP_*`` configure RabbitMQ, ``PUBSUB_*`` Pub/Sub.

The choice is read once, where each service starts. A deployment that chose Pub/Sub carries no
RabbitMQ settings at all (``AMQP_URI`` is required only with ``BROKER=rabbitmq``), and its
``PUBSUB_*`` values and ``QUEUE_NAME`` are checked by Pub/Sub's rules at start, before anything
connects: a bad one exits 2 with one line naming it (:func:`common.settings.load_settings`).
"""

from __future__ import annotations

import ssl
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from common.broker.pubsub_topology import (
    PubSubSettings,
    PubSubSettingsError,
    PubSubTopology,
    parse_emulator_host,
    parse_project_id,
)
from common.nodes import NodeListError, parse_amqp_nodes
from common.secrets import SECRET
from common.settings import NODE_LIST_ERROR, AmqpSettings

BrokerKind = Literal["rabbitmq", "pubsub"]


class BrokerSettings(AmqpSettings):
    """:class:`~common.settings.AmqpSettings` with ``BROKER`` and the Pub/Sub settings."""

    broker: BrokerKind = Field(
        "rabbitmq",
        description="the message broker: rabbitmq (AMQP_URI) or pubsub (Google Cloud Pub/Sub: "
        "PUBSUB_PROJECT_ID; the emulator with PUBSUB_EMULATOR_HOST)",
    )
    amqp_uri: str = Field(
        "",
        pattern=r"^(?:amqps?://|$)",
        description="RabbitMQ URI, e.g. amqp://user:pass@host:5672/vhost; amqps:// for TLS; "
        "several nodes of one cluster: a comma-separated list (same scheme, user, password and "
        "vhost) (required with BROKER=rabbitmq)",
        repr=False,
        json_schema_extra=SECRET,
    )
    pubsub_project_id: str = Field(
        "",
        description="BROKER=pubsub: the Google Cloud project of the topic and subscriptions "
        "(required with BROKER=pubsub)",
    )
    pubsub_emulator_host: str = Field(
        "",
        description="BROKER=pubsub: host:port of the Pub/Sub emulator, as Google's clients take "
        "it; unset: the service itself, with Application Default Credentials",
    )

    @field_validator("amqp_uri")
    @classmethod
    def _valid_node_list(cls, value: str) -> str:
        # Replaces AmqpSettings' check (same name): an empty value is allowed here and refused
        # below only when RabbitMQ is the broker.
        if value:
            try:
                parse_amqp_nodes(value)
            except NodeListError as error:
                raise PydanticCustomError(NODE_LIST_ERROR, str(error)) from None
        return value

    @model_validator(mode="after")
    def _tls_files_usable(self) -> BrokerSettings:
        if self.broker == "rabbitmq" and self.amqp_uri:
            self.amqp_ssl_context()
        return self

    @model_validator(mode="after")
    def _broker_configured(self) -> BrokerSettings:
        if self.broker == "rabbitmq":
            if not self.amqp_uri:
                raise ValueError("AMQP_URI is required but not set (nor AMQP_URI_FILE)")
            return self
        if not self.pubsub_project_id:
            raise ValueError("PUBSUB_PROJECT_ID is required with BROKER=pubsub")
        try:
            parse_project_id(self.pubsub_project_id)
            if self.pubsub_emulator_host:
                parse_emulator_host(self.pubsub_emulator_host)
            PubSubTopology.for_queue(self.pubsub_project_id, self.queue_name)
        except PubSubSettingsError as error:
            raise ValueError(str(error)) from None
        return self

    def amqp_ssl_context(self) -> ssl.SSLContext | None:
        if self.broker != "rabbitmq":
            return None
        return super().amqp_ssl_context()

    @property
    def pubsub(self) -> PubSubSettings:
        """The Pub/Sub settings (meaningful with ``BROKER=pubsub``)."""
        return PubSubSettings(self.pubsub_project_id, self.pubsub_emulator_host or None)

    @property
    def pubsub_topology(self) -> PubSubTopology:
        return PubSubTopology.for_queue(self.pubsub_project_id, self.queue_name)
