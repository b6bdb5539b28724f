"""Google Pub/Sub: the settings it needs and the one topology every service ensures.

Topology, derived from ``QUEUE_NAME`` (``q``) in project ``PUBSUB_PROJECT_ID``:

* topic ``q`` — the producer publishes every callback's messages here.
* subscription ``q.work`` on ``q`` — the consumers pull from it. Its dead-letter policy sends a
  message that failed ``max_delivery_attempts`` deliveries to the topic ``q.dead``.
* topic ``q.dead`` and subscription ``q.dead`` on it — dead letters wait there for ``replay-dead``
  (topics and subscriptions are separate namespaces, so the two share the RabbitMQ queue's name).

Creating is idempotent (``AlreadyExists`` counts as done) and every service creates the topics
before the subscriptions, so services may start in any order. An existing subscription is not
compared with the wanted one: Pub/Sub refuses nothing here, so a changed setting is applied by
hand (documented in docs/pubsub.md).

The settings are pure functions of the environment's values so a bad one is refused at start
with exit code 2 and one line, before anything connects.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

# Google's rules for project ids (6-30 characters: lowercase letters, digits, hyphens; a letter
# first, no hyphen last), with the legacy domain-scoped form ``example.com:project``.
PROJECT_ID = re.compile(r"^(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
# Google's rules for topic and subscription ids: a letter first, 3-255 of these characters, and
# not starting with "goog".
RESOURCE_ID = re.compile(r"^(?!goog)[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")

WORK_SUFFIX = ".work"
DELIVERY_ATTEMPTS = 50
"""The work subscription's dead-letter policy: after this many deliveries of one message, Pub/Sub
moves it to the dead-letter topic. The RabbitMQ work queue's delivery limit
(``common.amqp.DELIVERY_LIMIT``), and for the same purpose: a guard against a message that keeps
coming back unsettled (consumers dying on it). Lookup failures are counted apart, in the message
(``MAX_ATTEMPTS``). One value for every service, since whichever starts first creates the
subscription."""
DEAD_SUFFIX = ".dead"


class PubSubSettingsError(ValueError):
    """A Pub/Sub setting that cannot work; ``str()`` is the one line the service exits 2 with."""

    def __init__(self, variable: str, problem: str, value: str) -> None:
        super().__init__(f"{variable}: {problem} (got {value!r})")
        self.variable = variable


@dataclass(frozen=True)
class PubSubSettings:
    project_id: str
    emulator_host: str | None  # host:port, or None for the service itself


def parse_project_id(value: str) -> str:
    if not PROJECT_ID.fullmatch(value):
        raise PubSubSettingsError(
            "PUBSUB_PROJECT_ID",
            "a Google Cloud project id: 6-30 lowercase letters, digits or hyphens, a letter first",
            value,
        )
    return value


def parse_emulator_host(value: str) -> str:
    """``host:port`` as Google's clients take it: no scheme, no path; IPv6 in brackets."""
    problem = "host:port of the Pub/Sub emulator, without a scheme (e.g. localhost:8085)"
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PubSubSettingsError("PUBSUB_EMULATOR_HOST", problem, value)
    if host.startswith("["):
        if not host.endswith("]"):
            raise PubSubSettingsError("PUBSUB_EMULATOR_HOST", problem, value)
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise PubSubSettingsError("PUBSUB_EMULATOR_HOST", problem, value) from None
    elif not re.fullmatch(r"[A-Za-z0-9.-]+", host):
        raise PubSubSettingsError("PUBSUB_EMULATOR_HOST", problem, value)
    return value


def pubsub_settings(environ: Mapping[str, str]) -> PubSubSettings:
    """The Pub/Sub settings from the environment's values; :class:`PubSubSettingsError` if bad."""
    project = environ.get("PUBSUB_PROJECT_ID", "")
    if not project:
        raise PubSubSettingsError("PUBSUB_PROJECT_ID", "is required with BROKER=pubsub", project)
    emulator = environ.get("PUBSUB_EMULATOR_HOST") or None
    return PubSubSettings(
        parse_project_id(project), parse_emulator_host(emulator) if emulator else None
    )


def pubsub_settings_or_exit(environ: Mapping[str, str], service: str) -> PubSubSettings:
    """:func:`pubsub_settings`, or exit 2 with one line naming the variable (as
    ``common.settings.load_settings`` does for the others)."""
    try:
        return pubsub_settings(environ)
    except PubSubSettingsError as error:
        exit_with(service, str(error))


def exit_with(service: str, message: str) -> NoReturn:
    sys.stderr.write(f"{service}: configuration error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


@dataclass(frozen=True)
class PubSubTopology:
    """Full resource paths (``projects/<p>/topics/<id>``) of one queue's topology."""

    topic: str
    work_subscription: str
    dead_topic: str
    dead_subscription: str

    @classmethod
    def for_queue(cls, project_id: str, queue_name: str) -> PubSubTopology:
        ids = (queue_name, f"{queue_name}{WORK_SUFFIX}", f"{queue_name}{DEAD_SUFFIX}")
        for resource_id in ids:
            if not RESOURCE_ID.fullmatch(resource_id):
                raise PubSubSettingsError(
                    "QUEUE_NAME",
                    "with BROKER=pubsub, a letter first, then letters, digits or . _ ~ + % - "
                    "(Pub/Sub's rule for topic and subscription names)",
                    queue_name,
                )
        topic, work, dead = ids
        return cls(
            topic=f"projects/{project_id}/topics/{topic}",
            work_subscription=f"projects/{project_id}/subscriptions/{work}",
            dead_topic=f"projects/{project_id}/topics/{dead}",
            dead_subscription=f"projects/{project_id}/subscriptions/{dead}",
        )

    def work_subscription_request(
        self, max_delivery_attempts: int, ack_deadline_s: int
    ) -> dict[str, Any]:
        """The work subscription as a CreateSubscription request (a pure value, for tests)."""
        if not 5 <= max_delivery_attempts <= 100:
            # the service's bounds for a dead-letter policy
            raise ValueError(f"max_delivery_attempts must be 5..100, got {max_delivery_attempts}")
        return {
            "name": self.work_subscription,
            "topic": self.topic,
            "ack_deadline_seconds": ack_deadline_s,
            "dead_letter_policy": {
                "dead_letter_topic": self.dead_topic,
                "max_delivery_attempts": max_delivery_attempts,
            },
        }


def ensure_topology(
    publisher: Any,
    subscriber: Any,
    topology: PubSubTopology,
    *,
    max_delivery_attempts: int,
    ack_deadline_s: int = 60,
    call_timeout: float | None = None,
) -> None:
    """Create what is missing: topics first, then the subscriptions on them (blocking calls of
    ``google.cloud.pubsub_v1`` clients: run it in a thread from asyncio).

    ``call_timeout``: each call fails after that many seconds, without the client's own retries
    (which go on for up to a minute); for a caller that retries with its own backoff."""
    # Imported here, not at the top: google.api_core.exceptions pulls in grpc and protobuf
    # (~0.1 s), and the settings import this module with every broker.
    from google.api_core import exceptions

    bounded: dict[str, Any] = {}
    if call_timeout is not None:
        bounded = {"retry": None, "timeout": call_timeout}

    def create(method: Any, request: dict[str, Any]) -> None:
        # created by an earlier start, or by another service starting at the same time
        with contextlib.suppress(exceptions.AlreadyExists):
            method(request=request, **bounded)

    for topic in (topology.topic, topology.dead_topic):
        create(publisher.create_topic, {"name": topic})
    create(
        subscriber.create_subscription,
        topology.work_subscription_request(max_delivery_attempts, ack_deadline_s),
    )
    create(
        subscriber.create_subscription,
        {"name": topology.dead_subscription, "topic": topology.dead_topic},
    )
